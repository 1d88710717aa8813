"""Feedback for the API: the :class:`FeedbackStore` of the deployment the index follows, and the
receipts it checks feedback against, read from the usage proofs the indexer recorded.

The store is opened on first use, once the index knows the deployment (the EIP-712 domain is
its chain id and ModelRegistry address); one SQLite file per domain, so a redeployed local
chain starts afresh instead of mixing signatures of two domains. Receipts logs are loaded
lazily: before every feedback request, the logs of usage proofs indexed since the last one.
A log that cannot be used (unreadable, not receipts, not the log the proof committed to on-chain
— its Merkle root or receipt count differs —, naming another node, contradicting a receipt
already known) is skipped with a warning; one missing from the content store is tried again a
minute later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import partial
from pathlib import Path

from backend.api.deps import Database
from backend.modelfactory.feedback_store import FeedbackStore
from backend.modelfactory.receipt_index import ReceiptIndex
from backend.protocol.eip712 import feedback_domain
from backend.protocol.receipts import Receipt, ReceiptLogError, read_usage_log, receipts_tree
from backend.storage.base import ContentNotFoundError, ContentStore, ContentStoreError

log = logging.getLogger(__name__)

MAX_LOG_BYTES = 64 * 1024 * 1024  # a receipts log larger than this is not read
RETRY_SECONDS = 60.0  # before a log missing from the content store is tried again
PROOF_COLUMNS = "id, node, receipts_cid, receipts_root, receipt_count"


class FeedbackUnavailableError(RuntimeError):
    """The index does not know the deployment yet, so feedback cannot be checked."""


class FeedbackService:
    """Feedback on paid answers, checked against the receipts of indexed usage proofs."""

    def __init__(self, folder: Path, db: Database, store: ContentStore) -> None:
        self.folder = Path(folder)
        self.db = db
        self.content = store
        self.receipts = ReceiptIndex()
        self._store: FeedbackStore | None = None
        self._lock = threading.Lock()
        self._last: tuple[int, str] = (0, "")  # the last usage proof read: id, receipts CID
        self._retry: dict[int, float] = {}  # proof id -> when it may be read again

    def store(self) -> FeedbackStore:
        """The feedback store; :class:`FeedbackUnavailableError` before the index knows the
        deployment."""
        with self._lock:
            if self._store is None:
                chain_id, registry = self._domain()
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / f"feedback-{chain_id}-{registry.lower()}.db"
                self._store = FeedbackStore(path, feedback_domain(chain_id, registry), self)
                log.info("feedback for chain %d, ModelRegistry %s in %s", chain_id, registry, path)
            return self._store

    def get(self, request_hash: bytes) -> Receipt | None:
        """The receipt of ``request_hash`` (the store's receipt lookup)."""
        return self.receipts.get(request_hash)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _domain(self) -> tuple[int, str]:
        with self.db.borrow() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'deployment'").fetchone()
        deployment = json.loads(row[0]) if row is not None else {}
        registry = deployment.get("contracts", {}).get("ModelRegistry")
        if not registry or "chain_id" not in deployment:
            raise FeedbackUnavailableError(
                "the index does not know the deployment yet (no ModelRegistry): feedback "
                "cannot be checked until the indexer has run"
            )
        return int(deployment["chain_id"]), str(registry)

    # ------------------------------------------------------------ receipts

    def refresh(self) -> int:
        """Loads the receipts logs of usage proofs indexed since the last call (and those due
        for another try); returns how many receipts were added."""
        with self._lock:
            with self.db.borrow() as conn:
                last_id, last_cid = self._last
                if last_id:
                    row = conn.execute(
                        "SELECT receipts_cid FROM usage_proofs WHERE id = ?", (last_id,)
                    ).fetchone()
                    if row is None or row[0] != last_cid:  # a reorg replaced indexed proofs
                        log.warning("usage proofs changed under the index: reloading receipts")
                        self._reset()
                rows = conn.execute(
                    f"SELECT {PROOF_COLUMNS} FROM usage_proofs WHERE id > ? ORDER BY id",
                    (self._last[0],),
                ).fetchall()
                now = time.monotonic()
                due = [pid for pid, at in self._retry.items() if at <= now]
                if due:
                    marks = ",".join("?" * len(due))
                    rows = conn.execute(
                        f"SELECT {PROOF_COLUMNS} FROM usage_proofs WHERE id IN ({marks})",
                        due,
                    ).fetchall() + rows  # fmt: skip
            added = 0
            for proof_id, node, cid, root, count in rows:
                self._retry.pop(proof_id, None)
                added += self._load(proof_id, node, cid, root, int(count))
                if proof_id > self._last[0]:
                    self._last = (proof_id, cid)
            return added

    def _reset(self) -> None:
        self.receipts = ReceiptIndex()
        self._retry.clear()
        self._last = (0, "")

    def _load(self, proof_id: int, node: str, cid: str, root: str | bytes, count: int) -> int:
        """Adds the receipts of one usage proof's log, all or none: only a log whose Merkle
        tree is the one the proof committed to on-chain (``root``, ``count`` receipts)."""
        where = f"receipts log {cid}"
        try:
            get = partial(self.content.get, max_bytes=MAX_LOG_BYTES)
            receipts = read_usage_log(get, cid).receipts
        except ContentNotFoundError:
            log.warning("usage proof %d: %s is not in the content store; trying again later",
                        proof_id, where)  # fmt: skip
            self._retry[proof_id] = time.monotonic() + RETRY_SECONDS
            return 0
        except (ContentStoreError, ReceiptLogError) as why:
            log.warning("usage proof %d skipped: %s", proof_id, why)
            return 0
        on_chain = root.hex() if isinstance(root, bytes) else root.lower().removeprefix("0x")
        committed = len(receipts) == count and bool(receipts)
        if not committed or receipts_tree(receipts).root.hex() != on_chain:
            log.warning("usage proof %d skipped: %s is not the log its on-chain root %s (%d "
                        "receipts) commits to", proof_id, where, root, count)  # fmt: skip
            return 0
        for receipt in receipts:
            known = self.receipts.get(receipt.request_hash)
            problem = None
            if receipt.node != node:
                problem = f"a receipt names node {receipt.node}, but the proof's node is {node}"
            elif known is not None and known != receipt:
                problem = f"request 0x{receipt.request_hash.hex()} already has another receipt"
            if problem:
                log.warning("usage proof %d skipped: %s: %s", proof_id, where, problem)
                return 0
        for receipt in receipts:
            self.receipts.add(receipt, where)
        return len(receipts)
