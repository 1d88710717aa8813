"""Proof of Attribution on the node: every paid answer of a model version with an attribution
index is scored (docs/attribution-records.md).

- On the request path, before the answer leaves (:meth:`NodeAttribution.answer`, called in the
  settle worker thread, never on the event loop): the **answer record**, spans only (~10-20 ms);
  the receipt's ``attributionDigest`` is its digest, and the ledger writes it with the receipt.
- In the background (:class:`AttributionWorker`, one thread, lowered priority, waiting while
  the engine is busy): the query sketch (one forward and backward pass per answer) and the
  **full record**, stored in the receipt's ledger row. Pending rows survive restarts: the
  worker takes them from the ledger.
- At redemption the redeemer completes what the worker has not reached yet
  (:meth:`NodeAttribution.complete`, off the request path) and publishes the records.

A version trained without an index is served with a zero digest (logged once); a version
whose attributor cannot be built (store or chain unreachable, a mismatched index) is logged
loudly, served with a zero digest, and tried again after :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.attribution.attributor import AttributionError, Attributor
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore
from inference_node.payments.ledger import AnswerAttribution, Ledger, StoredAttribution

log = logging.getLogger(__name__)

RETRY_SECONDS = 300.0  # before building a failed attributor again
WORKER_BATCH = 8  # answers sketched per batch
WORKER_NICE = 10  # the worker thread's niceness increment (Linux: per thread)


class NodeAttribution:
    """The attributors of the versions this node serves, built lazily from the chain and the
    content store and cached; thread-safe."""

    def __init__(
        self,
        protocol: Web3Protocol,
        store: ContentStore,
        base_dir: Path,
        work_dir: Path,
        device: str = "cpu",
    ) -> None:
        self.protocol, self.store = protocol, store
        self.base_dir, self.work_dir, self.device = Path(base_dir), Path(work_dir), device
        self._lock = threading.Lock()  # guards the cache
        self._gradients = threading.Lock()  # one sketching pass at a time (worker, redeemer)
        self._attributors: dict[tuple[int, int], Attributor | None] = {}
        self._retry_at: dict[tuple[int, int], float] = {}
        # where the sketches' torch work runs: the node sets the engine's thread (the process's
        # one multi-threaded torch thread, engine/threads.py), a sketch at a time between steps
        self.run_torch: Callable[[Callable[[], Any]], Any] = lambda fn: fn()

    def attributor(self, model_id: int, version: int) -> Attributor | None:
        """The version's attributor; None when it has no index or cannot be built now."""
        key = (model_id, version)
        with self._lock:
            if key in self._attributors:
                return self._attributors[key]
            if time.monotonic() < self._retry_at.get(key, 0.0):
                return None
            try:
                built: Attributor | None = Attributor.for_model_version(
                    self.protocol, self.store, model_id, version, self.base_dir,
                    self.work_dir, self.device,
                )  # fmt: skip
            except AttributionError as why:
                if "without an attribution index" not in str(why):
                    return self._failed(key, why)
                log.info("model %d version %d is served with zero attribution digests: %s",
                         model_id, version, why)  # fmt: skip
                built = None
            except Exception as why:  # the answer must not fail with it
                return self._failed(key, why)
            self._attributors[key] = built
            return built

    def _failed(self, key: tuple[int, int], why: Exception) -> None:
        log.error(
            "ATTRIBUTION UNAVAILABLE for model %d version %d: %s; its answers get a zero "
            "attribution digest (trying again in %.0f s)",
            *key, why, RETRY_SECONDS,
            exc_info=not isinstance(why, AttributionError),
        )  # fmt: skip
        self._retry_at[key] = time.monotonic() + RETRY_SECONDS
        return None

    def answer(
        self, model_id: int, version: int, prompt: Sequence[int], answer: Sequence[int]
    ) -> AnswerAttribution | None:
        """The answer record of one answer (spans only), or None: no index, or scoring failed
        (logged; the answer is served with a zero digest)."""
        attributor = self.attributor(model_id, version)
        if attributor is None:
            return None
        try:
            record = attributor.record(prompt, answer)
        except Exception:  # the answer must not fail with it
            log.exception("attribution of an answer of model %d version %d failed; zero digest",
                          model_id, version)  # fmt: skip
            return None
        return AnswerAttribution(model_id, version, tuple(prompt), tuple(answer), record.to_bytes())

    def complete(self, ledger: Ledger, rows: Sequence[StoredAttribution]) -> int:
        """Computes the query sketches of ``rows`` and stores their full records in
        ``ledger``; returns how many it stored. Rows of a version whose attributor is
        unavailable stay as they are."""
        by_version: dict[tuple[int, int], list[StoredAttribution]] = {}
        for row in rows:
            if row.full_record is None:
                a = row.attribution
                by_version.setdefault((a.model_id, a.version), []).append(row)
        stored = 0
        for (model_id, version), todo in by_version.items():
            attributor = self.attributor(model_id, version)
            if attributor is None:
                continue
            queries = [(r.attribution.prompt_ids, r.attribution.answer_ids) for r in todo]
            # a sketch batch per call (the batches ``sketches`` makes anyway: same results),
            # so that serving waits for one batch at most between two steps
            step = attributor.index.settings.sketches.batch_size
            with self._gradients:
                sketches = np.concatenate(
                    [
                        self.run_torch(lambda b=queries[i : i + step], a=attributor: a.sketches(b))
                        for i in range(0, len(queries), step)
                    ]
                )
            for row, sketch in zip(todo, sketches, strict=True):
                a = row.attribution
                full = attributor.record(a.prompt_ids, a.answer_ids, sketch=sketch)
                ledger.set_full_record(row.receipt_id, full.to_bytes())
                stored += 1
        return stored


