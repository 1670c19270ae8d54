"""Stand-in for mats.tasks until the task registry lands on main (deleted then)."""
from dataclasses import dataclass
from ..pipeline import split_tags


@dataclass(frozen=True)
class Task:
    name: str
    command: str | None
    needs_question: bool
    help: str

    def parse(self, text: str) -> dict:
        return {"text": text, "tags": split_tags(text)} if self.name == "tags" else {"text": text}


TASKS = {t.name: t for t in [
    Task("caption", "caption", False, "describe each audio file in one sentence"),
    Task("tags", "tag", False, "list the sound events in each audio file"),
    Task("music", "music", False, "describe music recordings"),
    Task("qa", "ask", True, "answer a question about each audio file"),
    Task("open", None, True, "open-ended instruction"),
]}


def get_task(name: str) -> Task:
    return TASKS[name]
