"""InferencePayments: channels, session keys, redeemed and skipped vouchers, payment
splits and usage proofs."""

from __future__ import annotations

import sqlite3

from backend.indexer.abi import DecodedLog
from backend.indexer.projections.core import add_amount, on, sql_model_id, sql_time
from backend.protocol.enums import skip_reason

# IInferencePayments.SkipReason, by value (0, None, is never logged).
# A protocol constant the events do not carry (checked against the contract by the tests).
WITHDRAWAL_WINDOW = 86_400  # an unlocked withdrawal request lapses this long after unlocking


def _ensure_channel(conn: sqlite3.Connection, ev: DecodedLog) -> tuple[str, str]:
    """The channel (payer, node) of ``ev``, created by its first event (ChannelOpened, then
    Deposited, in the deposit's transaction)."""
    key = (ev.args["payer"], ev.args["node"])
    conn.execute(
        "INSERT OR IGNORE INTO channels (payer, node, block_number, opened_at, tx_hash)"
        " VALUES (?, ?, ?, ?, ?)",
        (*key, ev.block_number, ev.block_timestamp, ev.tx_hash),
    )
    return key


CHANNEL = ("payer", "node")


@on("InferencePayments", "ChannelOpened")
def _channel_opened(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    key = _ensure_channel(conn, ev)
    conn.execute(
        "UPDATE channels SET withdraw_delay = ? WHERE payer = ? AND node = ?",
        (ev.args["withdrawDelay"], *key),
    )


@on("InferencePayments", "Deposited")
def _deposited(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    key = _ensure_channel(conn, ev)
    add_amount(conn, "channels", "deposited", CHANNEL, key, ev.args["amount"])
    conn.execute(
        "UPDATE channels SET balance = ? WHERE payer = ? AND node = ?",
        (str(ev.args["balance"]), *key),
    )


@on("InferencePayments", "WithdrawalRequested")
def _withdrawal_requested(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    key = _ensure_channel(conn, ev)
    conn.execute(
        "UPDATE channels SET pending_withdrawal = ?, withdrawal_unlock_at = ?"
        " WHERE payer = ? AND node = ?",
        (str(ev.args["amount"]), sql_time(ev.args["unlockAt"]), *key),
    )


@on("InferencePayments", "WithdrawalCancelled")
def _withdrawal_cancelled(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    conn.execute(
        "UPDATE channels SET pending_withdrawal = '0', withdrawal_unlock_at = 0"
        " WHERE payer = ? AND node = ?",
        (ev.args["payer"], ev.args["node"]),
    )


@on("InferencePayments", "Withdrawn")
def _payer_withdrawn(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    key = _ensure_channel(conn, ev)
    add_amount(conn, "channels", "balance", CHANNEL, key, -ev.args["amount"])
    add_amount(conn, "channels", "withdrawn", CHANNEL, key, ev.args["amount"])
    _withdrawal_cancelled(conn, ev)


@on("InferencePayments", "SessionKeyAuthorized")
def _session_key(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    expiry = sql_time(a["expiry"])
    # A new authorization replaces the key's terms, revoked or not (a key still live can only
    # get more time and allowance: the contract refuses a reduction).
    conn.execute(
        "INSERT INTO session_keys (payer, node, signer, expiry, allowance, valid_until,"
        " block_number, authorized_at, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (payer, node, signer) DO UPDATE SET expiry = excluded.expiry,"
        " allowance = excluded.allowance, valid_until = excluded.valid_until,"
        " revoked_block = NULL, revoked_at = NULL, block_number = excluded.block_number,"
        " authorized_at = excluded.authorized_at, tx_hash = excluded.tx_hash",
        (
            a["payer"], a["node"], a["signer"], expiry, str(a["allowance"]), expiry,
            ev.block_number, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip


@on("InferencePayments", "SessionKeyRevoked")
def _session_key_revoked(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    # The key keeps signing power until validUntil (the revocation + the channel's delay, or
    # its expiry if sooner): the row stays, with its new end. Revoking a key never authorized
    # logs validUntil 0 and changes nothing.
    a = ev.args
    conn.execute(
        "UPDATE session_keys SET valid_until = ?, revoked_block = COALESCE(revoked_block, ?),"
        " revoked_at = CASE WHEN revoked_block IS NULL THEN ? ELSE revoked_at END"
        " WHERE payer = ? AND node = ? AND signer = ?",
        (sql_time(a["validUntil"]), ev.block_number, ev.block_timestamp, a["payer"], a["node"],
         a["signer"]),
    )  # fmt: skip


@on("InferencePayments", "VoucherRedeemed")
def _voucher_redeemed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO redemptions (tx_hash, log_index, payer, node, model_id, cumulative_amount,"
        " paid, shortfall, block_number, redeemed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.tx_hash, ev.log_index, a["payer"], a["node"], sql_model_id(a["modelId"]),
            str(a["cumulativeAmount"]), str(a["paid"]), str(a["shortfall"]), ev.block_number,
            ev.block_timestamp,
        ),
    )  # fmt: skip
    if a["paid"]:  # a voucher paid nothing when its channel is empty (or was never opened)
        key = _ensure_channel(conn, ev)
        add_amount(conn, "channels", "balance", CHANNEL, key, -a["paid"])
        add_amount(conn, "channels", "spent", CHANNEL, key, a["paid"])


@on("InferencePayments", "VoucherSkipped")
def _voucher_skipped(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO skipped_vouchers (tx_hash, log_index, payer, node, model_id, idx, reason,"
        " block_number, skipped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.tx_hash, ev.log_index, a["payer"], a["node"], sql_model_id(a["modelId"]),
            a["index"], skip_reason(a["reason"]), ev.block_number,
            ev.block_timestamp,
        ),
    )  # fmt: skip


@on("InferencePayments", "PaymentSplit")
def _payment_split(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO payment_splits (tx_hash, log_index, model_id, node, developer, amount,"
        " node_share, developer_share, contributors_share, protocol_share, block_number)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.tx_hash, ev.log_index, a["modelId"], a["node"], a["developer"], str(a["amount"]),
            str(a["nodeShare"]), str(a["developerShare"]), str(a["contributorsShare"]),
            str(a["protocolShare"]), ev.block_number,
        ),
    )  # fmt: skip


@on("InferencePayments", "UsageProofRecorded")
def _usage_proof(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO usage_proofs (id, node, receipts_root, receipt_count, receipts_cid, amount,"
        " block_number, recorded_at, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a["proofId"], a["node"], a["receiptsRoot"], a["receiptCount"], a["receiptsCID"],
            str(a["amount"]), ev.block_number, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip
    # The vouchers (paid or skipped) and splits of a redemption are logged before its usage
    # proof, in one tx.
    for table in ("redemptions", "skipped_vouchers", "payment_splits"):
        conn.execute(
            f"UPDATE {table} SET usage_proof_id = ? WHERE tx_hash = ? AND log_index < ?"
            " AND usage_proof_id IS NULL",
            (a["proofId"], ev.tx_hash, ev.log_index),
        )
