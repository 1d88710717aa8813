"""One SQLite file kept durably by one process and shared by its threads: the node's ledger,
the feedback store, whatever else must survive a crash with nothing half-written.

WAL journal, ``synchronous=FULL`` (a committed transaction is on disk before ``COMMIT``
returns), foreign keys on, autocommit off by hand: writes go through :meth:`_tx` (``BEGIN
IMMEDIATE`` ... ``COMMIT``, rolled back on any exception), reads through :meth:`_read`, both
under one lock. ``meta`` binds a file to its owner (a node address, an EIP-712 domain), so a
file is never silently reused by another.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self


class DurableSQLite:
    def __init__(self, path: str | Path, schema: str) -> None:
        """Opens (or creates) ``path`` and runs ``schema`` (``CREATE ... IF NOT EXISTS``)."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _owner(self, key: str, value: str) -> str:
        """The ``meta`` value of ``key``: ``value`` when the file had none (now stored)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            return str(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
