"""API latency under load: p50/p95/p99 of list and detail endpoints with 10,000 contributions
indexed, served by uvicorn on 127.0.0.1 in its own process, loaded from this one (a few
keep-alive clients in threads), bounded in requests and seconds. Target: p95 < 50 ms.

Writes bench/results/api.json and prints a table.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import chain_env  # first: sets where ape and solc live
import httpx
from chainload import load_chain
from common import table, write_results
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port
from backend.indexer.chain import ChainClient
from backend.indexer.sync import Indexer, IndexerConfig

CONTRIBUTIONS = 10_000
REQUESTS_PER_ENDPOINT = 1_000
CLIENTS = 4  # concurrent keep-alive connections
TIME_BOUND_S = 30.0  # per endpoint
TARGET_P95_MS = 50.0


def endpoints(contributor: str) -> dict[str, object]:
    """Name -> a function giving the next path to request."""
    n = CONTRIBUTIONS

    def rand_id() -> int:
        return random.randint(1, n)

    return {
        "list contributions": lambda: f"/contributions?limit=50&offset={random.randint(0, n - 50)}",
        "list a Datanet's approved": lambda: (
            f"/datanets/1/contributions?status=approved&limit=50&offset={random.randint(0, 8_000)}"
        ),
        "list by contributor": lambda: (
            f"/contributions?contributor={contributor}&limit=50&offset={random.randint(0, 2_000)}"
        ),
        "list version members": lambda: (
            f"/datanets/1/versions/1/contributions?limit=50&offset={random.randint(0, 8_000)}"
        ),
        "contribution detail": lambda: f"/contributions/{rand_id()}",
        "datanet detail": lambda: "/datanets/1",
        "version proof (10k-leaf tree)": lambda: (
            f"/datanets/1/versions/1/proofs/{random.choice([i for i in range(1, 60) if i % 10])}"
        ),
    }


def measure(base: str, next_path: object) -> dict[str, float | int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + TIME_BOUND_S
    per_client = REQUESTS_PER_ENDPOINT // CLIENTS

    def worker() -> tuple[list[float], int]:
        own, bad = [], 0
        with httpx.Client(base_url=base, timeout=10) as client:
            client.get("/health")
            for _ in range(per_client):
                if time.monotonic() > deadline:
                    break
                path = next_path()  # type: ignore[operator]
                started = time.perf_counter()
                response = client.get(path)
                own.append((time.perf_counter() - started) * 1000)
                bad += response.status_code != 200
        return own, bad

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for own, bad in pool.map(lambda _: worker(), range(CLIENTS)):
            latencies += own
            errors += bad
    seconds = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "errors": errors, "p50_ms": round(q[49], 2),
            "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2),
            "rps": round(len(latencies) / seconds)}  # fmt: skip


def serve(db: Path, content: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OPENLEDGER_API_DB_PATH": str(db),
        "OPENLEDGER_API_CONTENT_DIR": str(content),
        "OPENLEDGER_API_PORT": str(port),
    }
    server = subprocess.Popen([sys.executable, "-m", "backend.api"], cwd=chain_env.ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the API did not start")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "index.db"
        with Anvil(port=free_port()) as anvil:
            w3 = Web3(Web3.HTTPProvider(anvil.url))
            load = load_chain(w3, CONTRIBUTIONS)
            contributor = w3.eth.accounts[2]
            indexer = Indexer(db, load.protocol.deployment, ChainClient(anvil.url),
                              IndexerConfig(confirmations=0))  # fmt: skip
            events = indexer.sync_once().events
            indexer.close()
        port = free_port()
        server = serve(db, Path(tmp) / "content", port)
        try:
            base = f"http://127.0.0.1:{port}/api/v1"
            httpx.get(base + "/datanets/1/versions/1/proofs/1", timeout=30)  # builds the tree
            results = {name: measure(base, path) for name, path in endpoints(contributor).items()}
        finally:
            server.terminate()
            server.wait(timeout=10)
    worst = max(r["p95_ms"] for r in results.values())
    met = worst < TARGET_P95_MS and all(r["errors"] == 0 for r in results.values())
    path = write_results("api", {
        "setup": {"contributions": CONTRIBUTIONS, "events_indexed": events,
                  "server": "uvicorn, 1 process, 127.0.0.1",
                  "load": f"{CLIENTS} keep-alive httpx clients in a second process",
                  "bound": f"{REQUESTS_PER_ENDPOINT} requests or {TIME_BOUND_S:.0f} s each"},
        "endpoints": results,
        "target": {"p95_ms": TARGET_P95_MS, "worst_p95_ms": worst, "met": met},
    })  # fmt: skip
    print(table(["endpoint", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s"],
                [[name, r["requests"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["rps"]]
                 for name, r in results.items()]))  # fmt: skip
    print(
        f"\ntarget p95 < {TARGET_P95_MS:.0f} ms: {'met' if met else 'NOT met'} (worst {worst} ms)"
    )
    print(f"wrote {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
