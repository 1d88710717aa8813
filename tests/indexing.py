"""Helpers of the indexer and API tests: an indexer of a scripted history, table dumps, and
the chain's own view of the logs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backend.indexer.abi import EventDecoder
from backend.indexer.chain import Backoff, ChainClient
from backend.indexer.schema import READ_MODEL_TABLES
from backend.indexer.sync import Indexer, IndexerConfig
from tests.protocol_history import History


def new_indexer(
    db: Path, url: str, history: History, decoders: dict[str, EventDecoder], **config: object
) -> Indexer:
    """An indexer of ``history``'s deployment (decoders cached per deployment)."""
    deployment = history.protocol.deployment
    key = repr(sorted(deployment.contracts.items()))
    if key not in decoders:
        decoders[key] = EventDecoder.for_deployment(deployment)
    client = ChainClient(url, Backoff(initial=0.05, maximum=0.5, deadline=5.0))
    settings = {"confirmations": 0, **config}
    return Indexer(db, deployment, client, IndexerConfig(**settings), decoders[key])  # type: ignore[arg-type]


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows but the events' local ids: equal dumps, equal indexes."""
    conn = sqlite3.connect(db)
    try:
        tables = {
            name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall())
            for name in READ_MODEL_TABLES
        }
        tables["events"] = conn.execute(
            "SELECT block_number, block_hash, tx_hash, log_index, contract, event, args"
            " FROM events ORDER BY block_number, log_index"
        ).fetchall()
        return tables
    finally:
        conn.close()


def chain_logs(url: str, history: History) -> list[dict]:
    """Every log of the deployment's contracts, straight from the node."""
    client = ChainClient(url)
    addresses = list(history.protocol.deployment.contracts.values())
    return client.logs(addresses, history.protocol.deployment.block, client.head())
