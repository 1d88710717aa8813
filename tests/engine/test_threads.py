"""Torch's CPU threads: the main thread of a serving process stays serial, the engine's thread
(and a benchmark's baseline thread) gets every core."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from inference_node.engine import MultiLoraModel, Scheduler
from inference_node.engine.threads import run_in_torch_thread
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
            engine_torch_threads, run_in_torch_thread, serial_main_thread)
        assert serial_main_thread() == 2
        assert torch.get_num_threads() == 1, "the main thread runs torch serially"
        assert serial_main_thread() == 2, "idempotent: still the cores it found first"
        assert engine_torch_threads() == 2
        inside = run_in_torch_thread(lambda: (threading.current_thread().name,
                                              torch.get_num_threads()), name="bench")
        assert inside == ("bench", 2), inside
        assert torch.get_num_threads() == 1
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_run_in_torch_thread_reraises_in_the_caller() -> None:
    def fails() -> None:
        raise KeyError("from the torch thread")

    with pytest.raises(KeyError, match="from the torch thread"):
        run_in_torch_thread(fails)


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
