"""Which thread runs torch's multi-threaded CPU work: the engine's, and only it.

torch's CPU ops run on GNU OpenMP, and every thread that runs a parallel op gets an OpenMP
pool of its own. Once the process has more OpenMP-managed threads than cores, libgomp stops
spinning between parallel regions (its "throttled" spin count), so each of the engine's
hundreds of small ops per decode step waits for a sleeping worker to wake. Measured on a
2-core CPU: the same decode step costs 42 ms in the scheduler's thread alone, 52-54 ms once the
main thread had run parallel ops, and a LoRA op that takes 6 us costs 40-70 us when another
thread had run the model's loading and calibration (32 distinct adapters / no adapter then
0.88 against 0.95-0.99). ``torch.set_num_threads(1)`` afterwards does not undo a pool.

So a serving process (the node's CLI, the serving bench) makes its main thread serial before
its first torch op (:func:`serial_main_thread`; threads started after it are serial too), the
scheduler's thread takes every core
(:func:`engine_torch_threads`, set when its loop starts), and every other multi-threaded torch
job runs on the scheduler's thread through ``Scheduler.call``: the calibrations at start-up,
the attribution sketches, a benchmark's baselines.
"""

from __future__ import annotations

import threading

import torch

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
