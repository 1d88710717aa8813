"""ModelRegistry: models, their versions, status, pricing, splits and attributor."""

from __future__ import annotations

import sqlite3

from backend.indexer.abi import DecodedLog
from backend.indexer.projections.core import on, sql_time
from backend.protocol.enums import ModelStatus

# A protocol constant the events do not carry (checked against the contract by the tests).
SPLIT_CHANGE_DELAY = 86_400  # a split change takes effect this long after it is scheduled


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
    status = ModelStatus(ev.args["status"]).name.lower()
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
        (a["developer"], a["contributors"], a["node"], a["protocol"], sql_time(a["effectiveAt"]),
         a["modelId"]),
    )  # fmt: skip


@on("ModelRegistry", "AttributorSet")
def _attributor(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    conn.execute(
        "UPDATE models SET attributor = ? WHERE id = ?", (ev.args["attributor"], ev.args["modelId"])
    )
