"""The node's durable payments ledger (SQLite, WAL, ``synchronous=FULL``).

Per (payer, model) of the payer's channel with this node: the latest accepted signed voucher
(``accepted`` is its cumulative amount) and who signed it, ``consumed`` (sum of the actual
prices of its receipts), ``redeemed`` (what the contract says the pair redeemed, as last seen)
and ``redeem_by``: the time by which the latest voucher must be redeemed (its deadline, its
session key's end, and anything seen on-chain since that shortens it: a withdrawal request, a
key revocation, a split change). Receipts are written in the same
transaction as the voucher that pays for them, before the answer is released; a receipt stays
pending until a redemption takes it into a usage proof. Redemptions are recorded *before* their
transaction is sent (status ``pending``) and confirmed after, so a crash in between is found on
restart and reconciled against the chain (see redeemer.py). Amounts are OPEN wei stored as
decimal text (they exceed SQLite's 64-bit integers).

A receipt of a model version with an attribution index has a row in ``attribution_records``,
written in the receipt's transaction: the prompt's and the answer's token ids and the answer
record (spans only) its ``attributionDigest`` commits to; the background worker adds the full
record (spans and gradients) later (docs/attribution-records.md). A ledger written before the
table existed gets it when opened. The tables and the records read from them are in
``ledger_rows.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from eth_utils import to_checksum_address

from backend.protocol.eip712 import SignedVoucher
from backend.protocol.receipts import Receipt
from backend.storage.sqlite import DurableSQLite
from inference_node.payments.ledger_rows import (
    SCHEMA,
    AnswerAttribution,
    ChannelState,
    Redemption,
    StoredAttribution,
    attribution_from_row,
    channel_from_row,
    migrate,
    pack_ids,
    receipt_from_row,
    redemption_from_row,
)

__all__ = [
    "SCHEMA",
    "AnswerAttribution",
    "ChannelState",
    "Ledger",
    "LedgerError",
    "Redemption",
    "StoredAttribution",
]


class LedgerError(RuntimeError):
    """A write would break the ledger's invariants; nothing was written."""


