"""Datanets and their contributions."""

import sqlite3
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import AddressQuery, DbDep, IdPath, PageDep
from backend.api.errors import responses
from backend.api.queries import page_of, require_one
from backend.api.routes.contributions import ContributionStatus, page_of_contributions
from backend.api.schemas import ContributionPublic, DatanetDetail, DatanetPublic, Page

router = APIRouter(prefix="/datanets", tags=["datanets"], responses=responses(404, 422))


def to_datanet(row: sqlite3.Row) -> DatanetPublic:
    data = dict(row)
    data["pending_count"] = (
        row["contribution_count"] - row["approved_count"] - row["rejected_count"]
    )
    return DatanetPublic.model_validate(data)


def require_datanet(db: sqlite3.Connection, datanet_id: int) -> sqlite3.Row:
    sql = "SELECT * FROM datanets WHERE id = ?"
    return require_one(db, f"datanet {datanet_id}", sql, datanet_id)


@router.get("", response_model=Page[DatanetPublic])
def list_datanets(db: DbDep, page: PageDep, owner: AddressQuery = "") -> Page[DatanetPublic]:
    """Datanets, oldest first."""
    filters = {"owner": owner or None}
    return page_of(db, "datanets", page, to_datanet, filters=filters, order="id")


@router.get("/{datanet_id}", response_model=DatanetDetail)
def get_datanet(db: DbDep, datanet_id: IdPath) -> DatanetDetail:
    """One Datanet, with its curators."""
    row = require_datanet(db, datanet_id)
    rows = db.execute(
        "SELECT account FROM curators WHERE datanet_id = ? ORDER BY account", (datanet_id,)
    )
    curators = [r[0] for r in rows]
    return DatanetDetail(**to_datanet(row).model_dump(), curators=curators)


@router.get("/{datanet_id}/contributions", response_model=Page[ContributionPublic])
def list_datanet_contributions(
    db: DbDep,
    page: PageDep,
    datanet_id: IdPath,
    status: Annotated[ContributionStatus | None, Query()] = None,
    contributor: AddressQuery = "",
) -> Page[ContributionPublic]:
    """A Datanet's contributions in id order, optionally by status or contributor."""
    require_datanet(db, datanet_id)
    return page_of_contributions(db, page, datanet_id, status, contributor)
