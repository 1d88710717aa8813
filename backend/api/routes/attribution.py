"""Attribution pools, epochs, claims made, and what an account can claim (with its proofs)."""

import json
import sqlite3
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query

from backend.api.deps import AddressPath, DbDep, IdPath, IdQuery, PageDep, ProofsDep, StoreDep
from backend.api.errors import responses
from backend.api.proofs import IndexedTree, ProofCache, ProofUnavailableError
from backend.api.queries import chain_time, fetch_one, page_of, require_leaf, require_one
from backend.api.schemas import (
    ClaimablePage,
    ClaimEntry,
    ClaimPublic,
    ContributionEarning,
    EarningEntry,
    Earnings,
    EpochPublic,
    Page,
    PoolPublic,
)

router = APIRouter(prefix="/attribution", tags=["attribution"], responses=responses(404, 422))


class EpochStatus(StrEnum):
    POSTED = "posted"
    CHALLENGED = "challenged"
    REJECTED = "rejected"
    EXPIRED = "expired"  # its claim period ended and the unclaimed rest was swept to the pool


def _claimable(epoch: sqlite3.Row, now: int | None) -> bool:
    return epoch["status"] == "posted" and now is not None and now >= epoch["challenge_ends_at"]


def to_epoch(row: sqlite3.Row, now: int | None) -> EpochPublic:
    return EpochPublic.model_validate({**dict(row), "claimable": _claimable(row, now)})


def to_pool(row: sqlite3.Row) -> PoolPublic:
    return PoolPublic.model_validate(dict(row))


def to_claim(row: sqlite3.Row) -> ClaimPublic:
    return ClaimPublic.model_validate({**dict(row), "index": row["idx"]})


def require_epoch(db: sqlite3.Connection, epoch_id: int) -> sqlite3.Row:
    return require_one(db, f"epoch {epoch_id}", "SELECT * FROM epochs WHERE id = ?", epoch_id)


def _entry(
    db: sqlite3.Connection, epoch: sqlite3.Row, tree: IndexedTree, row: int, now: int | None
) -> ClaimEntry:
    index, account, amount = tree.tree.values[row]
    claimed = fetch_one(
        db, "SELECT 1 FROM claims WHERE epoch_id = ? AND idx = ?", epoch["id"], index
    )
    return ClaimEntry(
        epoch_id=epoch["id"], model_id=epoch["model_id"], index=index, account=account,
        amount=str(amount), proof=["0x" + p.hex() for p in tree.tree.proof(row)],
        merkle_root=epoch["merkle_root"], claimed=claimed is not None,
        claimable=claimed is None and _claimable(epoch, now),
    )  # fmt: skip


@router.get("/pools", response_model=Page[PoolPublic])
def list_pools(db: DbDep, page: PageDep) -> Page[PoolPublic]:
    """Every model's attribution pool."""
    return page_of(db, "pools", page, to_pool, order="model_id")


@router.get("/pools/{model_id}", response_model=PoolPublic)
def get_pool(db: DbDep, model_id: IdPath) -> PoolPublic:
    """One model's pool: funded, not yet in an epoch, claimed."""
    what = f"attribution pool of model {model_id}"
    return to_pool(require_one(db, what, "SELECT * FROM pools WHERE model_id = ?", model_id))


@router.get("/epochs", response_model=Page[EpochPublic])
def list_epochs(
    db: DbDep,
    page: PageDep,
    model_id: IdQuery = None,
    status: Annotated[EpochStatus | None, Query()] = None,
) -> Page[EpochPublic]:
    """Attribution epochs, oldest first, optionally by model or status."""
    now = chain_time(db)
    filters = {"model_id": model_id, "status": status}
    return page_of(db, "epochs", page, lambda r: to_epoch(r, now), filters=filters, order="id")


@router.get("/epochs/{epoch_id}", response_model=EpochPublic)
def get_epoch(db: DbDep, epoch_id: IdPath) -> EpochPublic:
    """One epoch."""
    return to_epoch(require_epoch(db, epoch_id), chain_time(db))


@router.get("/epochs/{epoch_id}/claims", response_model=Page[ClaimPublic])
def list_epoch_claims(db: DbDep, page: PageDep, epoch_id: IdPath) -> Page[ClaimPublic]:
    """The claims made in an epoch, by leaf index."""
    require_epoch(db, epoch_id)
    return page_of(db, "claims", page, to_claim, filters={"epoch_id": epoch_id}, order="idx")