class AttributionWorker:
    """The background thread that turns answer records into full records, batch by batch,
    while the engine is idle; it never holds up an answer (the request path only reads the
    ledger's lock for its own write)."""

    def __init__(
        self,
        ledger: Ledger,
        attribution: NodeAttribution,
        idle: Callable[[], bool] = lambda: True,
        batch: int = WORKER_BATCH,
        poll_seconds: float = 1.0,
    ) -> None:
        self.ledger, self.attribution, self.idle = ledger, attribution, idle
        self.batch, self.poll_seconds = batch, poll_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._skipped: set[int] = set()  # rows whose version cannot be sketched this run

    def start(self) -> AttributionWorker:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="attribution", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wake(self) -> None:
        """A new row is waiting (called after a settle)."""
        self._wake.set()

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's own niceness
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:  # logged; the rows stay pending for a later try
                log.exception("attribution worker: a batch failed; trying again later")
                worked = False
            if not worked:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def step(self) -> bool:
        """Sketches one batch of pending rows; False when there was nothing it could do."""
        if not self.idle():
            return False
        rows = [
            r
            for r in self.ledger.unsketched(self.batch + len(self._skipped))
            if r.receipt_id not in self._skipped
        ][: self.batch]
        if not rows:
            return False
        stored = self.attribution.complete(self.ledger, rows)
        if stored < len(rows):  # versions without an attributor now: not again this run
            done = self.ledger.attribution_records([r.receipt_id for r in rows])
            self._skipped |= {i for i, r in done.items() if r.full_record is None}
        log.info("attribution worker: %d full records stored", stored)
        return stored > 0


class RevealRefusedError(ValueError):
    """A reveal the ledger cannot give; the message says what is missing."""


def reveal_of(ledger: Ledger, proof_id: int, request_hashes: Sequence[bytes] = ()) -> bytes:
    """The reveal file (backend/attribution/reveal.py) of usage proof ``proof_id``'s receipts
    with an attribution record: every one, or only ``request_hashes`` (a challenge names the
    disputed answers; the others stay private). The ids come from the ledger, which wrote them
    with each receipt."""
    from backend.attribution.reveal import Revealed, reveal_bytes

    redemption = next((r for r in ledger.redemptions("confirmed") if r.proof_id == proof_id),
                      None)  # fmt: skip
    if redemption is None:
        raise RevealRefusedError(
            f"usage proof {proof_id} is not a confirmed redemption of this node"
        )
    ids = ledger.receipt_ids_of(redemption.id)
    receipts = dict(zip(ids, ledger.receipts_of(redemption.id), strict=True))
    rows = ledger.attribution_records(ids)
    wanted = set(request_hashes)
    known = {receipts[i].request_hash for i in rows}
    missing = wanted - known
    if missing:
        raise RevealRefusedError(
            f"usage proof {proof_id} has no attributed receipt 0x{sorted(missing)[0].hex()}"
        )
    return reveal_bytes(
        Revealed(receipts[i].request_hash, row.attribution.prompt_ids, row.attribution.answer_ids)
        for i, row in sorted(rows.items())
        if not wanted or receipts[i].request_hash in wanted
    )
