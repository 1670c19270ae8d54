"""The prompt layout around the audio prefix (the tasks themselves are in :mod:`mats.tasks`).

Layout (the paper's): ``USER: <Speech>`` + prefix embeddings + ``</Speech> [task tag] instruction``
then ``ASSISTANT:`` and the answer. A retrieval-augmented model (:mod:`mats.bridge.retrieval`) has
its hint (the memory's nearest training texts) between ``</Speech>`` and the task tag. For chat-tuned LLMs
the same user turn is rendered through the tokenizer's chat template, so the LLM sees the turn format it was
instruction-tuned on.
"""

from __future__ import annotations

from .tasks import get_task

AUDIO_PLACEHOLDER = "<|mats_audio|>"


def instruction_for(task: str, instruction: str | None = None, rng=None) -> str:
    """The instruction text of ``task``: given (tasks with a question), a random training variant
    (``rng``), or the test prompt. See :meth:`mats.tasks.Task.instruction`."""
    return get_task(task).instruction(instruction, rng)


def user_turn(task: str, instruction: str, context: str | None = None) -> str:
    hint = f" {context.strip()}" if context and context.strip() else ""
    return f"<Speech>{AUDIO_PLACEHOLDER}</Speech>{hint} [{get_task(task).tag}] {instruction}".rstrip()


def render_prompt(tokenizer, task: str, instruction: str, style: str = "chat",
                  system_prompt: str | None = None, context: str | None = None) -> tuple[str, str]:
    """Text before and after the audio prefix; the answer follows the second part directly.
    ``context``: the retrieval hint, if the model uses one."""
    content = user_turn(task, instruction, context)
    if style == "chat" and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    elif style in ("plain", "chat"):
        bos = tokenizer.bos_token or ""
        text = f"{bos}USER: {content}\nASSISTANT: "
    else:
        raise ValueError(f"unknown prompt style {style!r} (chat or plain)")
    before, sep, after = text.partition(AUDIO_PLACEHOLDER)
    assert sep, "the chat template dropped the audio placeholder"
    return before, after
