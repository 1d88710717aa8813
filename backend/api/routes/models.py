"""Registered models and their adapter versions."""

import sqlite3

from fastapi import APIRouter

from backend.api.deps import AddressQuery, DbDep, IdPath, IdQuery, PageDep
from backend.api.errors import not_found, responses
from backend.api.queries import chain_time, fetch_one, page_of, require_one
from backend.api.schemas import (
    ModelPublic,
    ModelVersionPublic,
    Page,
    Pricing,
    ScheduledSplit,
    Split,
)

router = APIRouter(prefix="/models", tags=["models"], responses=responses(404, 422))


def to_model(row: sqlite3.Row, now: int | None) -> ModelPublic:
    """The model as of time ``now``: a scheduled split whose time has come is the split."""
    split = Split(developer=row["split_developer"], contributors=row["split_contributors"],
                  node=row["split_node"], protocol=row["split_protocol"])  # fmt: skip
    scheduled = None
    if row["scheduled_at"] is not None:
        scheduled = ScheduledSplit(
            developer=row["scheduled_developer"], contributors=row["scheduled_contributors"],
            node=row["scheduled_node"], protocol=row["scheduled_protocol"],
            effective_at=row["scheduled_at"],
        )  # fmt: skip
        if now is not None and now >= scheduled.effective_at:
            split, scheduled = Split(**scheduled.model_dump(exclude={"effective_at"})), None
    return ModelPublic(
        **{k: row[k] for k in ("id", "developer", "metadata_cid", "base_model_cid", "attributor",
                               "status", "version_count", "block_number", "created_at",
                               "tx_hash")},
        pricing=Pricing(per_request=row["price_per_request"], per_token=row["price_per_token"]),
        split=split,
        scheduled_split=scheduled,
    )  # fmt: skip


def require_model(db: sqlite3.Connection, model_id: int) -> sqlite3.Row:
    return require_one(db, f"model {model_id}", "SELECT * FROM models WHERE id = ?", model_id)


@router.get("", response_model=Page[ModelPublic])
def list_models(
    db: DbDep, page: PageDep, developer: AddressQuery = "", datanet_id: IdQuery = None
) -> Page[ModelPublic]:
    """Models, oldest first; optionally by developer or by a Datanet one of its versions was
    trained on."""
    filters = {
        "developer": developer or None,
        "id IN (SELECT model_id FROM model_versions WHERE datanet_id = ?)": datanet_id,
    }
    now = chain_time(db)
    return page_of(db, "models", page, lambda r: to_model(r, now), filters=filters, order="id")


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(db: DbDep, model_id: IdPath) -> ModelPublic:
    """One model: developer, status, pricing, the split in effect and any scheduled change."""
    return to_model(require_model(db, model_id), chain_time(db))


@router.get("/{model_id}/versions", response_model=Page[ModelVersionPublic])
def list_model_versions(db: DbDep, page: PageDep, model_id: IdPath) -> Page[ModelVersionPublic]:
    """A model's adapter versions, oldest first."""
    require_model(db, model_id)
    filters = {"model_id": model_id}
    return page_of(db, "model_versions", page, to_model_version, filters=filters, order="version")


@router.get("/{model_id}/versions/{version}", response_model=ModelVersionPublic)
def get_model_version(db: DbDep, model_id: IdPath, version: IdPath) -> ModelVersionPublic:
    """One adapter version: its adapter, training manifest and Datanet version."""
    row = fetch_one(
        db, "SELECT * FROM model_versions WHERE model_id = ? AND version = ?", model_id, version
    )
    if row is None:
        require_model(db, model_id)
        raise not_found(f"version {version} of model {model_id}")
    return to_model_version(row)


def to_model_version(row: sqlite3.Row) -> ModelVersionPublic:
    return ModelVersionPublic.model_validate(dict(row))
