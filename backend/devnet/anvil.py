"""A local anvil chain on 127.0.0.1, started and stopped by PID, its state kept in a file.

anvil comes from the npm package ``@foundry-rs/anvil`` (the native binary, linked into the
project's virtualenv by the Makefile). With ``--state`` it loads the file at start and writes it
back on exit (SIGTERM included) and every ``state_interval`` seconds, so a crash loses at most
that much and a restart continues the same chain.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from backend.protocol.deployments import PROJECT_ROOT

log = logging.getLogger(__name__)

ANVIL_CHAIN_ID = 31337
# anvil's and ape's default test mnemonic: accounts 0..9 hold 10,000 ETH on a fresh chain.
TEST_MNEMONIC = "test test test test test test test test test test test junk"


class AnvilError(RuntimeError):
    """anvil could not be found, started or reached."""


def anvil_binary() -> str:
    """The anvil executable: the project's (``.venv/bin/anvil``), else one on ``PATH``."""
    local = PROJECT_ROOT / ".venv" / "bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found is None:
        raise AnvilError("anvil not found: run `make setup` (it installs @foundry-rs/anvil)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: list | None = None, timeout: float = 10.0) -> object:
    """One JSON-RPC call's result; raises ``OSError`` when nothing answers and
    :class:`AnvilError` with the node's error when the call fails."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise AnvilError(f"{method}: {answer['error']}")
    return answer["result"]


@dataclass
class Anvil:
    """One anvil process. Use as a context manager, or ``start()`` / ``stop()``."""

    port: int = 8545
    state_file: Path | None = None  # None: an in-memory chain, gone when stopped
    state_interval: int = 5  # seconds between state dumps
    block_time: int | None = None  # None: a block per transaction
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_up(self) -> bool:
        try:
            rpc(self.url, "eth_chainId", timeout=0.5)
        except OSError:
            return False
        return True

    def start(self, timeout: float = 20.0) -> Anvil:
        if self.is_up():
            raise AnvilError(f"something already answers on {self.url}: stop it or pick a port")
        args = [
            anvil_binary(), "--host", "127.0.0.1", "--port", str(self.port),
            "--chain-id", str(ANVIL_CHAIN_ID), "--mnemonic", TEST_MNEMONIC, "--silent",
        ]  # fmt: skip
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            args += ["--state", str(self.state_file), "--state-interval", str(self.state_interval)]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AnvilError(f"anvil exited with {self.process.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AnvilError(f"anvil did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(0.1)
        if self.state_file is not None:
            self._keep_the_clock()
        log.info(
            "anvil pid %s on %s (state: %s)",
            self.process.pid, self.url, self.state_file or "in memory",
        )  # fmt: skip
        return self

    def _keep_the_clock(self) -> None:
        """A loaded state keeps its blocks but not the time moved forward with
        ``evm_increaseTime`` (the demo passes challenge windows that way): without this, the
        next block would be stamped earlier than the head, and every window measured by the
        chain's clock (challenges, claims, withdrawals) would reopen. The clock continues from
        the head instead."""
        head = rpc(self.url, "eth_getBlockByNumber", ["latest", False])
        stamp = int(head["timestamp"], 16)  # type: ignore[index]
        if stamp >= int(time.time()):
            rpc(self.url, "evm_setTime", [stamp + 1])
            log.info("anvil clock continues from the loaded head's time %d", stamp)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (anvil writes its state file on the way out), SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("anvil pid %s ignored SIGTERM; killing it", self.process.pid)
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        log.info("anvil pid %s stopped", self.process.pid)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
