"""Shared fixtures: role-named accounts and a deployed, funded protocol on ape's test chain."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Keep ape's data and the solc stand-in inside the project (the Makefile sets the same).
os.environ.setdefault("APE_DATA_FOLDER", str(ROOT / ".data" / "ape"))
os.environ.setdefault("SOLCX_BINARY_PATH", str(ROOT / ".tools" / "solcx"))

import pytest  # noqa: E402
from ape.logging import LogLevel, logger  # noqa: E402

from backend.devnet.anvil import free_port  # noqa: E402
from tests.demo_runs import DemoRun, run_demo  # noqa: E402
from tests.strict_reverts import install as install_strict_reverts  # noqa: E402

logger.set_level(LogLevel.WARNING)  # one INFO line per confirmed transaction drowns the output
install_strict_reverts()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo's first run on a fresh data dir (see tests/demo_runs.py)."""
    data_dir, port = tmp_path_factory.mktemp("devnet"), free_port()
    return DemoRun(data_dir, port, run_demo(data_dir, port))
