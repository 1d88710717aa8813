"""``python -m backend.indexer``: follow a deployment's events into a SQLite file."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

from backend.indexer.chain import Backoff, ChainClient
from backend.indexer.sync import Indexer, IndexerConfig
from backend.protocol.deployments import DeploymentStore, default_path

log = logging.getLogger("backend.indexer")


@click.command()
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path),
    required=True,
    help="SQLite file (created if missing)",
)
@click.option(
    "--deployments",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="deployments JSON [$OPENLEDGER_DEPLOYMENTS or deployments.json]",
)
@click.option(
    "--rpc",
    "rpc_url",
    default="http://127.0.0.1:8545",
    show_default=True,
    help="the chain node's JSON-RPC URL",
)
@click.option(
    "--confirmations",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="blocks below the head before a block is indexed (0 on a local chain)",
)
@click.option(
    "--batch-blocks",
    type=click.IntRange(min=1),
    default=2_000,
    show_default=True,
    help="blocks per eth_getLogs request",
)
@click.option(
    "--poll",
    "poll_interval",
    type=float,
    default=1.0,
    show_default=True,
    help="seconds between polls once caught up",
)
@click.option("--once", is_flag=True, help="catch up once and exit")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def main(
    db_path: Path,
    deployments: Path | None,
    rpc_url: str,
    confirmations: int,
    batch_blocks: int,
    poll_interval: float,
    once: bool,
    verbose: bool,
) -> None:
    """Follow the protocol's events on RPC into the SQLite file DB (resumable, reorg-safe)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    client = ChainClient(rpc_url, Backoff(deadline=30.0))
    store = DeploymentStore(deployments or default_path())
    deployment = store.get(client.chain_id())
    config = IndexerConfig(confirmations, batch_blocks, poll_interval)
    indexer = Indexer(db_path, deployment, client, config)
    log.info("indexing chain %d from block %d into %s (resuming after block %d)",
             deployment.chain_id, deployment.block, db_path, indexer.cursor)  # fmt: skip
    try:
        if once:
            result = indexer.sync_once()
            log.info("indexed %d events; at block %d", result.events, result.to_block)
            return
        signal.signal(signal.SIGTERM, lambda *_: indexer.stop())
        try:
            indexer.run_forever()
        except KeyboardInterrupt:
            indexer.stop()
    finally:
        cursor = indexer.cursor
        indexer.close()
        log.info("stopped at block %d", cursor)


if __name__ == "__main__":
    main()
