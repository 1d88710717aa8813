"""Service health and how far the index is."""

import json

from fastapi import APIRouter

from backend.api.deps import DbDep, SettingsDep
from backend.api.queries import chain_time
from backend.api.schemas import Status

router = APIRouter(tags=["status"])


@router.get("/health", response_model=dict[str, str])
def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@router.get("/status", response_model=Status)
def status(db: DbDep, settings: SettingsDep) -> Status:
    """The indexed chain and deployment, the last block indexed, the event count, and the
    JSON-RPC URL offered to browsers."""
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    deployment = json.loads(meta.get("deployment", "{}"))
    cursor = meta.get("cursor")
    return Status(
        chain_id=deployment.get("chain_id"),
        contracts=deployment.get("contracts", {}),
        block=int(cursor) if cursor is not None else None,
        block_timestamp=chain_time(db),
        events=db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
        rpc_url=settings.public_rpc_url,
    )
