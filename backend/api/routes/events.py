"""The raw protocol events, for auditors."""

import json
import sqlite3
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import MAX_ID, DbDep, PageDep
from backend.api.errors import responses
from backend.api.queries import page_of
from backend.api.schemas import EventPublic, Page

router = APIRouter(prefix="/events", tags=["events"], responses=responses(422))
Block = Annotated[int | None, Query(ge=0, le=MAX_ID)]
Name = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_]+$")]


@router.get("", response_model=Page[EventPublic])
def list_events(
    db: DbDep,
    page: PageDep,
    contract: Name = None,
    event: Name = None,
    from_block: Block = None,
    to_block: Block = None,
) -> Page[EventPublic]:
    """Decoded events in chain order, optionally by contract, event name and block range."""
    filters = {
        "contract": contract,
        "event": event,
        "block_number >= ?": from_block,
        "block_number <= ?": to_block,
    }
    return page_of(
        db, "events", page, to_event, filters=filters, order="block_number, log_index",
        columns="block_number, block_hash, block_timestamp, tx_hash, log_index, contract,"
        " address, event, args",
    )  # fmt: skip


def to_event(row: sqlite3.Row) -> EventPublic:
    return EventPublic(**{**dict(row), "args": json.loads(row["args"])})
