"""DatanetRegistry: Datanets, their curators, contributions and versions."""

from __future__ import annotations

import sqlite3

from backend.indexer.abi import DecodedLog
from backend.indexer.projections.core import on


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
