"""Torch's CPU threads: the main thread of a serving process stays serial, the engine's thread
gets every core, and other torch work runs on it through ``Scheduler.call``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from inference_node.engine import MultiLoraModel, SamplingParams, Scheduler
from tests.engine.conftest import MAX_RANK, load_base
from tests.engine.test_scheduler import ByteTokenizer

ROOT = Path(__file__).resolve().parents[2]


def test_main_thread_serial_and_other_threads_get_the_cores() -> None:
    """In a fresh process (the rule is about the main thread's first torch op)."""
    script = textwrap.dedent(
        """
        import threading, torch
        torch.set_num_threads(2)
        from inference_node.engine.threads import (
            engine_torch_threads, serial_main_thread)
        assert serial_main_thread() == 2
        assert torch.get_num_threads() == 1, "the main thread runs torch serially"
        assert serial_main_thread() == 2, "idempotent: still the cores it found first"
        assert engine_torch_threads() == 2
        inside = []
        worker = threading.Thread(target=lambda: inside.append(torch.get_num_threads()))
        worker.start(); worker.join()
        assert inside == [1], inside  # other threads start serial too: only the engine opts in
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_scheduler_sets_its_threads_in_its_own_thread(
    base_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    real = torch.set_num_threads

    def record(count: int) -> None:
        calls.append((threading.current_thread().name, count))
        real(count)

    monkeypatch.setattr(torch, "set_num_threads", record)
    model = MultiLoraModel(load_base(base_folder), slots=1, max_rank=MAX_RANK)
    engine = Scheduler(model, ByteTokenizer(), torch_threads=1, max_batch=2)  # type: ignore[arg-type]
    with engine:
        engine.submit([5, 6, 7]).result(timeout=60)
    assert ("scheduler", 1) in calls
    assert all(name == "scheduler" for name, _ in calls)


def test_call_runs_on_the_engine_thread_between_steps(base_folder: Path) -> None:
    model = MultiLoraModel(load_base(base_folder), slots=1, max_rank=MAX_RANK)
    engine = Scheduler(model, ByteTokenizer(), max_batch=2)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not running"):
        engine.call(lambda: 1)
    with engine:
        assert engine.call(lambda: threading.current_thread().name) == "scheduler"
        with pytest.raises(ZeroDivisionError):
            engine.call(lambda: 1 / 0)
        # a call made while a request generates runs between its steps, not after it
        long = engine.submit([5, 6, 7], SamplingParams(max_tokens=60, temperature=0.0))
        next(iter(long))  # generating now
        seen = engine.call(lambda: (engine.stats().running, long.done))
        assert seen == (1, False)
        assert long.result(timeout=60).completion_tokens == 60
        assert engine.call(lambda: engine.call(lambda: "nested")) == "nested"  # no deadlock
    with pytest.raises(RuntimeError, match="not running"):
        engine.call(lambda: 1)
