"""Which thread runs torch's multi-threaded CPU work: the engine's, never the main thread.

Measured on a 2-core CPU (torch 2.13, GNU OpenMP): the same decode forward costs 42 ms per
step in the scheduler's thread when the main thread never ran a multi-threaded op, and 52-54 ms
once the main thread had (its OpenMP pool, idle, still costs the other thread's pool ~25%);
``torch.set_num_threads(1)`` on the main thread afterwards does not undo it. A pool made by any
other thread (the attribution worker's, a request thread's) costs nothing. So a process that
serves sets its main thread to one torch thread before its first torch op
(:func:`serial_main_thread`), and the scheduler's thread takes every core
(:func:`engine_torch_threads`, set when its loop starts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

_engine_threads: int | None = None


def serial_main_thread() -> int:
    """Makes the main thread run torch ops on one thread (call before its first torch op);
    returns the number of threads the engine's thread will use (what torch had: every core,
    or ``OMP_NUM_THREADS``). Idempotent; a no-op off the main thread."""
    global _engine_threads
    if _engine_threads is None:
        _engine_threads = torch.get_num_threads()
    if threading.current_thread() is threading.main_thread():
        torch.set_num_threads(1)
    return _engine_threads


def engine_torch_threads() -> int:
    """The torch threads of the engine's thread: what the main thread had before
    :func:`serial_main_thread`, or the calling thread's count when it was never called."""
    return _engine_threads if _engine_threads is not None else torch.get_num_threads()


def run_in_torch_thread(fn: Callable[[], T], name: str = "torch") -> T:
    """Runs ``fn`` in a fresh thread with :func:`engine_torch_threads` torch threads and
    returns its result (or raises its exception): the main thread stays serial while a
    benchmark's baselines get every core, as the engine does."""
    box: dict[str, object] = {}

    def target() -> None:
        torch.set_num_threads(engine_torch_threads())
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
