"""Indexer catch-up speed: events per second from a local anvil into a fresh SQLite index.

The chain holds a Datanet with CONTRIBUTIONS contributions (``contributeBatch`` of 100), their
reviews and a version: over two events per contribution plus token transfers. Writes
bench/results/indexer.json and prints a table. Target: >= 500 events/s.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import chain_env  # noqa: F401  (first: sets where ape and solc live)
from chainload import load_chain
from common import table, write_results
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port
from backend.indexer.abi import EventDecoder
from backend.indexer.chain import ChainClient
from backend.indexer.sync import Indexer, IndexerConfig

CONTRIBUTIONS = 5_000
TARGET_EVENTS_PER_S = 500


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with Anvil(port=free_port()) as anvil, tempfile.TemporaryDirectory() as tmp:
        load = load_chain(Web3(Web3.HTTPProvider(anvil.url)), CONTRIBUTIONS)
        deployment = load.protocol.deployment
        decoder = EventDecoder.for_deployment(deployment)  # ABI loading is not catch-up
        runs = []
        for batch_blocks in (2_000, 100):
            db = Path(tmp) / f"index-{batch_blocks}.db"
            config = IndexerConfig(confirmations=0, batch_blocks=batch_blocks)
            indexer = Indexer(db, deployment, ChainClient(anvil.url), config, decoder)
            started = time.perf_counter()
            result = indexer.sync_once()
            seconds = time.perf_counter() - started
            indexer.close()
            runs.append({
                "batch_blocks": batch_blocks, "events": result.events,
                "blocks": result.to_block - result.from_block, "seconds": round(seconds, 3),
                "events_per_s": round(result.events / seconds),
                "db_bytes": db.stat().st_size,
            })  # fmt: skip
    best = min(r["events_per_s"] for r in runs)
    met = best >= TARGET_EVENTS_PER_S
    path = write_results("indexer", {
        "chain": "anvil 1.7.1 on 127.0.0.1, one block per transaction",
        "load": {"contributions": CONTRIBUTIONS, "batch": 100,
                 "send_seconds": round(load.seconds, 1)},
        "runs": runs,
        "target": {"events_per_s": TARGET_EVENTS_PER_S, "worst_run": best, "met": met},
    })  # fmt: skip
    print(table(["eth_getLogs range", "events", "blocks", "seconds", "events/s"],
                [[f"{r['batch_blocks']} blocks", f"{r['events']:,}", r["blocks"], r["seconds"],
                  f"{r['events_per_s']:,}"] for r in runs]))  # fmt: skip
    print(f"\ntarget >= {TARGET_EVENTS_PER_S} events/s: {'met' if met else 'NOT met'}")
    print(f"wrote {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
