"""Text as it is decoded: a transformers-style streamer (``put(token_ids)`` / ``end()``) that hands
each new piece of the answer to a callback.

    deltas = TextDeltas(model.model.tokenizer, on_text=print)
    model.run(["dog.wav"], model.decoding("caption", num_beams=1, rerank=0), streamer=deltas)

The pieces concatenate to exactly the text the run loop answers with (the decoded tokens, special
tokens skipped, stripped): a piece is handed over only up to the last whitespace decoded so far
(a later token may still change how the word before it decodes, or complete a multi-byte
character), and :meth:`end` hands over the rest of the final text. ``cancelled`` is asked at every
token; once it says yes the next token raises :class:`~mats.pipeline.Cancelled`, which stops the
decoding (the run loop answers the item with that error).

Only greedy decoding of one clip streams token by token (transformers' rule for streamers); the run
loop refuses a streamer otherwise. Imports nothing heavy.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["TextDeltas"]


class TextDeltas:
    def __init__(self, tokenizer, on_text: Callable[[str], None], cancelled: Callable[[], bool] | None = None):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.cancelled = cancelled
        self.ids: list[int] = []
        self.sent = ""  # what on_text has been given so far
        self.tokens = 0  # tokens decoded so far (the prompt excluded)
        self._prompt_seen = False

    # -- the interface transformers' generate calls ------------------------------------------------
    def put(self, value) -> None:
        if not self._prompt_seen:  # generate's first call hands over the prompt's ids (none: embeddings)
            self._prompt_seen = True
            return
        if self.cancelled is not None and self.cancelled():
            from .pipeline import Cancelled
            raise Cancelled("the request was cancelled while its answer was decoded")
        new = [int(t) for t in value.reshape(-1).tolist()]
        self.tokens += len(new)
        self.ids.extend(new)
        text = self._text()
        cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
        stable = text[:cut] if cut > 0 else ""
        if "\ufffd" in stable:  # an incomplete multi-byte character: wait for its other bytes
            return
        self._send_up_to(stable)

    def end(self) -> None:
        self._send_up_to(self._text().strip())

    # -- helpers ----------------------------------------------------------------------------------
    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def _send_up_to(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.on_text(piece)

    @property
    def text(self) -> str:
        """What has been handed over so far."""
        return self.sent
