"""Payment channels (one per payer and node), payers' totals, session keys, voucher redemptions
and the vouchers redemptions skipped."""

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query

from backend.api.deps import AddressPath, AddressQuery, DbDep, IdQuery, PageDep
from backend.api.errors import not_found, responses
from backend.api.queries import chain_time, page_of, require_one
from backend.api.schemas import (
    ChannelDetail,
    ChannelPublic,
    Page,
    PayerAccountDetail,
    PayerAccountPublic,
    RedemptionPublic,
    SessionKeyPublic,
    SkippedVoucherPublic,
    SkipReason,
    WithdrawalStatus,
)
from backend.indexer.projections import WITHDRAWAL_WINDOW

router = APIRouter(prefix="/payments", tags=["payments"], responses=responses(404, 422))
CHANNEL_ORDER = "block_number, payer, node"
EVENT_ORDER = "block_number, log_index"
TOTALS = ("balance", "deposited", "spent", "withdrawn", "pending_withdrawal")


def withdrawal_status(
    channel: sqlite3.Row | Mapping[str, Any], now: int | None
) -> WithdrawalStatus:
    """The channel's withdrawal request as the contract would judge it at time ``now``."""
    if int(channel["pending_withdrawal"]) == 0:
        return WithdrawalStatus.NONE
    unlock_at = channel["withdrawal_unlock_at"]
    if now is None or now < unlock_at:
        return WithdrawalStatus.LOCKED
    if now > unlock_at + WITHDRAWAL_WINDOW:
        return WithdrawalStatus.LAPSED
    return WithdrawalStatus.WITHDRAWABLE


def to_channel(row: sqlite3.Row, now: int | None) -> ChannelPublic:
    pending = int(row["pending_withdrawal"]) != 0
    return ChannelPublic(
        **dict(row),
        withdrawal_lapses_at=row["withdrawal_unlock_at"] + WITHDRAWAL_WINDOW if pending else 0,
        withdrawal_status=withdrawal_status(row, now),
    )


def to_session_key(row: sqlite3.Row, now: int | None) -> SessionKeyPublic:
    return SessionKeyPublic(
        **{k: row[k] for k in SessionKeyPublic.model_fields if k not in ("revoked", "live")},
        revoked=row["revoked_block"] is not None,
        live=now is not None and row["valid_until"] >= now,
    )


def channel_details(
    db: sqlite3.Connection, channels: list[sqlite3.Row], now: int | None
) -> list[ChannelDetail]:
    """The channels with their session keys (two queries, whatever their number)."""
    keys: dict[tuple[str, str], list[SessionKeyPublic]] = defaultdict(list)
    payers = sorted({c["payer"] for c in channels})
    if payers:
        marks = ",".join("?" * len(payers))
        rows = db.execute(
            f"SELECT * FROM session_keys WHERE payer IN ({marks}) ORDER BY block_number, signer",
            payers,
        )
        for row in rows.fetchall():
            keys[(row["payer"], row["node"])].append(to_session_key(row, now))
    return [
        ChannelDetail(**to_channel(c, now).model_dump(), session_keys=keys[(c["payer"], c["node"])])
        for c in channels
    ]


def totals(payer: str, channels: list[sqlite3.Row]) -> dict[str, object]:
    """A payer's totals over ``channels`` (amounts are summed exactly, as integers)."""
    sums = {name: str(sum(int(c[name]) for c in channels)) for name in TOTALS}
    return {"payer": payer, "channel_count": len(channels), **sums}


