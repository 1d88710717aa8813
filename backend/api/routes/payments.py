"""Payer accounts and voucher redemptions."""

from fastapi import APIRouter

from backend.api.deps import AddressPath, AddressQuery, DbDep, IdQuery, PageDep
from backend.api.errors import not_found, responses
from backend.api.queries import fetch_one, fetch_page
from backend.api.schemas import (
    Page,
    PayerAccountDetail,
    PayerAccountPublic,
    RedemptionPublic,
    SessionKey,
)

router = APIRouter(prefix="/payments", tags=["payments"], responses=responses(404, 422))


@router.get("/accounts", response_model=Page[PayerAccountPublic])
def list_accounts(db: DbDep, page: PageDep) -> Page[PayerAccountPublic]:
    """Payer accounts, in order of their first deposit."""
    rows, total = fetch_page(db, "payer_accounts", page, order="block_number, payer")
    return Page(items=[PayerAccountPublic.model_validate(dict(r)) for r in rows], total=total,
                limit=page.limit, offset=page.offset)  # fmt: skip


@router.get("/accounts/{payer}", response_model=PayerAccountDetail)
def get_account(db: DbDep, payer: AddressPath) -> PayerAccountDetail:
    """One payer's balance, pending withdrawal and session keys."""
    row = fetch_one(db, "SELECT * FROM payer_accounts WHERE payer = ?", payer)
    if row is None:
        raise not_found(f"payer account {payer}")
    keys = db.execute(
        "SELECT signer, expiry FROM session_keys WHERE payer = ? ORDER BY signer", (payer,)
    ).fetchall()
    return PayerAccountDetail(
        **dict(row), session_keys=[SessionKey(signer=k[0], expiry=k[1]) for k in keys]
    )


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
    rows, total = fetch_page(
        db, "redemptions", page, filters=filters, order="block_number, log_index"
    )
    return Page(items=[RedemptionPublic.model_validate(dict(r)) for r in rows], total=total,
                limit=page.limit, offset=page.offset)  # fmt: skip
