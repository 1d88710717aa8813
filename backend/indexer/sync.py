"""Follows a deployment's events into the SQLite read model: resumable, idempotent, reorg-safe.

One pass (:meth:`Indexer.sync_once`):

1. the head of the chain, minus ``confirmations``, is the target;
2. the hash of the last processed block is checked against the chain; on a mismatch the index
   rolls back to the newest stored block the chain still has (the fork point) and goes on from
   there (blocks at or below a matching block are canonical: each block commits to its parent);
3. the blocks up to the target are read in ranges with ``eth_getLogs``; a range is accepted only
   if the hash of its last block is the same before and after the logs were read (no reorg in
   between), then its events, its block hashes and the new cursor are committed in one SQLite
   transaction: a crash leaves the index at the end of a committed range, never in between.

Raw events are unique by (tx hash, log index), so processing a range again changes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend.indexer import projections
from backend.indexer.abi import DecodedLog, EventDecoder
from backend.indexer.chain import BlockRef, ChainClient, ChainUnavailableError, RPCError
from backend.indexer.schema import clear_read_model, open_database
from backend.protocol.deployments import Deployment

log = logging.getLogger(__name__)


class IndexerError(RuntimeError):
    """The index cannot follow this chain or deployment."""


@dataclass(frozen=True)
class IndexerConfig:
    confirmations: int = 2  # blocks below the head before a block is indexed
    batch_blocks: int = 2_000  # blocks per eth_getLogs range (halved when the node refuses)
    poll_interval: float = 1.0  # seconds between passes once caught up


@dataclass(frozen=True)
class SyncResult:
    from_block: int
    to_block: int  # the cursor after the pass
    events: int  # new events stored
    rolled_back_to: int | None = None  # the fork point, when a reorg was found


class Indexer:
    """Indexes one deployment's six contracts from ``client`` into the database at ``db_path``."""

    def __init__(
        self,
        db_path: Path | str,
        deployment: Deployment,
        client: ChainClient,
        config: IndexerConfig | None = None,
        decoder: EventDecoder | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.deployment = deployment
        self.client = client
        self.config = config or IndexerConfig()
        self.decoder = decoder or EventDecoder.for_deployment(deployment)
        self.on_progress = on_progress  # (cursor, new events) after every committed range
        self.conn = open_database(db_path)
        self._addresses = sorted(self.decoder.addresses)
        self._stop = threading.Event()
        self._bind()

    # ------------------------------------------------------------ state

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _bind(self) -> None:
        """Records which chain and deployment this database follows; refuses another one."""
        identity = json.dumps(
            {"chain_id": self.deployment.chain_id, "contracts": self.deployment.contracts},
            sort_keys=True,
        )
        recorded = self._meta("deployment")
        if recorded is None:
            with self.conn:
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('deployment', ?)", (identity,)
                )
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('cursor', ?)",
                    (str(self.deployment.block - 1),),
                )
        elif recorded != identity:
            raise IndexerError(
                f"this database indexes {recorded}, not chain {self.deployment.chain_id}'s "
                f"deployment {self.deployment.contracts}: use another database file"
            )

    @property
    def cursor(self) -> int:
        """The last block processed (the deployment's first block - 1 before any)."""
        return int(self._meta("cursor") or self.deployment.block - 1)

    def _stored_hash(self, number: int) -> str | None:
        row = self.conn.execute("SELECT hash FROM blocks WHERE number = ?", (number,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------ one pass

    def sync_once(self, max_block: int | None = None) -> SyncResult:
        """Indexes every confirmed block not yet processed (up to ``max_block`` if given)."""
        chain_id = self.client.chain_id()
        if chain_id != self.deployment.chain_id:
            raise IndexerError(
                f"{self.client.url} serves chain {chain_id}, the deployment is on chain "
                f"{self.deployment.chain_id}"
            )
        start = self.cursor
        rolled_back = self._check_reorg()
        target = self.client.head() - self.config.confirmations
        if max_block is not None:
            target = min(target, max_block)
        new_events = 0
        span = self.config.batch_blocks
        while self.cursor < target and not self._stop.is_set():
            first = self.cursor + 1
            last = min(first + span - 1, target)
            try:
                logs, end = self._read_range(first, last)
            except RPCError as why:
                if last == first:
                    raise
                span = max(1, (last - first + 1) // 2)
                log.info("eth_getLogs refused %d blocks (%s): trying %d", last - first + 1,
                         why, span)  # fmt: skip
                continue
            if end is None:  # a reorg under the range: resolve it from the stored hashes
                rolled_back = self._check_reorg(force=True) or rolled_back
                continue
            new_events += self._commit(logs, end)
            if self.on_progress is not None:
                self.on_progress(end.number, new_events)
        return SyncResult(start, self.cursor, new_events, rolled_back)

    def _read_range(self, first: int, last: int) -> tuple[list[dict], BlockRef | None]:
        """The logs of ``[first, last]`` and the last block, or ``(logs, None)`` when the
        chain changed while they were read."""
        before = self.client.block(last)
        logs = self.client.logs(self._addresses, first, last)
        after = self.client.block(last)
        if before is None or after is None or before.hash != after.hash:
            log.warning("the chain changed under blocks %d-%d while reading them", first, last)
            return logs, None
        if any(entry.get("removed") for entry in logs) or any(
            int(entry["blockNumber"], 16) == last and entry["blockHash"] != after.hash
            for entry in logs
        ):
            return logs, None
        return logs, after

    def _commit(self, logs: list[dict], end: BlockRef) -> int:
        """Stores a range's events, its block hashes and the new cursor in one transaction."""
        decoded = [self.decoder.decode(entry) for entry in logs]
        decoded.sort(key=lambda ev: (ev.block_number, ev.log_index))
        stored = 0
        with self.conn:
            for ev in decoded:
                stored += self._store(ev)
            hashes = {(ev.block_number, ev.block_hash) for ev in decoded}
            hashes.add((end.number, end.hash))
            self.conn.executemany(
                "INSERT OR REPLACE INTO blocks (number, hash) VALUES (?, ?)", sorted(hashes)
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("cursor", str(end.number)), ("cursor_timestamp", str(end.timestamp))],
            )
        return stored

    def _store(self, ev: DecodedLog) -> int:
        """Inserts one raw event and applies it to the read model, once (returns 1 if new)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO events (block_number, block_hash, block_timestamp, tx_hash,"
            " log_index, contract, address, event, args) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.block_number, ev.block_hash, ev.block_timestamp, ev.tx_hash, ev.log_index,
                ev.contract, ev.address, ev.event, json.dumps(ev.args, separators=(",", ":")),
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            return 0
        projections.apply(self.conn, ev)
        return 1

    # ------------------------------------------------------------ reorgs

    def _check_reorg(self, force: bool = False) -> int | None:
        """Rolls back to the fork point if the last processed block is no longer canonical."""
        cursor = self.cursor
        stored = self._stored_hash(cursor)
        if stored is None and not force:
            return None
        current = self.client.block(cursor)
        if not force and current is not None and current.hash == stored:
            return None
        fork = self.deployment.block - 1
        rows = self.conn.execute(
            "SELECT number, hash FROM blocks WHERE number <= ? ORDER BY number DESC", (cursor,)
        )
        for number, block_hash in rows:
            canonical = self.client.block(number)
            if canonical is not None and canonical.hash == block_hash:
                fork = number
                break
        if fork == cursor:
            return None
        log.warning(
            "reorg: block %d is no longer canonical; rolling back to block %d", cursor, fork
        )
        self.rollback(fork)
        return fork

    def rollback(self, block: int) -> None:
        """Forgets everything above ``block`` and rebuilds the read model from the raw events
        that remain (one transaction)."""
        with self.conn:
            self.conn.execute("DELETE FROM events WHERE block_number > ?", (block,))
            self.conn.execute("DELETE FROM blocks WHERE number > ?", (block,))
            self.conn.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (str(block),))
            self.conn.execute("DELETE FROM meta WHERE key = 'cursor_timestamp'")
            clear_read_model(self.conn)
            projections.replay(self.conn)

    # ------------------------------------------------------------ forever

    def run_forever(self, retry_delay: float = 2.0) -> None:
        """Syncs, then polls every ``poll_interval`` seconds until :meth:`stop`; an unreachable
        node is waited for (the client retries with backoff, then the loop starts over)."""
        while not self._stop.is_set():
            try:
                result = self.sync_once()
            except ChainUnavailableError as why:
                log.warning("%s; trying again in %.0f s", why, retry_delay)
                self._stop.wait(retry_delay)
                continue
            if result.events:
                log.info("indexed %d events up to block %d", result.events, result.to_block)
            self._stop.wait(self.config.poll_interval)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.conn.close()