@router.get(
    "/epochs/{epoch_id}/leaves/{index}", response_model=ClaimEntry, responses=responses(409)
)
def get_epoch_leaf(
    proofs: ProofsDep, db: DbDep, store: StoreDep, epoch_id: IdPath, index: IdPath
) -> ClaimEntry:
    """A leaf of the epoch's report with its Merkle proof (what ``claim`` takes), from the
    report in the content store checked against the on-chain root."""
    epoch = require_epoch(db, epoch_id)
    what = f"leaf {index} in epoch {epoch_id}'s report"
    tree, row = require_leaf(lambda: proofs.report_tree(store, epoch), index, what)
    return _entry(db, epoch, tree, row, chain_time(db))


@router.get("/accounts/{account}/claims", response_model=Page[ClaimPublic])
def list_account_claims(db: DbDep, page: PageDep, account: AddressPath) -> Page[ClaimPublic]:
    """The claims an account made."""
    filters = {"account": account}
    return page_of(db, "claims", page, to_claim, filters=filters, order="epoch_id, idx")


@router.get("/accounts/{account}/claimable", response_model=ClaimablePage)
def list_claimable(
    proofs: ProofsDep,
    db: DbDep,
    store: StoreDep,
    page: PageDep,
    account: AddressPath,
    include_claimed: bool = False,
) -> ClaimablePage:
    """What an account is owed by the posted (or challenged) epochs' reports, with the proofs
    to claim it; ``claimable`` says whether ``claim`` would pay it now."""
    now = chain_time(db)
    entries: list[ClaimEntry] = []
    trees, unavailable = _report_trees(proofs, db, store, ("posted", "challenged"))
    for epoch, tree in trees:
        for row in tree.by_account.get(account, []):
            entry = _entry(db, epoch, tree, row, now)
            if include_claimed or not entry.claimed:
                entries.append(entry)
    return ClaimablePage(
        items=entries[page.offset : page.offset + page.limit], total=len(entries),
        limit=page.limit, offset=page.offset, unavailable_epochs=unavailable,
    )  # fmt: skip


@router.get("/accounts/{account}/earnings", response_model=Earnings)
def get_earnings(proofs: ProofsDep, db: DbDep, store: StoreDep, account: AddressPath) -> Earnings:
    """What each model's answers earned the account, per epoch (posted, challenged or expired;
    a rejected epoch paid nobody), with the contributions that earned it and what was
    claimed."""
    items: list[EarningEntry] = []
    statuses = ("posted", "challenged", "expired")
    trees, unavailable = _report_trees(proofs, db, store, statuses)
    for epoch, tree in trees:
        rows = tree.by_account.get(account, [])
        if not rows:
            continue
        amount = sum(int(tree.tree.values[row][2]) for row in rows)
        indexes = [tree.tree.values[row][0] for row in rows]
        claimed = all(
            fetch_one(db, "SELECT 1 FROM claims WHERE epoch_id = ? AND idx = ?", epoch["id"], i)
            is not None
            for i in indexes
        )
        items.append(
            EarningEntry(
                epoch_id=epoch["id"],
                model_id=epoch["model_id"],
                status=epoch["status"],
                amount=str(amount),
                claimed=claimed,
                contributions=_contributions_of(store, epoch["report_cid"], account),
            )
        )
    return Earnings(
        account=account,
        items=items,
        total_earned=str(sum(int(e.amount) for e in items)),
        total_claimed=str(sum(int(e.amount) for e in items if e.claimed)),
        unavailable_epochs=unavailable,
    )


def _report_trees(
    proofs: ProofCache, db: sqlite3.Connection, store: Any, statuses: tuple[str, ...]
) -> tuple[list[tuple[sqlite3.Row, IndexedTree]], list[int]]:
    """The epochs of ``statuses`` whose report rebuilds the posted root, with their trees, and
    the ids of those whose report cannot be read or does not match."""
    marks = ", ".join("?" for _ in statuses)
    epochs = db.execute(
        f"SELECT * FROM epochs WHERE status IN ({marks}) ORDER BY id", statuses
    ).fetchall()
    trees: list[tuple[sqlite3.Row, IndexedTree]] = []
    unavailable: list[int] = []
    for epoch in epochs:
        try:
            trees.append((epoch, proofs.report_tree(store, epoch)))
        except ProofUnavailableError:
            unavailable.append(epoch["id"])
    return trees, unavailable


def _contributions_of(store: Any, report_cid: str, account: str) -> list[ContributionEarning]:
    """The report's per-contribution breakdown of ``account``'s amount (the report was read
    and checked against its root just before; a report without one gives none)."""
    try:
        document = json.loads(store.get(report_cid))
        row = next(
            (
                r
                for r in document.get("contributors", [])
                if r["account"].lower() == account.lower()
            ),
            None,
        )
        if row is None:
            return []
        return [
            ContributionEarning(datanet_id=d, contribution_id=c, amount=str(int(amount)))
            for d, c, amount in row["contributions"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
