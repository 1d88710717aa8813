"""NodeRegistry: each node's stake (bonded, unbonding, slashed), endpoint and holds."""

from __future__ import annotations

import sqlite3

from backend.indexer.abi import DecodedLog
from backend.indexer.projections.core import add_amount, on, read_amount


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
    add_amount(conn, "nodes", "bonded", "address", node, -amount)
    add_amount(conn, "nodes", "unbonding", "address", node, amount)
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
    bonded = read_amount(conn, "nodes", "bonded", "address", node)
    from_bonded = min(amount, bonded)  # the registry slashes the bonded stake first
    add_amount(conn, "nodes", "bonded", "address", node, -from_bonded)
    add_amount(conn, "nodes", "unbonding", "address", node, -(amount - from_bonded))
    add_amount(conn, "nodes", "slashed", "address", node, amount)
