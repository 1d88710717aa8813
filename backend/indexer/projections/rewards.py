"""AttributionRewards: each model's contributors' pool, epochs, challenges and claims."""

from __future__ import annotations

import sqlite3

from backend.indexer.abi import DecodedLog
from backend.indexer.projections.core import add_amount, on


def _ensure_pool(conn: sqlite3.Connection, model_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO pools (model_id) VALUES (?)", (model_id,))


@on("AttributionRewards", "PoolFunded")
def _pool_funded(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    model_id, amount = ev.args["modelId"], ev.args["amount"]
    _ensure_pool(conn, model_id)
    add_amount(conn, "pools", "funded", "model_id", model_id, amount)
    add_amount(conn, "pools", "unallocated", "model_id", model_id, amount)


@on("AttributionRewards", "EpochPosted")
def _epoch_posted(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    # The claim period is fixed at posting from the contract's parameter (ClaimPeriodSet),
    # which the event does not repeat.
    period = conn.execute(
        "SELECT value FROM parameters WHERE contract = ? AND name = 'claimPeriod'",
        (ev.contract,),
    ).fetchone()
    claim_ends_at = a["challengeEndsAt"] + int(period[0]) if period else None
    conn.execute(
        "INSERT INTO epochs (id, model_id, poster, merkle_root, total, report_cid,"
        " challenge_ends_at, claim_ends_at, status, block_number, posted_at, tx_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'posted', ?, ?, ?)",
        (
            a["epochId"], a["modelId"], a["poster"], a["merkleRoot"], str(a["total"]),
            a["reportCID"], a["challengeEndsAt"], claim_ends_at, ev.block_number,
            ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip
    _ensure_pool(conn, a["modelId"])
    add_amount(conn, "pools", "unallocated", "model_id", a["modelId"], -a["total"])


@on("AttributionRewards", "EpochChallenged")
def _epoch_challenged(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "UPDATE epochs SET status = 'challenged', challenger = ?, challenge_bond = ?,"
        " reason_cid = ? WHERE id = ?",
        (a["challenger"], str(a["bond"]), a["reasonCID"], a["epochId"]),
    )


@on("AttributionRewards", "ChallengeResolved")
def _challenge_resolved(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    status = "rejected" if a["upheld"] else "posted"
    conn.execute(
        "UPDATE epochs SET status = ?, slashed = ? WHERE id = ?",
        (status, str(a["slashed"]), a["epochId"]),
    )
    if a["upheld"]:  # the epoch's total goes back to its model's pool
        row = conn.execute("SELECT model_id, total FROM epochs WHERE id = ?", (a["epochId"],))
        epoch = row.fetchone()
        if epoch is not None:
            add_amount(conn, "pools", "unallocated", "model_id", epoch[0], int(epoch[1]))


@on("AttributionRewards", "EpochExpired")
def _epoch_expired(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args  # the unclaimed rest went back to the model's pool
    conn.execute(
        "UPDATE epochs SET status = 'expired', swept = ?, swept_at = ? WHERE id = ?",
        (str(a["amount"]), ev.block_timestamp, a["epochId"]),
    )
    _ensure_pool(conn, a["modelId"])
    add_amount(conn, "pools", "unallocated", "model_id", a["modelId"], a["amount"])


@on("AttributionRewards", "Claimed")
def _claimed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO claims (epoch_id, idx, account, amount, block_number, claimed_at, tx_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (a["epochId"], a["index"], a["account"], str(a["amount"]), ev.block_number,
         ev.block_timestamp, ev.tx_hash),
    )  # fmt: skip
    add_amount(conn, "epochs", "claimed", "id", a["epochId"], a["amount"])
    row = conn.execute("SELECT model_id FROM epochs WHERE id = ?", (a["epochId"],)).fetchone()
    if row is not None:
        add_amount(conn, "pools", "claimed", "model_id", row[0], a["amount"])
