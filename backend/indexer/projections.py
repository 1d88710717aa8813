"""The read model: how each protocol event changes the tables derived from the raw events.

Every handler is applied exactly once per stored event, in chain order (block, log index), so
replaying ``events`` from scratch rebuilds the same tables (how a reorg is rolled back).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable

from backend.indexer.abi import DecodedLog

Handler = Callable[[sqlite3.Connection, DecodedLog], None]
HANDLERS: dict[tuple[str, str], Handler] = {}

MODEL_STATUS = {0: "none", 1: "active", 2: "paused", 3: "retired"}
# IInferencePayments.SkipReason, by value (0, None, is never logged).
SKIP_REASONS = {1: "expired", 2: "invalid_signer", 3: "session_key_not_live",
                4: "not_above_redeemed"}  # fmt: skip
# Protocol constants the events do not carry (checked against the contracts by the tests).
WITHDRAWAL_WINDOW = 86_400  # InferencePayments: an unlocked withdrawal request lapses after it
SPLIT_CHANGE_DELAY = 86_400  # ModelRegistry: a split change takes effect this long after
MAX_SQL_INTEGER = 2**63 - 1
PARAMETER_EVENTS = {
    "MinStakeSet": "minStake",
    "UnbondingDelaySet": "unbondingDelay",
    "SlasherSet": "slasher",
    "WithdrawalDelaySet": "withdrawalDelay",
    "TreasurySet": "treasury",
    "ProtocolBpsSet": "protocolBps",
    "ContributorsFloorBpsSet": "contributorsFloorBps",
    "ChallengeWindowSet": "challengeWindow",
    "ChallengeBondSet": "challengeBond",
    "SlashAmountSet": "slashAmount",
    "ClaimPeriodSet": "claimPeriod",
}


def on(contract: str, *events: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for event in events:
            HANDLERS[(contract, event)] = handler
        return handler

    return register


class ProjectionError(ValueError):
    """A stored event that this code's projections cannot apply (say, one logged by an older
    version of its contract, with other arguments)."""


def apply(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    """Applies ``ev`` to the read model (events without a projection only stay raw)."""
    handler = HANDLERS.get((ev.contract, ev.event))
    if handler is not None:
        handler(conn, ev)
    elif ev.event in PARAMETER_EVENTS:
        _set_parameter(conn, ev)


def stored_events(conn: sqlite3.Connection) -> Iterable[DecodedLog]:
    """The stored raw events in chain order."""
    rows = conn.execute(
        "SELECT block_number, block_hash, block_timestamp, tx_hash, log_index, contract,"
        " address, event, args FROM events ORDER BY block_number, log_index"
    )
    for row in rows.fetchall():
        yield DecodedLog(*row[:8], args=json.loads(row[8]))


def replay(conn: sqlite3.Connection) -> None:
    """Applies every stored event to the (empty) read model, in chain order, inside the
    caller's transaction; raises :class:`ProjectionError` for an event it cannot apply."""
    for ev in stored_events(conn):
        try:
            apply(conn, ev)
        except (KeyError, TypeError, ValueError) as why:
            raise ProjectionError(
                f"{ev.contract}.{ev.event} at block {ev.block_number} (tx {ev.tx_hash}, log "
                f"{ev.log_index}) does not fit this version's projection "
                f"({type(why).__name__}: {why})"
            ) from why


