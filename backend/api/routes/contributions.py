"""Contributions across Datanets."""

import sqlite3
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import AddressQuery, DbDep, IdPath, IdQuery, PageDep
from backend.api.errors import not_found, responses
from backend.api.queries import fetch_one, fetch_page
from backend.api.schemas import ContributionPublic, Page

router = APIRouter(prefix="/contributions", tags=["contributions"], responses=responses(404, 422))


class ContributionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # unreviewed past the review timeout, taken back with its bond


def to_contribution(row: sqlite3.Row) -> ContributionPublic:
    return ContributionPublic.model_validate(dict(row))


@router.get("", response_model=Page[ContributionPublic])
def list_contributions(
    db: DbDep,
    page: PageDep,
    datanet_id: IdQuery = None,
    status: Annotated[ContributionStatus | None, Query()] = None,
    contributor: AddressQuery = "",
) -> Page[ContributionPublic]:
    """Contributions in id order, optionally by Datanet, status or contributor."""
    filters = {"datanet_id": datanet_id, "status": status, "contributor": contributor or None}
    rows, total = fetch_page(db, "contributions", page, filters=filters, order="id")
    return Page(items=[to_contribution(r) for r in rows], total=total, limit=page.limit,
                offset=page.offset)  # fmt: skip


@router.get("/{contribution_id}", response_model=ContributionPublic)
def get_contribution(db: DbDep, contribution_id: IdPath) -> ContributionPublic:
    """One contribution."""
    row = fetch_one(db, "SELECT * FROM contributions WHERE id = ?", contribution_id)
    if row is None:
        raise not_found(f"contribution {contribution_id}")
    return to_contribution(row)