@router.get("/accounts", response_model=Page[PayerAccountPublic])
def list_accounts(db: DbDep, page: PageDep) -> Page[PayerAccountPublic]:
    """Payers with their totals over their channels, in order of their first deposit."""
    total = db.execute("SELECT COUNT(DISTINCT payer) FROM channels").fetchone()[0]
    payers = [
        row[0]
        for row in db.execute(
            "SELECT payer FROM channels GROUP BY payer ORDER BY MIN(block_number), payer"
            " LIMIT ? OFFSET ?",
            (page.limit, page.offset),
        )
    ]
    by_payer: dict[str, list[sqlite3.Row]] = defaultdict(list)
    if payers:
        marks = ",".join("?" * len(payers))
        for row in db.execute(f"SELECT * FROM channels WHERE payer IN ({marks})", payers):
            by_payer[row["payer"]].append(row)
    items = [PayerAccountPublic.model_validate(totals(p, by_payer[p])) for p in payers]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/accounts/{payer}", response_model=PayerAccountDetail)
def get_account(db: DbDep, payer: AddressPath) -> PayerAccountDetail:
    """One payer: its totals, and each of its channels with its session keys."""
    channels = db.execute(
        f"SELECT * FROM channels WHERE payer = ? ORDER BY {CHANNEL_ORDER}", (payer,)
    ).fetchall()
    if not channels:
        raise not_found(f"payer account {payer}")
    return PayerAccountDetail.model_validate(
        {**totals(payer, channels), "channels": channel_details(db, channels, chain_time(db))}
    )


@router.get("/channels", response_model=Page[ChannelPublic])
def list_channels(
    db: DbDep, page: PageDep, payer: AddressQuery = "", node: AddressQuery = ""
) -> Page[ChannelPublic]:
    """Payment channels in the order they were opened, optionally by payer or node (a node's
    channels are the deposits that back its service)."""
    now = chain_time(db)
    filters = {"payer": payer or None, "node": node or None}
    return page_of(
        db, "channels", page, lambda r: to_channel(r, now), filters=filters, order=CHANNEL_ORDER
    )


@router.get("/channels/{payer}/{node}", response_model=ChannelDetail)
def get_channel(db: DbDep, payer: AddressPath, node: AddressPath) -> ChannelDetail:
    """One channel: balance, withdrawal, and its session keys (revoked ones until they are
    replaced, with the time they stay valid until)."""
    what = f"channel of payer {payer} with node {node}"
    sql = "SELECT * FROM channels WHERE payer = ? AND node = ?"
    row = require_one(db, what, sql, payer, node)
    return channel_details(db, [row], chain_time(db))[0]


@router.get("/redemptions", response_model=Page[RedemptionPublic])
def list_redemptions(
    db: DbDep,
    page: PageDep,
    payer: AddressQuery = "",
    node: AddressQuery = "",
    model_id: IdQuery = None,
) -> Page[RedemptionPublic]:
    """Redeemed vouchers, oldest first, optionally by payer, node or model."""
    filters = {"payer": payer or None, "node": node or None, "model_id": model_id}
    return page_of(db, "redemptions", page, to_redemption, filters=filters, order=EVENT_ORDER)


@router.get("/skipped-vouchers", response_model=Page[SkippedVoucherPublic])
def list_skipped_vouchers(
    db: DbDep,
    page: PageDep,
    node: AddressQuery = "",
    payer: AddressQuery = "",
    model_id: IdQuery = None,
    reason: Annotated[SkipReason | None, Query()] = None,
) -> Page[SkippedVoucherPublic]:
    """Vouchers that redemptions submitted but did not pay (expired, a signer that is not the
    payer nor a live session key of the channel, or not above what was redeemed), oldest
    first, optionally by node, payer, model or reason."""
    filters = {"node": node or None, "payer": payer or None, "model_id": model_id,
               "reason": reason}  # fmt: skip
    return page_of(db, "skipped_vouchers", page, to_skipped, filters=filters, order=EVENT_ORDER)


def to_redemption(row: sqlite3.Row) -> RedemptionPublic:
    return RedemptionPublic.model_validate(dict(row))


def to_skipped(row: sqlite3.Row) -> SkippedVoucherPublic:
    return SkippedVoucherPublic.model_validate({**dict(row), "index": row["idx"]})
