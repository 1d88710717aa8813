"""The ledger's tables (``SCHEMA``, and :func:`migrate` for a ledger written by an older
version) and the records read from them; ``ledger.py`` has the reads and writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from backend.protocol.eip712 import SignedVoucher
from backend.protocol.receipts import Receipt

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    payer TEXT NOT NULL,
    model_id INTEGER NOT NULL,
    accepted TEXT NOT NULL,
    consumed TEXT NOT NULL,
    redeemed TEXT NOT NULL,
    voucher TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    signer TEXT NOT NULL DEFAULT '',
    redeem_by INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (payer, model_id)
);
CREATE TABLE IF NOT EXISTS redemptions (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed')),
    vouchers TEXT NOT NULL,
    receipts_root TEXT NOT NULL,
    receipts_cid TEXT NOT NULL,
    receipt_count INTEGER NOT NULL,
    tx_hash TEXT,
    proof_id INTEGER,
    paid TEXT,
    created_at INTEGER NOT NULL,
    confirmed_at INTEGER
);
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY,
    request_hash TEXT NOT NULL UNIQUE,
    payer TEXT NOT NULL,
    model_id INTEGER NOT NULL,
    adapter_version INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    price TEXT NOT NULL,
    output_hash TEXT NOT NULL,
    attribution_digest TEXT NOT NULL,
    voucher_cumulative TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    redemption_id INTEGER REFERENCES redemptions (id)
);
CREATE INDEX IF NOT EXISTS receipts_pending ON receipts (redemption_id);
CREATE TABLE IF NOT EXISTS attribution_records (
    receipt_id INTEGER PRIMARY KEY REFERENCES receipts (id),
    model_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    prompt_ids BLOB NOT NULL,
    answer_ids BLOB NOT NULL,
    answer_record BLOB NOT NULL,
    full_record BLOB
);
CREATE INDEX IF NOT EXISTS attribution_unsketched ON attribution_records (receipt_id)
    WHERE full_record IS NULL;
"""


def migrate(db: sqlite3.Connection) -> None:
    """Adds the columns a ledger written before payments v2 lacks."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(channels)")}
    for name, decl in (
        ("signer", "TEXT NOT NULL DEFAULT ''"),
        ("redeem_by", "INTEGER NOT NULL DEFAULT 0"),
    ):
        if name not in columns:
            db.execute(f"ALTER TABLE channels ADD COLUMN {name} {decl}")


@dataclass(frozen=True)
class ChannelState:
    payer: str
    model_id: int
    accepted: int  # OPEN wei, cumulative amount of the latest accepted voucher
    consumed: int  # OPEN wei, sum of receipt prices
    redeemed: int  # OPEN wei, redeemed on-chain as last seen
    voucher: SignedVoucher | None  # the latest accepted voucher
    signer: str = ""  # who signed it: the payer or a session key of the channel
    redeem_by: int = 0  # unix seconds; the latest voucher must be redeemed before it

    @property
    def unredeemed(self) -> int:
        return self.accepted - self.redeemed


@dataclass(frozen=True)
class Redemption:
    id: int
    status: str  # pending | confirmed | failed
    vouchers: tuple[SignedVoucher, ...]
    receipts_root: bytes
    receipts_cid: str
    receipt_count: int
    tx_hash: str | None
    proof_id: int | None
    paid: int | None  # OPEN wei


def pack_ids(ids: Sequence[int]) -> bytes:
    return b"".join(int(i).to_bytes(4, "big") for i in ids)  # big-endian u32 each


def unpack_ids(raw: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))


@dataclass(frozen=True)
class AnswerAttribution:
    """What a receipt's ``attributionDigest`` commits to, written with the receipt."""

    model_id: int
    version: int
    prompt_ids: tuple[int, ...]  # the token ids the engine was given
    answer_ids: tuple[int, ...]  # the generated token ids
    answer_record: bytes  # canonical bytes of the answer record (spans only)


@dataclass(frozen=True)
class StoredAttribution:
    """A receipt's row in ``attribution_records``."""

    receipt_id: int
    attribution: AnswerAttribution
    full_record: bytes | None  # canonical bytes of the full record, once the worker made it


def attribution_from_row(row: sqlite3.Row) -> StoredAttribution:
    return StoredAttribution(
        receipt_id=row["receipt_id"],
        attribution=AnswerAttribution(
            row["model_id"],
            row["version"],
            unpack_ids(row["prompt_ids"]),
            unpack_ids(row["answer_ids"]),
            bytes(row["answer_record"]),
        ),
        full_record=None if row["full_record"] is None else bytes(row["full_record"]),
    )


def receipt_from_row(row: sqlite3.Row, node: str) -> Receipt:
    return Receipt(
        request_hash=bytes.fromhex(row["request_hash"]),
        payer=row["payer"],
        node=node,
        model_id=row["model_id"],
        adapter_version=row["adapter_version"],
        tokens_in=row["tokens_in"],
        tokens_out=row["tokens_out"],
        price=int(row["price"]),
        output_hash=bytes.fromhex(row["output_hash"]),
        attribution_digest=bytes.fromhex(row["attribution_digest"]),
        voucher_cumulative=int(row["voucher_cumulative"]),
        created_at=row["created_at"],
    )


def channel_from_row(row: sqlite3.Row) -> ChannelState:
    return ChannelState(
        payer=row["payer"],
        model_id=row["model_id"],
        accepted=int(row["accepted"]),
        consumed=int(row["consumed"]),
        redeemed=int(row["redeemed"]),
        voucher=SignedVoucher.from_json(json.loads(row["voucher"])),
        signer=row["signer"],
        redeem_by=row["redeem_by"],
    )


def redemption_from_row(row: sqlite3.Row) -> Redemption:
    return Redemption(
        id=row["id"],
        status=row["status"],
        vouchers=tuple(SignedVoucher.from_json(v) for v in json.loads(row["vouchers"])),
        receipts_root=bytes.fromhex(row["receipts_root"]),
        receipts_cid=row["receipts_cid"],
        receipt_count=row["receipt_count"],
        tx_hash=row["tx_hash"],
        proof_id=row["proof_id"],
        paid=None if row["paid"] is None else int(row["paid"]),
    )
