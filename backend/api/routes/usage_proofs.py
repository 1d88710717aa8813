"""Usage proofs: the receipts each redemption paid for."""

import sqlite3

from fastapi import APIRouter

from backend.api.deps import AddressQuery, DbDep, IdPath, PageDep
from backend.api.errors import responses
from backend.api.queries import page_of, require_one
from backend.api.routes.payments import to_skipped
from backend.api.schemas import (
    Page,
    PaymentSplitPublic,
    RedemptionPublic,
    UsageProofDetail,
    UsageProofPublic,
)

router = APIRouter(prefix="/usage-proofs", tags=["usage proofs"], responses=responses(404, 422))


@router.get("", response_model=Page[UsageProofPublic])
def list_usage_proofs(db: DbDep, page: PageDep, node: AddressQuery = "") -> Page[UsageProofPublic]:
    """Usage proofs, oldest first, optionally by node."""
    filters = {"node": node or None}
    return page_of(db, "usage_proofs", page, to_usage_proof, filters=filters, order="id")


def to_usage_proof(row: sqlite3.Row) -> UsageProofPublic:
    return UsageProofPublic.model_validate(dict(row))


@router.get("/{proof_id}", response_model=UsageProofDetail)
def get_usage_proof(db: DbDep, proof_id: IdPath) -> UsageProofDetail:
    """One usage proof with the vouchers it redeemed (and those it skipped) and how the
    payment was split."""
    sql = "SELECT * FROM usage_proofs WHERE id = ?"
    row = require_one(db, f"usage proof {proof_id}", sql, proof_id)
    redemptions = db.execute(
        "SELECT * FROM redemptions WHERE usage_proof_id = ? ORDER BY log_index", (proof_id,)
    ).fetchall()
    skipped = db.execute(
        "SELECT * FROM skipped_vouchers WHERE usage_proof_id = ? ORDER BY log_index", (proof_id,)
    ).fetchall()
    splits = db.execute(
        "SELECT * FROM payment_splits WHERE usage_proof_id = ? ORDER BY log_index", (proof_id,)
    ).fetchall()
    return UsageProofDetail(
        **dict(row),
        redemptions=[RedemptionPublic.model_validate(dict(r)) for r in redemptions],
        skipped=[to_skipped(r) for r in skipped],
        splits=[PaymentSplitPublic.model_validate(dict(s)) for s in splits],
    )
