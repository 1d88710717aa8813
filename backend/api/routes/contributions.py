"""Contributions across Datanets."""

import sqlite3
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import AddressQuery, DbDep, IdPath, IdQuery, PageDep, PageRequest
from backend.api.errors import responses
from backend.api.queries import page_of, require_one
from backend.api.schemas import ContributionPublic, Page

router = APIRouter(prefix="/contributions", tags=["contributions"], responses=responses(404, 422))


class ContributionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # unreviewed past the review timeout, taken back with its bond


def to_contribution(row: sqlite3.Row) -> ContributionPublic:
    return ContributionPublic.model_validate(dict(row))


def page_of_contributions(
    db: sqlite3.Connection,
    page: PageRequest,
    datanet_id: int | None,
    status: ContributionStatus | None,
    contributor: str,
) -> Page[ContributionPublic]:
    """Contributions in id order, by any of Datanet, status and contributor ("" for any)."""
    filters = {"datanet_id": datanet_id, "status": status, "contributor": contributor or None}
    return page_of(db, "contributions", page, to_contribution, filters=filters, order="id")


@router.get("", response_model=Page[ContributionPublic])
def list_contributions(
    db: DbDep,
    page: PageDep,
    datanet_id: IdQuery = None,
    status: Annotated[ContributionStatus | None, Query()] = None,
    contributor: AddressQuery = "",
) -> Page[ContributionPublic]:
    """Contributions in id order, optionally by Datanet, status or contributor."""
    return page_of_contributions(db, page, datanet_id, status, contributor)


@router.get("/{contribution_id}", response_model=ContributionPublic)
def get_contribution(db: DbDep, contribution_id: IdPath) -> ContributionPublic:
    """One contribution."""
    what = f"contribution {contribution_id}"
    sql = "SELECT * FROM contributions WHERE id = ?"
    return to_contribution(require_one(db, what, sql, contribution_id))
