"""Inference nodes: stake, endpoint, slashing."""

import sqlite3

from fastapi import APIRouter

from backend.api.deps import AddressPath, DbDep, PageDep
from backend.api.errors import responses
from backend.api.queries import fetch_one, page_of, require_one
from backend.api.schemas import NodePublic, Page

router = APIRouter(prefix="/nodes", tags=["nodes"], responses=responses(404, 422))


def min_stake(db: sqlite3.Connection) -> int:
    row = fetch_one(
        db, "SELECT value FROM parameters WHERE contract = 'NodeRegistry' AND name = 'minStake'"
    )
    return int(row[0]) if row is not None else 0


def to_node(row: sqlite3.Row, minimum: int) -> NodePublic:
    bonded = int(row["bonded"])
    fields = {k: row[k] for k in NodePublic.model_fields if k != "active"}
    return NodePublic(**fields, active=bonded > 0 and bonded >= minimum)


@router.get("", response_model=Page[NodePublic])
def list_nodes(db: DbDep, page: PageDep) -> Page[NodePublic]:
    """Nodes that ever staked, in order of their first stake."""
    minimum = min_stake(db)
    return page_of(db, "nodes", page, lambda r: to_node(r, minimum), order="block_number, address")


@router.get("/{address}", response_model=NodePublic)
def get_node(db: DbDep, address: AddressPath) -> NodePublic:
    """One node."""
    row = require_one(db, f"node {address}", "SELECT * FROM nodes WHERE address = ?", address)
    return to_node(row, min_stake(db))