class Ledger(DurableSQLite):
    """The ledger of one node, in one SQLite file. Safe to share between threads."""

    def __init__(self, path: Path, node: str) -> None:
        super().__init__(path, SCHEMA)
        self.node = to_checksum_address(node)
        migrate(self._db)
        stored = self._owner("node", self.node)
        if stored != self.node:
            raise LedgerError(f"ledger {self.path} belongs to node {stored}, not {self.node}")

    # ------------------------------------------------------------------ channels

    def channel(self, payer: str, model_id: int) -> ChannelState:
        """The state of channel (payer, this node, model); all zero when never used."""
        payer = to_checksum_address(payer)
        rows = self._read(
            "SELECT * FROM channels WHERE payer = ? AND model_id = ?", (payer, model_id)
        )
        return channel_from_row(rows[0]) if rows else ChannelState(payer, model_id, 0, 0, 0, None)

    def channels_of(self, payer: str) -> list[ChannelState]:
        """Every channel of ``payer`` with this node."""
        rows = self._read("SELECT * FROM channels WHERE payer = ?", (to_checksum_address(payer),))
        return [channel_from_row(row) for row in rows]

    def unredeemed_channels(self) -> list[ChannelState]:
        """Channels whose latest voucher promises more than was redeemed, by model then payer."""
        rows = self._read("SELECT * FROM channels ORDER BY model_id, payer")
        return [c for c in map(channel_from_row, rows) if c.accepted > c.redeemed]

    def unredeemed_amount(self) -> int:
        return sum(c.unredeemed for c in self.unredeemed_channels())

    def earliest_redeem_by(self) -> int | None:
        """The soonest ``redeem_by`` of a pair with unredeemed value (None: nothing owed)."""
        return min((c.redeem_by for c in self.unredeemed_channels()), default=None)

    def shorten_redeem_by(self, payer: str, model_id: int | None, by: int) -> int:
        """Makes pair (payer, model) — every pair of ``payer`` when ``model_id`` is None — due
        for redemption by ``by`` at the latest; returns how many pairs it touched."""
        sql = "UPDATE channels SET redeem_by = MIN(redeem_by, ?) WHERE payer = ?"
        args: list[object] = [by, to_checksum_address(payer)]
        if model_id is not None:
            sql += " AND model_id = ?"
            args.append(model_id)
        with self._tx() as db:
            return db.execute(sql, args).rowcount

    def shorten_model_redeem_by(self, model_id: int, by: int) -> int:
        """As :meth:`shorten_redeem_by` for every pair of model ``model_id``."""
        with self._tx() as db:
            return db.execute(
                "UPDATE channels SET redeem_by = MIN(redeem_by, ?) WHERE model_id = ?",
                (by, model_id),
            ).rowcount

    def set_redeemed(self, payer: str, model_id: int, redeemed: int) -> None:
        """Records what the contract says channel (payer, model) redeemed."""
        with self._tx() as db:
            db.execute(
                "UPDATE channels SET redeemed = ? WHERE payer = ? AND model_id = ?",
                (str(redeemed), to_checksum_address(payer), model_id),
            )

    def commit(
        self,
        signed: SignedVoucher,
        receipt: Receipt,
        *,
        signer: str = "",
        redeem_by: int = 0,
        attribution: AnswerAttribution | None = None,
    ) -> int:
        """Writes ``receipt`` and the voucher that pays for it in one durable transaction;
        returns the receipt's id. Call before releasing the answer. ``signer``: who signed the
        voucher; ``redeem_by``: when it must be redeemed (default: its deadline);
        ``attribution``: the answer record its ``attributionDigest`` commits to, written in the
        same transaction.

        Raises :class:`LedgerError` (and writes nothing) when the voucher is for another node
        or channel, or when the channel's receipts would cost more than its latest voucher.
        """
        v = signed.voucher
        payer = to_checksum_address(v.payer)
        if to_checksum_address(v.node) != self.node:
            raise LedgerError(f"voucher for node {v.node}, this ledger is {self.node}")
        if (to_checksum_address(receipt.payer), receipt.model_id) != (payer, v.model_id):
            raise LedgerError(
                f"receipt for ({receipt.payer}, {receipt.model_id}), "
                f"voucher for ({payer}, {v.model_id})"
            )
        now = int(time.time())
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM channels WHERE payer = ? AND model_id = ?", (payer, v.model_id)
            ).fetchone()
            state = channel_from_row(row) if row else ChannelState(payer, v.model_id, 0, 0, 0, None)
            accepted = max(state.accepted, v.cumulative_amount)
            consumed = state.consumed + receipt.price
            if consumed > accepted:
                raise LedgerError(
                    f"channel ({payer}, {v.model_id}) would consume {consumed} wei "
                    f"with vouchers for {accepted} wei"
                )
            newer = v.cumulative_amount >= state.accepted
            voucher = signed if newer else state.voucher
            assert voucher is not None
            if newer:
                signer = to_checksum_address(signer) if signer else payer
                redeem_by = redeem_by or v.deadline
                if state.voucher is not None and state.unredeemed > 0:
                    # A deadline shortened by something seen on-chain stays shortened.
                    redeem_by = min(redeem_by, state.redeem_by)
            else:
                signer, redeem_by = state.signer, state.redeem_by
            db.execute(
                "INSERT INTO channels (payer, model_id, accepted, consumed, redeemed, voucher, "
                "updated_at, signer, redeem_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (payer, model_id) DO UPDATE SET accepted = excluded.accepted, "
                "consumed = excluded.consumed, voucher = excluded.voucher, "
                "updated_at = excluded.updated_at, signer = excluded.signer, "
                "redeem_by = excluded.redeem_by",
                (
                    payer, v.model_id, str(accepted), str(consumed), str(state.redeemed),
                    json.dumps(voucher.to_json()), now, signer, redeem_by,
                ),
            )  # fmt: skip
            cursor = db.execute(
                "INSERT INTO receipts (request_hash, payer, model_id, adapter_version, tokens_in, "
                "tokens_out, price, output_hash, attribution_digest, voucher_cumulative, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    receipt.request_hash.hex(), payer, receipt.model_id, receipt.adapter_version,
                    receipt.tokens_in, receipt.tokens_out, str(receipt.price),
                    receipt.output_hash.hex(), receipt.attribution_digest.hex(),
                    str(v.cumulative_amount), receipt.created_at,
                ),
            )  # fmt: skip
            receipt_id = int(cursor.lastrowid or 0)
            if attribution is not None:
                a = attribution
                db.execute(
                    "INSERT INTO attribution_records (receipt_id, model_id, version, prompt_ids, "
                    "answer_ids, answer_record) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        receipt_id, a.model_id, a.version, pack_ids(a.prompt_ids),
                        pack_ids(a.answer_ids), a.answer_record,
                    ),
                )  # fmt: skip
        return receipt_id

    # ------------------------------------------------------------------ receipts

    def pending_receipts(self) -> list[tuple[int, Receipt]]:
        """Receipts not yet in a usage proof, oldest first, with their ids."""
        rows = self._read("SELECT * FROM receipts WHERE redemption_id IS NULL ORDER BY id")
        return [(row["id"], receipt_from_row(row, self.node)) for row in rows]

    def receipt_ids_of(self, redemption_id: int) -> list[int]:
        rows = self._read(
            "SELECT id FROM receipts WHERE redemption_id = ? ORDER BY id", (redemption_id,)
        )
        return [row["id"] for row in rows]

    def receipts_of(self, redemption_id: int) -> list[Receipt]:
        rows = self._read(
            "SELECT * FROM receipts WHERE redemption_id = ? ORDER BY id", (redemption_id,)
        )
        return [receipt_from_row(row, self.node) for row in rows]

    # ------------------------------------------------------------------ attribution records

    def attribution_records(self, receipt_ids: Sequence[int]) -> dict[int, StoredAttribution]:
        """The attribution rows of ``receipt_ids`` that have one, by receipt id."""
        found: dict[int, StoredAttribution] = {}
        ids = list(receipt_ids)
        for start in range(0, len(ids), 500):  # within SQLite's bound on parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT * FROM attribution_records WHERE receipt_id IN ({marks})", chunk
            )
            found |= {row["receipt_id"]: attribution_from_row(row) for row in rows}
        return found

    def unsketched(self, limit: int) -> list[StoredAttribution]:
        """Up to ``limit`` attribution rows still without a full record, oldest first."""
        rows = self._read(
            "SELECT * FROM attribution_records WHERE full_record IS NULL ORDER BY receipt_id "
            "LIMIT ?",
            (limit,),
        )
        return [attribution_from_row(row) for row in rows]

    def unsketched_count(self) -> int:
        rows = self._read("SELECT COUNT(*) AS n FROM attribution_records WHERE full_record IS NULL")
        return int(rows[0]["n"])

    def set_full_record(self, receipt_id: int, full_record: bytes) -> None:
        """Stores the full record of a receipt's answer (once: a later one is ignored)."""
        with self._tx() as db:
            db.execute(
                "UPDATE attribution_records SET full_record = ? "
                "WHERE receipt_id = ? AND full_record IS NULL",
                (full_record, receipt_id),
            )

    # ------------------------------------------------------------------ redemptions

    def prepare_redemption(
        self,
        vouchers: Sequence[SignedVoucher],
        receipt_ids: Sequence[int],
        receipts_root: bytes,
        receipts_cid: str,
    ) -> int:
        """Records a redemption about to be sent (status ``pending``) and takes its receipts."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO redemptions (status, vouchers, receipts_root, receipts_cid, "
                "receipt_count, created_at) VALUES ('pending', ?, ?, ?, ?, ?)",
                (
                    json.dumps([v.to_json() for v in vouchers]), receipts_root.hex(),
                    receipts_cid, len(receipt_ids), int(time.time()),
                ),
            )  # fmt: skip
            redemption_id = int(cursor.lastrowid or 0)
            db.executemany(
                "UPDATE receipts SET redemption_id = ? WHERE id = ? AND redemption_id IS NULL",
                [(redemption_id, i) for i in receipt_ids],
            )
        return redemption_id

    def record_sent(self, redemption_id: int, tx_hash: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE redemptions SET tx_hash = ? WHERE id = ?", (tx_hash, redemption_id))

    def confirm_redemption(
        self,
        redemption_id: int,
        *,
        tx_hash: str,
        proof_id: int,
        paid: int,
        redeemed: dict[tuple[str, int], int],
    ) -> None:
        """Marks a redemption confirmed with its usage proof id and the channels' on-chain
        ``redeemed`` amounts after it."""
        with self._tx() as db:
            db.execute(
                "UPDATE redemptions SET status = 'confirmed', tx_hash = ?, proof_id = ?, "
                "paid = ?, confirmed_at = ? WHERE id = ?",
                (tx_hash, proof_id, str(paid), int(time.time()), redemption_id),
            )
            db.executemany(
                "UPDATE channels SET redeemed = ? WHERE payer = ? AND model_id = ?",
                [(str(amount), p, m) for (p, m), amount in redeemed.items()],
            )

    def fail_redemption(self, redemption_id: int) -> None:
        """Marks a redemption that never landed failed and returns its receipts to pending."""
        with self._tx() as db:
            db.execute("UPDATE redemptions SET status = 'failed' WHERE id = ?", (redemption_id,))
            db.execute(
                "UPDATE receipts SET redemption_id = NULL WHERE redemption_id = ?",
                (redemption_id,),
            )

    def redemptions(self, status: str | None = None) -> list[Redemption]:
        if status is None:
            rows = self._read("SELECT * FROM redemptions ORDER BY id")
        else:
            rows = self._read("SELECT * FROM redemptions WHERE status = ? ORDER BY id", (status,))
        return [redemption_from_row(r) for r in rows]