def _set_parameter(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    (value,) = ev.args.values()
    conn.execute(
        "INSERT INTO parameters (contract, name, value, block_number) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (contract, name) DO UPDATE SET value = excluded.value, "
        "block_number = excluded.block_number",
        (ev.contract, PARAMETER_EVENTS[ev.event], str(value), ev.block_number),
    )


def _match(where: str | tuple[str, ...], key: object) -> tuple[str, tuple[object, ...]]:
    if isinstance(where, str):
        return f"{where} = ?", (key,)
    assert isinstance(key, tuple) and len(key) == len(where)
    return " AND ".join(f"{column} = ?" for column in where), key


def _amount(
    conn: sqlite3.Connection, table: str, column: str, where: str | tuple[str, ...], key: object
) -> int:
    condition, params = _match(where, key)
    row = conn.execute(f"SELECT {column} FROM {table} WHERE {condition}", params).fetchone()
    return int(row[0]) if row else 0


def _add(
    conn: sqlite3.Connection,
    table: str,
    column: str,
    where: str | tuple[str, ...],
    key: object,
    delta: int,
) -> None:
    """``table.column += delta`` for the row whose ``where`` is ``key`` (amounts are TEXT;
    ``where`` is a column, or a tuple of columns with ``key`` the tuple of their values)."""
    value = _amount(conn, table, column, where, key) + delta
    condition, params = _match(where, key)
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {condition}", (str(value), *params))


def _time(value: int) -> int:
    """A uint64 time as an SQLite integer: times past 2^63 - 1 s (never, in practice) are
    stored as 2^63 - 1."""
    return min(value, MAX_SQL_INTEGER)


def _model_id(value: int) -> int | str:
    """A model id from a voucher: the integer when SQLite can hold it, else its decimal text
    (see ``schema.READ_MODEL_TABLES``)."""
    return value if value <= MAX_SQL_INTEGER else str(value)


# ---------------------------------------------------------------- DatanetRegistry


@on("DatanetRegistry", "DatanetCreated")
def _datanet_created(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO datanets (id, owner, metadata_cid, contribution_bond, min_approved, treasury,"
        " block_number, created_at, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a["datanetId"], a["owner"], a["metadataCID"], str(a["contributionBond"]),
            a["minApproved"], a["treasury"], ev.block_number, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip


@on("DatanetRegistry", "CuratorAdded")
def _curator_added(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO curators (datanet_id, account) VALUES (?, ?)",
        (ev.args["datanetId"], ev.args["curator"]),
    )


@on("DatanetRegistry", "CuratorRemoved")
def _curator_removed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    conn.execute(
        "DELETE FROM curators WHERE datanet_id = ? AND account = ?",
        (ev.args["datanetId"], ev.args["curator"]),
    )


@on("DatanetRegistry", "Contributed")
def _contributed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO contributions (id, datanet_id, contributor, cid, size, bond, status,"
        " block_number, created_at, tx_hash) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
        (
            a["contributionId"], a["datanetId"], a["contributor"], a["cid"], a["size"],
            str(a["bond"]), ev.block_number, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip
    conn.execute(
        "UPDATE datanets SET contribution_count = contribution_count + 1 WHERE id = ?",
        (a["datanetId"],),
    )


@on("DatanetRegistry", "Reviewed")
def _reviewed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    status = "approved" if a["approved"] else "rejected"
    conn.execute(
        "UPDATE contributions SET status = ?, curator = ?, reviewed_block = ?,"
        " reviewed_log_index = ?, reviewed_at = ? WHERE id = ?",
        (status, a["curator"], ev.block_number, ev.log_index, ev.block_timestamp,
         a["contributionId"]),
    )  # fmt: skip
    conn.execute(
        f"UPDATE datanets SET {status}_count = {status}_count + 1 WHERE id = ?", (a["datanetId"],)
    )


@on("DatanetRegistry", "ContributionWithdrawn")
def _contribution_withdrawn(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    # The bond went back to the contributor and the CID is free for anyone to contribute again.
    conn.execute(
        "UPDATE contributions SET status = 'withdrawn', withdrawn_at = ? WHERE id = ?",
        (ev.block_timestamp, ev.args["contributionId"]),
    )


@on("DatanetRegistry", "VersionPublished")
def _version_published(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO versions (datanet_id, version, merkle_root, contribution_count, manifest_cid,"
        " block_number, log_index, published_at, tx_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a["datanetId"], a["version"], a["merkleRoot"], a["contributionCount"],
            a["manifestCID"], ev.block_number, ev.log_index, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip
    conn.execute(
        "UPDATE datanets SET version_count = ? WHERE id = ?", (a["version"], a["datanetId"])
    )


# ---------------------------------------------------------------- ModelRegistry


@on("ModelRegistry", "ModelRegistered")
def _model_registered(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO models (id, developer, metadata_cid, base_model_cid, attributor, status,"
        " block_number, created_at, tx_hash) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?)",
        (
            a["modelId"], a["developer"], a["metadataCID"], a["baseModelCID"], a["attributor"],
            ev.block_number, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip


@on("ModelRegistry", "ModelVersionPublished")
def _model_version(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO model_versions (model_id, version, adapter_cid, training_manifest_cid,"
        " datanet_id, datanet_version, block_number, published_at, tx_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a["modelId"], a["version"], a["adapterCID"], a["trainingManifestCID"],
            a["datanetId"], a["datanetVersion"], ev.block_number, ev.block_timestamp, ev.tx_hash,
        ),
    )  # fmt: skip
    conn.execute("UPDATE models SET version_count = ? WHERE id = ?", (a["version"], a["modelId"]))


@on("ModelRegistry", "ModelStatusChanged")
def _model_status(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    status = MODEL_STATUS.get(ev.args["status"], str(ev.args["status"]))
    conn.execute("UPDATE models SET status = ? WHERE id = ?", (status, ev.args["modelId"]))


@on("ModelRegistry", "PricingSet")
def _pricing(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "UPDATE models SET price_per_request = ?, price_per_token = ? WHERE id = ?",
        (str(a["perRequest"]), str(a["perToken"]), a["modelId"]),
    )


@on("ModelRegistry", "SplitSet")
def _split(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "UPDATE models SET split_developer = ?, split_contributors = ?, split_node = ?,"
        " split_protocol = ? WHERE id = ?",
        (a["developer"], a["contributors"], a["node"], a["protocol"], a["modelId"]),
    )


@on("ModelRegistry", "SplitScheduled")
def _split_scheduled(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    # The registry schedules at block time + SPLIT_CHANGE_DELAY, exactly: that gives the block
    # time when the node did not report it.
    now = ev.block_timestamp
    if now is None:
        now = a["effectiveAt"] - SPLIT_CHANGE_DELAY
    # A change whose time had come is the split now (the registry makes it so before
    # scheduling the next one); one whose time had not come is replaced, never in effect.
    conn.execute(
        "UPDATE models SET split_developer = scheduled_developer,"
        " split_contributors = scheduled_contributors, split_node = scheduled_node,"
        " split_protocol = scheduled_protocol WHERE id = ? AND scheduled_at <= ?",
        (a["modelId"], now),
    )
    conn.execute(
        "UPDATE models SET scheduled_developer = ?, scheduled_contributors = ?,"
        " scheduled_node = ?, scheduled_protocol = ?, scheduled_at = ? WHERE id = ?",
        (a["developer"], a["contributors"], a["node"], a["protocol"], _time(a["effectiveAt"]),
         a["modelId"]),
    )  # fmt: skip


@on("ModelRegistry", "AttributorSet")
def _attributor(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    conn.execute(
        "UPDATE models SET attributor = ? WHERE id = ?", (ev.args["attributor"], ev.args["modelId"])
    )


# ---------------------------------------------------------------- NodeRegistry


def _ensure_node(conn: sqlite3.Connection, node: str, block: int) -> None:
    conn.execute("INSERT OR IGNORE INTO nodes (address, block_number) VALUES (?, ?)", (node, block))


@on("NodeRegistry", "Staked")
def _staked(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    _ensure_node(conn, ev.args["node"], ev.block_number)
    conn.execute(
        "UPDATE nodes SET bonded = ? WHERE address = ?", (str(ev.args["bonded"]), ev.args["node"])
    )


@on("NodeRegistry", "EndpointSet")
def _endpoint(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    _ensure_node(conn, ev.args["node"], ev.block_number)
    conn.execute(
        "UPDATE nodes SET endpoint = ? WHERE address = ?", (ev.args["endpoint"], ev.args["node"])
    )


@on("NodeRegistry", "UnbondingRequested")
def _unbonding(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    node, amount = ev.args["node"], ev.args["amount"]
    _ensure_node(conn, node, ev.block_number)
    _add(conn, "nodes", "bonded", "address", node, -amount)
    _add(conn, "nodes", "unbonding", "address", node, amount)
    conn.execute(
        "UPDATE nodes SET unbonding_unlock_at = ? WHERE address = ?", (ev.args["unlockAt"], node)
    )


@on("NodeRegistry", "Unbonded")
def _unbonded(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    conn.execute(
        "UPDATE nodes SET unbonding = '0', unbonding_unlock_at = 0 WHERE address = ?",
        (ev.args["node"],),
    )


@on("NodeRegistry", "StakeHeldUntil")
def _stake_held(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    _ensure_node(conn, ev.args["node"], ev.block_number)
    conn.execute(
        "UPDATE nodes SET held_until = ? WHERE address = ?",
        (ev.args["heldUntil"], ev.args["node"]),
    )


@on("NodeRegistry", "DisputeOpened", "DisputeClosed")
def _disputes(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    _ensure_node(conn, ev.args["node"], ev.block_number)
    conn.execute(
        "UPDATE nodes SET open_disputes = ? WHERE address = ?",
        (ev.args["openDisputes"], ev.args["node"]),
    )


@on("NodeRegistry", "Slashed")
def _slashed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    node, amount = ev.args["node"], ev.args["amount"]
    _ensure_node(conn, node, ev.block_number)
    bonded = _amount(conn, "nodes", "bonded", "address", node)
    from_bonded = min(amount, bonded)  # the registry slashes the bonded stake first
    _add(conn, "nodes", "bonded", "address", node, -from_bonded)
    _add(conn, "nodes", "unbonding", "address", node, -(amount - from_bonded))
    _add(conn, "nodes", "slashed", "address", node, amount)


# ---------------------------------------------------------------- InferencePayments


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
    _add(conn, "channels", "deposited", CHANNEL, key, ev.args["amount"])
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
        (str(ev.args["amount"]), _time(ev.args["unlockAt"]), *key),
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
    _add(conn, "channels", "balance", CHANNEL, key, -ev.args["amount"])
    _add(conn, "channels", "withdrawn", CHANNEL, key, ev.args["amount"])
    _withdrawal_cancelled(conn, ev)


@on("InferencePayments", "SessionKeyAuthorized")
def _session_key(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    expiry = _time(a["expiry"])
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
        (_time(a["validUntil"]), ev.block_number, ev.block_timestamp, a["payer"], a["node"],
         a["signer"]),
    )  # fmt: skip


@on("InferencePayments", "VoucherRedeemed")
def _voucher_redeemed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO redemptions (tx_hash, log_index, payer, node, model_id, cumulative_amount,"
        " paid, shortfall, block_number, redeemed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.tx_hash, ev.log_index, a["payer"], a["node"], _model_id(a["modelId"]),
            str(a["cumulativeAmount"]), str(a["paid"]), str(a["shortfall"]), ev.block_number,
            ev.block_timestamp,
        ),
    )  # fmt: skip
    if a["paid"]:  # a voucher paid nothing when its channel is empty (or was never opened)
        key = _ensure_channel(conn, ev)
        _add(conn, "channels", "balance", CHANNEL, key, -a["paid"])
        _add(conn, "channels", "spent", CHANNEL, key, a["paid"])


@on("InferencePayments", "VoucherSkipped")
def _voucher_skipped(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO skipped_vouchers (tx_hash, log_index, payer, node, model_id, idx, reason,"
        " block_number, skipped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.tx_hash, ev.log_index, a["payer"], a["node"], _model_id(a["modelId"]),
            a["index"], SKIP_REASONS.get(a["reason"], str(a["reason"])), ev.block_number,
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


# ---------------------------------------------------------------- AttributionRewards


def _ensure_pool(conn: sqlite3.Connection, model_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO pools (model_id) VALUES (?)", (model_id,))


@on("AttributionRewards", "PoolFunded")
def _pool_funded(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    model_id, amount = ev.args["modelId"], ev.args["amount"]
    _ensure_pool(conn, model_id)
    _add(conn, "pools", "funded", "model_id", model_id, amount)
    _add(conn, "pools", "unallocated", "model_id", model_id, amount)


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
    _add(conn, "pools", "unallocated", "model_id", a["modelId"], -a["total"])


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
            _add(conn, "pools", "unallocated", "model_id", epoch[0], int(epoch[1]))


@on("AttributionRewards", "EpochExpired")
def _epoch_expired(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args  # the unclaimed rest went back to the model's pool
    conn.execute(
        "UPDATE epochs SET status = 'expired', swept = ?, swept_at = ? WHERE id = ?",
        (str(a["amount"]), ev.block_timestamp, a["epochId"]),
    )
    _ensure_pool(conn, a["modelId"])
    _add(conn, "pools", "unallocated", "model_id", a["modelId"], a["amount"])


@on("AttributionRewards", "Claimed")
def _claimed(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    a = ev.args
    conn.execute(
        "INSERT INTO claims (epoch_id, idx, account, amount, block_number, claimed_at, tx_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (a["epochId"], a["index"], a["account"], str(a["amount"]), ev.block_number,
         ev.block_timestamp, ev.tx_hash),
    )  # fmt: skip
    _add(conn, "epochs", "claimed", "id", a["epochId"], a["amount"])
    row = conn.execute("SELECT model_id FROM epochs WHERE id = ?", (a["epochId"],)).fetchone()
    if row is not None:
        _add(conn, "pools", "claimed", "model_id", row[0], a["amount"])
