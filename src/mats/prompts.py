"""Task prompts and the prompt layout around the audio prefix.

Layout (the paper's): ``USER: <Speech>`` + prefix embeddings + ``</Speech> [task tag] instruction``
then ``ASSISTANT:`` and the answer. For chat-tuned LLMs the same user turn is rendered through the
tokenizer's chat template, so the LLM sees the turn format it was instruction-tuned on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

AUDIO_PLACEHOLDER = "<|mats_audio|>"


@dataclass(frozen=True)
class Task:
    name: str
    tag: str
    instructions: tuple[str, ...]  # training variants; the first is the test prompt
    # decoding defaults at inference
    num_beams: int = 4
    max_new_tokens: int = 48
    repetition_penalty: float = 1.3
    no_repeat_ngram_size: int = 3
    # Beam candidates scored by the CLAP against the recording; the best match is the answer
    # (0 or 1: the top beam as is). See MATS.generate.
    rerank: int = 0

    @property
    def test_instruction(self) -> str:
        return self.instructions[0]


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("caption", "audio caption", (
        "Describe the following audio in a caption.",
        "Write a short caption for this sound.",
        "What can be heard in this recording? Answer in one sentence.",
        "Summarise the audio clip in a sentence.",
        "Give a one-sentence description of the audio.",
    ), rerank=8),
    Task("tags", "multi events", (
        "Identify the sounds in the audio clip, only display audio tags.",
        "List the sound events you hear, as comma-separated tags.",
        "Which sound classes are present? Reply with tags only.",
        "Tag this audio clip.",
        "Name the sound sources in the clip as a list of labels.",
    ), num_beams=4, max_new_tokens=24, rerank=8),
    Task("music", "music caption", (
        "Listen to this music clip and describe the music.",
        "Describe the music in this recording.",
        "What kind of music is this? Describe it.",
        "Give a caption for this piece of music.",
        "Describe the instruments and mood of the music.",
    ), max_new_tokens=64),
    Task("qa", "audio qa", ("",), max_new_tokens=32),  # the question is the instruction
    Task("open", "open ended", ("",), num_beams=1, max_new_tokens=96, no_repeat_ngram_size=0,
         repetition_penalty=1.2),
]}


def instruction_for(task: str, instruction: str | None = None, rng: random.Random | None = None) -> str:
    """The instruction text: given (QA/open), a random training variant (rng), or the test prompt."""
    t = get_task(task)
    if instruction:
        return instruction
    if t.name in ("qa", "open"):
        raise ValueError(f"task {task!r} needs an explicit question/instruction")
    return rng.choice(t.instructions) if rng is not None else t.test_instruction


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def user_turn(task: str, instruction: str) -> str:
    return f"<Speech>{AUDIO_PLACEHOLDER}</Speech> [{get_task(task).tag}] {instruction}".rstrip()


def render_prompt(tokenizer, task: str, instruction: str, style: str = "chat",
                  system_prompt: str | None = None) -> tuple[str, str]:
    """Text before and after the audio prefix; the answer follows the second part directly."""
    content = user_turn(task, instruction)
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
