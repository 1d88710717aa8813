"""Incremental detokenization with stop sequences, for streaming.

Text is released only when it can no longer change: a trailing replacement character (an
incomplete UTF-8 sequence split across tokens) is held back, and so is any suffix that could
still grow into a stop sequence. When a stop sequence appears, the text ends before it.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalText:
    """The text of a growing token sequence, released piece by piece."""

    def __init__(self, tokenizer: Decoder, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.token_ids: list[int] = []
        self.text = ""  # final text so far (released or not)
        self.released = 0  # characters of ``text`` already handed out
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Adds one token; returns the newly releasable text (possibly empty)."""
        self.token_ids.append(token_id)
        self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        for stop in self.stop:
            at = self.text.find(stop)
            if at >= 0:
                self.text = self.text[:at]
                self.stopped = True
        if self.stopped:
            return self._release(len(self.text))
        safe = len(self.text)
        while safe and self.text[safe - 1] == REPLACEMENT:
            safe -= 1
        hold = 0  # the longest tail that is the start of some stop sequence
        for stop in self.stop:
            for n in range(min(len(stop) - 1, safe), hold, -1):
                if self.text[safe - n : safe] == stop[:n]:
                    hold = n
                    break
        return self._release(safe - hold)

    def flush(self) -> str:
        """Everything not yet released (at the end of generation)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.released:
            return ""
        piece = self.text[self.released : upto]
        self.released = upto
        return piece
