"""Series for the web app's charts: revenue per model and time bucket, and contributors'
attribution totals."""

import sqlite3
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query

from backend.api.deps import DbDep, IdQuery, PageDep, ProofsDep, StoreDep
from backend.api.errors import responses
from backend.api.proofs import ProofUnavailableError
from backend.api.queries import chain_time
from backend.api.routes.attribution import to_epoch
from backend.api.schemas import Page
from backend.api.schemas_webapp import Bucket, ContributorPage, ContributorTotals, RevenuePoint

router = APIRouter(prefix="/stats", tags=["stats"], responses=responses(422))

BUCKET_SECONDS = {Bucket.HOUR: 3_600, Bucket.DAY: 86_400}
# Epochs whose allocation stands: posted (claimable after its challenge window) or expired
# (its claim period over, the unclaimed rest swept back); challenged and rejected ones do not.
ALLOCATED_STATUSES = ("posted", "expired")


@router.get("/revenue", response_model=Page[RevenuePoint])
def revenue(
    db: DbDep,
    page: PageDep,
    bucket: Annotated[Bucket, Query(description="the buckets' length")] = Bucket.DAY,
    model_id: IdQuery = None,
) -> Page[RevenuePoint]:
    """Paid OPEN, redemptions and inferences per model and time bucket, newest bucket first
    (redemptions whose block has no timestamp are left out)."""
    size = BUCKET_SECONDS[bucket]
    clause, params = " WHERE redeemed_at IS NOT NULL", []
    if model_id is not None:
        clause, params = f"{clause} AND model_id = ?", [model_id]
    grouped = (
        f"SELECT model_id, redeemed_at - redeemed_at % {size} AS bucket_start, COUNT(*) AS n,"
        " group_concat(paid) AS paid, group_concat(DISTINCT usage_proof_id) AS proofs,"
        " SUM(usage_proof_id IS NULL) AS unproven"
        f" FROM redemptions{clause} GROUP BY model_id, bucket_start"
    )
    total = db.execute(f"SELECT COUNT(*) FROM ({grouped})", params).fetchone()[0]
    rows = db.execute(
        f"{grouped} ORDER BY bucket_start DESC, model_id LIMIT ? OFFSET ?",
        [*params, page.limit, page.offset],
    ).fetchall()
    receipts = _single_model_receipts(db, rows)
    items = [
        RevenuePoint(
            model_id=row["model_id"],
            bucket_start=row["bucket_start"],
            paid=str(sum(int(amount) for amount in row["paid"].split(","))),
            redemptions=row["n"],
            inferences=_inferences(row, receipts),
        )
        for row in rows
    ]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


def _proof_ids(row: sqlite3.Row) -> list[int]:
    return [int(p) for p in row["proofs"].split(",")] if row["proofs"] else []


def _single_model_receipts(db: sqlite3.Connection, rows: list[sqlite3.Row]) -> dict[int, int]:
    """The receipt counts of the page's usage proofs that paid one model only (a proof that
    paid several says how many receipts in all, not per model)."""
    ids = sorted({p for row in rows for p in _proof_ids(row)})
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    found = db.execute(
        f"SELECT u.id, u.receipt_count FROM usage_proofs u WHERE u.id IN ({marks}) AND"
        " (SELECT COUNT(DISTINCT r.model_id) FROM redemptions r WHERE r.usage_proof_id = u.id)"
        " = 1",
        ids,
    ).fetchall()
    return {int(r["id"]): int(r["receipt_count"]) for r in found}


def _inferences(row: sqlite3.Row, receipts: dict[int, int]) -> int | None:
    proofs = _proof_ids(row)
    if row["unproven"] or any(p not in receipts for p in proofs):
        return None
    return sum(receipts[p] for p in proofs)


@router.get("/contributors", response_model=ContributorPage)
def contributors(
    proofs: ProofsDep, db: DbDep, store: StoreDep, page: PageDep, model_id: IdQuery = None
) -> ContributorPage:
    """Each account's attribution: allocated by posted or expired epochs, claimed, and
    claimable now; largest allocation first."""
    now = chain_time(db)
    sql, params = "SELECT * FROM epochs WHERE status IN (?, ?)", [*ALLOCATED_STATUSES]
    if model_id is not None:
        sql, params = f"{sql} AND model_id = ?", [*params, model_id]
    epochs = db.execute(f"{sql} ORDER BY id", params).fetchall()
    allocated: defaultdict[str, int] = defaultdict(int)
    claimed: defaultdict[str, int] = defaultdict(int)
    claimable: defaultdict[str, int] = defaultdict(int)
    unavailable: list[int] = []
    for epoch in epochs:
        try:
            tree = proofs.report_tree(store, epoch)
        except ProofUnavailableError:
            unavailable.append(epoch["id"])
            continue
        done = {
            int(r[0])
            for r in db.execute("SELECT idx FROM claims WHERE epoch_id = ?", (epoch["id"],))
        }
        open_now = to_epoch(epoch, now).claimable
        for index, account, amount in tree.tree.values:
            allocated[account] += amount
            if index in done:
                claimed[account] += amount
            elif open_now:
                claimable[account] += amount
    ranked = sorted(allocated, key=lambda account: (-allocated[account], account))
    items = [
        ContributorTotals(
            account=account,
            allocated=str(allocated[account]),
            claimed=str(claimed[account]),
            claimable=str(claimable[account]),
        )
        for account in ranked[page.offset : page.offset + page.limit]
    ]
    return ContributorPage(
        items=items, total=len(ranked), limit=page.limit, offset=page.offset,
        unavailable_epochs=unavailable,
    )  # fmt: skip
