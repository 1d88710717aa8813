"""The inference node as a real operating-system process (``python -m inference_node serve``),
started, killed and restarted by PID, for the crash tests: everything it knows after a restart
comes from its data directory, the chain and the content store, as on a real host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from backend.devnet.anvil import free_port
from backend.protocol.deployments import PROJECT_ROOT


def node_env(
    rpc_url: str, deployments: Path, node: str, root: Path, base_model: Path, model_id: int,
    **overrides: str,
) -> dict[str, str]:  # fmt: skip
    """The ``OPENLEDGER_NODE_*`` settings of a test node: anvil's unlocked ``node`` account,
    store and data dir under ``root``, one served model, small limits, a free port, and
    redemptions only when asked; ``overrides`` by setting name (``SLOTS="2"``)."""
    env = {
        "RPC_URL": rpc_url,
        "DEPLOYMENTS": str(deployments),
        "ADDRESS": node,  # unlocked in anvil
        "STORE": str(root / "store"),
        "DATA_DIR": str(root / "node"),
        "BASE_MODEL": str(base_model),
        "MODELS": json.dumps([model_id]),
        "SLOTS": "4",
        "MAX_RANK": "16",
        "MAX_BATCH": "8",
        "MAX_TOKENS": "8",
        "MAX_TOKENS_LIMIT": "64",
        "PORT": str(free_port()),
        "POLL_SECONDS": "0.5",
        "REDEEM_INTERVAL": str(10**9),  # no automatic redemption by time ...
        "REDEEM_THRESHOLD_WEI": str(10**30),  # ... nor by amount
        **overrides,
    }
    return {
        **{f"OPENLEDGER_NODE_{k}": v for k, v in env.items()},
        "OMP_NUM_THREADS": "1",  # a tiny model; spinning OpenMP threads only contend here
    }


@dataclass
class NodeProcess:
    """One node serving on ``port`` with ``env`` (the ``OPENLEDGER_NODE_*`` settings); its
    output is appended to ``log_path`` across restarts."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    starts: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the node was never started"
        return self.process.pid

    def start(self) -> NodeProcess:
        """Spawns the node (it loads the model and reconciles before it listens)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"node pid {self.pid} is still running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "inference_node", "serve"],
                cwd=PROJECT_ROOT,
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Waits until ``/health`` answers; returns the seconds it took. Raises with the log's
        tail when the process exits or the time runs out."""
        assert self.process is not None, "the node was never started"
        began = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"node exited with {self.process.returncode} before serving:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"node did not serve within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (no ledger close, no graceful HTTP drain)."""
        assert self.process is not None, "the node was never started"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (uvicorn drains and the runtime closes the ledger), SIGKILL if it hangs;
        returns the exit status (negative: the signal that ended it)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
