"""The demo as the tests run it (`ape run devnet demo` in a subprocess), and its first run on a
fresh data dir, which test_devnet and the browser tests share (the ``demo_run`` session
fixture in conftest.py: the demo is the suite's most expensive step)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from backend.devnet.anvil import free_port

ROOT = Path(__file__).resolve().parents[1]
APE = str(Path(sys.executable).with_name("ape"))


def run_demo(data_dir: Path, port: int, *options: str) -> str:
    """One `make demo` on ``data_dir`` (not kept serving at the end); its output."""
    result = subprocess.run(
        [APE, "run", "devnet", "demo", "--data-dir", str(data_dir), "--port", str(port),
         "--api-port", str(free_port()), "--node-port", str(free_port()), "--no-serve",
         *options],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@dataclass(frozen=True)
class DemoRun:
    """A data dir after the demo's first run. Tests that change its state work on a copy;
    test_devnet runs the demo a second time on it (the browser tests copy it after that when
    both run, which they accept: they need a finished demo's state, any run)."""

    data_dir: Path
    port: int  # the anvil port the demo used (the chain is stopped)
    first_out: str  # the first run's output
