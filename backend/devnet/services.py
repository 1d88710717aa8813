"""The off-chain services of the local stack: the chain indexer and the API server."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backend.indexer.chain import ChainClient
from backend.indexer.sync import Indexer, IndexerConfig, SyncResult
from backend.protocol.deployments import PROJECT_ROOT, Deployment

log = logging.getLogger(__name__)


def index_chain(db_path: Path, deployment: Deployment, rpc_url: str) -> SyncResult:
    """Brings the SQLite index at ``db_path`` up to the chain head (anvil mines a block per
    transaction, so the local chain needs no confirmations)."""
    indexer = Indexer(db_path, deployment, ChainClient(rpc_url), IndexerConfig(confirmations=0))
    try:
        return indexer.sync_once()
    finally:
        indexer.close()


class APIServer:
    """``python -m backend.api`` on 127.0.0.1:``port`` in a child process, stopped by PID."""

    def __init__(
        self, db_path: Path, store_dir: Path, port: int, public_rpc_url: str | None = None
    ) -> None:
        self.origin = f"http://127.0.0.1:{port}"  # where the web app is served
        self.url = f"{self.origin}/api/v1"
        env = {
            **os.environ,
            "OPENLEDGER_API_DB_PATH": str(db_path),
            "OPENLEDGER_API_CONTENT_DIR": str(store_dir),
            "OPENLEDGER_API_HOST": "127.0.0.1",
            "OPENLEDGER_API_PORT": str(port),
        }
        if public_rpc_url:  # the chain the web app's wallet and reads use
            env["OPENLEDGER_API_PUBLIC_RPC_URL"] = public_rpc_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backend.api"], cwd=PROJECT_ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/health")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(
                        f"the API did not start on {self.url}: {err[-2000:]}"
                    ) from None
                time.sleep(0.2)
        log.info("API pid %s on %s", self.process.pid, self.url)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def api_server(
    db_path: Path, store_dir: Path, port: int, public_rpc_url: str | None = None
) -> Iterator[APIServer]:
    server = APIServer(db_path, store_dir, port, public_rpc_url)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def following_indexer(db_path: Path, deployment: Deployment, rpc_url: str) -> Iterator[None]:
    """Keeps the index at ``db_path`` following the chain in a background thread."""
    started = threading.Event()
    holder: dict[str, Indexer] = {}

    def follow() -> None:
        # SQLite connections stay in the thread that opened them.
        indexer = Indexer(db_path, deployment, ChainClient(rpc_url), IndexerConfig(confirmations=0))
        holder["indexer"] = indexer
        started.set()
        try:
            indexer.run_forever()
        finally:
            indexer.close()

    thread = threading.Thread(target=follow, name="indexer", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the indexer did not start")
    try:
        yield
    finally:
        holder["indexer"].stop()
        thread.join(timeout=15)
