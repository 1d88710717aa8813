"""Receipts by request hash, read from the receipts logs of published usage proofs: what
feedback is checked against (the answer's payer and output hash)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from backend.protocol.receipts import Receipt, ReceiptLogError, read_usage_log
from backend.storage.base import ContentStore

MAX_SQLITE_INT = 2**63 - 1  # receipts' integers are stored in SQLite by the feedback store


class ReceiptLookup(Protocol):
    def get(self, request_hash: bytes) -> Receipt | None: ...


class ReceiptIndex:
    """Receipts by request hash, from the receipts logs of published usage proofs."""

    def __init__(self, receipts: Iterable[Receipt] = ()) -> None:
        self._by_hash: dict[bytes, Receipt] = {}
        for receipt in receipts:
            self.add(receipt)

    @classmethod
    def from_logs(cls, store: ContentStore, cids: Iterable[str]) -> ReceiptIndex:
        """The index of the logs ``cids`` (usage proofs' ``receiptsCID``), each verified."""
        index = cls()
        for cid in cids:
            index.add_log(store, cid)
        return index

    def add_log(self, store: ContentStore, cid: str) -> int:
        """Adds the receipts a usage proof's ``cid`` names (a usage bundle or a plain receipts
        log, read verified from ``store``); returns how many."""
        receipts = read_usage_log(store.get, cid).receipts
        for receipt in receipts:
            self.add(receipt, source=f"receipts log {cid}")
        return len(receipts)

    def add(self, receipt: Receipt, source: str = "receipt") -> None:
        """Adds ``receipt``; the same receipt twice is one, two different ones are an error."""
        for name in ("model_id", "adapter_version", "created_at"):  # stored in SQLite
            if getattr(receipt, name) > MAX_SQLITE_INT:
                raise ReceiptLogError(f"{source}: receipt {name} out of range")
        known = self._by_hash.get(receipt.request_hash)
        if known is not None and known != receipt:
            raise ReceiptLogError(
                f"{source}: request 0x{receipt.request_hash.hex()} has two different receipts"
            )
        self._by_hash[receipt.request_hash] = receipt

    def get(self, request_hash: bytes) -> Receipt | None:
        return self._by_hash.get(request_hash)

    def __len__(self) -> int:
        return len(self._by_hash)
