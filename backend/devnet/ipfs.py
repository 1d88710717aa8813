"""A local IPFS node (js-ipfs from npm) on 127.0.0.1, offline, started and stopped by PID.

No kubo binary can be installed here, so tests and the demo run js-ipfs 0.66 (package ``ipfs``),
whose HTTP RPC API is the one kubo serves. Its repository is initialised with the ``test``
profile, no bootstrap peers, swarm and API on loopback, and the daemon runs ``--offline`` with
preload disabled, so it never dials out.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from backend.devnet.anvil import free_port
from backend.protocol.deployments import PROJECT_ROOT

log = logging.getLogger(__name__)

JSIPFS = PROJECT_ROOT / "node_modules" / ".bin" / "jsipfs"


class IPFSDaemonError(RuntimeError):
    """The IPFS daemon could not be found, initialised or started."""


@dataclass
class IPFSDaemon:
    """One js-ipfs daemon over the repository at ``repo``. A context manager."""

    repo: Path
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.api_port}/http"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "IPFS_PATH": str(self.repo)}

    def _configure(self) -> None:
        if not JSIPFS.exists():
            raise IPFSDaemonError(f"{JSIPFS} is missing: run `make setup` (npm package ipfs)")
        if not (self.repo / "config").exists():
            self.repo.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [str(JSIPFS), "init", "--profile", "test"], env=self._env(), check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
            )  # fmt: skip
        config_path = self.repo / "config"
        config = json.loads(config_path.read_text())
        addresses = config["Addresses"]
        addresses["API"] = f"/ip4/127.0.0.1/tcp/{self.api_port}"
        addresses["Gateway"] = f"/ip4/127.0.0.1/tcp/{free_port()}"
        addresses["RPC"] = f"/ip4/127.0.0.1/tcp/{free_port()}"
        addresses["Swarm"] = [f"/ip4/127.0.0.1/tcp/{free_port()}"]
        addresses["Announce"] = []
        addresses["Delegates"] = []
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery.setdefault("MDNS", {})["Enabled"] = False
        discovery.setdefault("webRTCStar", {})["Enabled"] = False
        config_path.write_text(json.dumps(config, indent=2))

    def is_up(self) -> bool:
        request = urllib.request.Request(f"{self.api_url}/api/v0/version", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> IPFSDaemon:
        self._configure()
        for stale in ("repo.lock", "api"):
            (self.repo / stale).unlink(missing_ok=True)  # left by a killed daemon
        log_file = (self.repo / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [str(JSIPFS), "daemon", "--offline", "--enable-preload=false"],
            env=self._env(), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log_file.close()
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if self.process.poll() is not None:
                tail = (self.repo / "daemon.log").read_text(errors="replace")[-2000:]
                raise IPFSDaemonError(
                    f"jsipfs daemon exited with {self.process.returncode}: {tail}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise IPFSDaemonError(f"jsipfs daemon did not answer on {self.api_url}")
            time.sleep(0.2)
        log.info("js-ipfs pid %s, API %s, repo %s", self.process.pid, self.api_url, self.repo)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the daemon's process group (npm's wrapper and node), SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        log.info("js-ipfs pid %s stopped", self.process.pid)

    def __enter__(self) -> IPFSDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
