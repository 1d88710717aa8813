"""A submitted request as its caller sees it: :class:`RequestHandle` streams
:class:`TextDelta` events and ends with a :class:`Completion` or a :class:`GenerationError`,
to threads (iterate / ``result``) or asyncio (``stream`` / ``aresult``). The scheduler's
thread is the only producer (``_push``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal

from inference_node.engine.sampling import SamplingParams

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class TextDelta:
    """New text of a request and the tokens that produced it."""

    text: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Completion:
    """A finished request."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]  # generated tokens, without the stop token
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int  # tokens the model generated, a stop token included


class GenerationError(RuntimeError):
    """A request could not be served; ``reason`` is a short code (``adapter``, ``engine``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


Event = TextDelta | Completion | GenerationError


class RequestHandle:
    """One submitted request: its events, from any thread or event loop."""

    def __init__(
        self, request_id: str, prompt_ids: list[int], adapter: str | None, params: SamplingParams
    ) -> None:
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.adapter = adapter
        self.params = params
        self.submitted_at = time.monotonic()
        self.cancelled = False
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def done(self) -> bool:
        with self._cond:
            return bool(self._events) and not isinstance(self._events[-1], TextDelta)

    def cancel(self) -> None:
        """Stops generation at the next step (the client went away)."""
        self.cancelled = True

    def _push(self, event: Event) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
            wakers = list(self._wakers)
        for loop, wake in wakers:
            loop.call_soon_threadsafe(wake.set)

    def __iter__(self) -> Iterator[TextDelta]:
        """Streams the text as it is generated; raises :class:`GenerationError` on failure."""
        seen = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda seen=seen: len(self._events) > seen)
                new = self._events[seen:]
            seen += len(new)
            for event in new:
                if isinstance(event, GenerationError):
                    raise event
                if isinstance(event, Completion):
                    return
                yield event

    def result(self, timeout: float | None = None) -> Completion:
        """Waits for the completion."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.done, timeout):
                raise TimeoutError(f"request {self.request_id} not finished after {timeout} s")
            final = self._events[-1]
        if isinstance(final, GenerationError):
            raise final
        assert isinstance(final, Completion)
        return final

    async def events(self) -> AsyncIterator[Event]:
        """Every event, the final :class:`Completion` or :class:`GenerationError` included."""
        loop, wake = asyncio.get_running_loop(), asyncio.Event()
        with self._cond:
            self._wakers.append((loop, wake))
        try:
            seen = 0
            while True:
                wake.clear()
                with self._cond:
                    new = self._events[seen:]
                seen += len(new)
                for event in new:
                    yield event
                    if not isinstance(event, TextDelta):
                        return
                if not new:
                    await wake.wait()
        finally:
            with self._cond:
                self._wakers.remove((loop, wake))

    async def stream(self) -> AsyncIterator[TextDelta]:
        """Async :meth:`__iter__`."""
        async for event in self.events():
            if isinstance(event, GenerationError):
                raise event
            if isinstance(event, TextDelta):
                yield event

    async def aresult(self) -> Completion:
        """Async :meth:`result`."""
        async for event in self.events():
            if isinstance(event, GenerationError):
                raise event
            if isinstance(event, Completion):
                return event
        raise AssertionError("the event stream ended without a completion")
