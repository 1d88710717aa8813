"""Published Datanet versions, their contributions, and Merkle proofs of membership."""

import sqlite3

from fastapi import APIRouter

from backend.api.deps import DbDep, IdPath, PageDep, ProofsDep
from backend.api.errors import not_found, responses
from backend.api.queries import fetch_one, page_of, require_leaf
from backend.api.routes.contributions import to_contribution
from backend.api.routes.datanets import require_datanet
from backend.api.schemas import ContributionPublic, Page, VersionLeaf, VersionProof, VersionPublic

router = APIRouter(prefix="/datanets", tags=["versions"], responses=responses(404, 422))


def require_version(db: sqlite3.Connection, datanet_id: int, version: int) -> sqlite3.Row:
    row = fetch_one(
        db, "SELECT * FROM versions WHERE datanet_id = ? AND version = ?", datanet_id, version
    )
    if row is None:
        require_datanet(db, datanet_id)
        raise not_found(f"version {version} of datanet {datanet_id}")
    return row


@router.get("/{datanet_id}/versions", response_model=Page[VersionPublic])
def list_versions(db: DbDep, page: PageDep, datanet_id: IdPath) -> Page[VersionPublic]:
    """A Datanet's published versions, oldest first."""
    require_datanet(db, datanet_id)
    filters = {"datanet_id": datanet_id}
    return page_of(db, "versions", page, to_version, filters=filters, order="version")


@router.get("/{datanet_id}/versions/{version}", response_model=VersionPublic)
def get_version(db: DbDep, datanet_id: IdPath, version: IdPath) -> VersionPublic:
    """One published version."""
    return to_version(require_version(db, datanet_id, version))


def to_version(row: sqlite3.Row) -> VersionPublic:
    return VersionPublic.model_validate(dict(row))


@router.get(
    "/{datanet_id}/versions/{version}/contributions", response_model=Page[ContributionPublic]
)
def list_version_contributions(
    proofs: ProofsDep, db: DbDep, page: PageDep, datanet_id: IdPath, version: IdPath
) -> Page[ContributionPublic]:
    """The contributions a version commits to (approved before it was published), id order."""
    members = proofs.version_members(db, require_version(db, datanet_id, version))
    ids = members[page.offset : page.offset + page.limit]
    marks = ",".join("?" * len(ids))
    rows = db.execute(f"SELECT * FROM contributions WHERE id IN ({marks}) ORDER BY id", ids)
    return Page(items=[to_contribution(r) for r in rows], total=len(members), limit=page.limit,
                offset=page.offset)  # fmt: skip


@router.get(
    "/{datanet_id}/versions/{version}/proofs/{contribution_id}",
    response_model=VersionProof,
    responses=responses(409),
)
def get_version_proof(
    proofs: ProofsDep, db: DbDep, datanet_id: IdPath, version: IdPath, contribution_id: IdPath
) -> VersionProof:
    """The Merkle proof that a contribution is in a version (for ``isInVersion``), from the
    tree rebuilt from the index and checked against the on-chain root."""
    row = require_version(db, datanet_id, version)
    what = f"contribution {contribution_id} in version {version} of datanet {datanet_id}"
    indexed, i = require_leaf(lambda: proofs.version_tree(db, row), contribution_id, what)
    cid_id, contributor, cid = indexed.tree.values[i]
    return VersionProof(
        datanet_id=datanet_id,
        version=version,
        leaf=VersionLeaf(contribution_id=cid_id, contributor=contributor, cid=cid),
        leaf_hash="0x" + indexed.tree.leaf(i).hex(),
        proof=["0x" + p.hex() for p in indexed.tree.proof(i)],
        merkle_root=row["merkle_root"],
    )
