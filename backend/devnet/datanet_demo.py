"""The Datanet part of ``make demo``: the project's invented-atlas dataset (planted facts, one
kind per contributor, so attribution can be seen) goes through the whole flow on the local
stack — created, contributed by three accounts, curated (the deliberately wrong file
rejected), published, audited. Every step reads its state from the chain
and the store, so a second run on the persisted state reuses or skips everything."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.datanets.audit import AuditReport, audit_datanet
from backend.datanets.contribute import (
    Registered,
    check_files,
    collect_files,
    register_files,
    split_registered,
    store_files,
)
from backend.datanets.create import CreatedDatanet, create_datanet
from backend.datanets.formats import DatanetMetadata
from backend.datanets.publish import Publication, publish_version
from backend.datanets.registry import read_history
from backend.datanets.review import send_reviews, validate_pending
from backend.protocol.contracts import Protocol
from backend.protocol.deployments import PROJECT_ROOT
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

OPEN = 10**18
DATASET = PROJECT_ROOT / "datasets" / "invented-atlas"
CURATOR_ROLE = "governance"  # creates and curates the Datanet
CONTRIBUTIONS = {  # role -> files of DATASET it contributes
    "contributor": ("data/capitals.jsonl",),
    "developer": ("data/inventors.jsonl",),
    "payer": ("data/creatures.jsonl", "bad/wrong-capitals.jsonl"),
}
WRONG_FILES = ("bad/wrong-capitals.jsonl",)  # valid JSONL, wrong answers: the curator rejects it
BOND = 1 * OPEN  # OPEN wei per contribution
MIN_APPROVED = 3


@dataclass(frozen=True)
class FileOutcome:
    role: str
    file: str  # relative to DATASET
    contribution_id: int
    registered_now: bool
    status: str  # pending / approved / rejected, after the review step


@dataclass(frozen=True)
class DatanetDemo:
    metadata: DatanetMetadata
    datanet: CreatedDatanet
    files: list[FileOutcome]
    approved_now: list[int]
    rejected_now: list[int]
    publication: Publication
    audit: AuditReport


def contribute_paths(
    ol: OpenLedger,
    store: ContentStore,
    datanet_id: int,
    metadata: DatanetMetadata,
    paths: Iterable[Path],
) -> list[Registered]:
    """Checks, stores and registers the files at ``paths`` as the sender; those it registered
    before (a re-run) are not sent again. Every file's registration, earlier ones first."""
    stored = list(store_files(store, check_files(metadata, collect_files(paths))))
    done, todo = split_registered(ol.protocol, datanet_id, stored, ol.address)
    return [*done, *(r for batch in register_files(ol, datanet_id, todo) for r in batch)]


def _contribute(
    p: Protocol, store: ContentStore, datanet_id: int, metadata: DatanetMetadata,
    role: str, account: Any, dataset: Path, files: tuple[str, ...],
) -> list[tuple[str, int, bool]]:  # fmt: skip
    """Contributes ``files`` as ``account``; ``(file, contribution id, registered now)``."""
    registrations = contribute_paths(
        p.sdk(account), store, datanet_id, metadata, (dataset / f for f in files)
    )
    by_path = {r.path: r for r in registrations}
    sent = sum(r.registered_now for r in registrations)
    log.info("%s contributed %d file(s) to datanet %d", role, sent, datanet_id)
    return [
        (f, by_path[dataset / f].contribution_id, by_path[dataset / f].registered_now)
        for f in files
    ]


def run_datanet_demo(
    p: Protocol, store: ContentStore, roles: dict[str, Any], dataset: Path = DATASET
) -> DatanetDemo:
    """Runs (or, on persisted state, re-runs) the Datanet flow on ``dataset``."""
    curator, web3 = p.sdk(roles[CURATOR_ROLE]), p.as_web3()
    metadata = DatanetMetadata.from_json((dataset / "metadata.json").read_bytes())
    created = create_datanet(
        curator, store, metadata,
        bond=BOND, min_approved=MIN_APPROVED, treasury=roles["treasury"].address,
    )  # fmt: skip
    datanet_id = created.datanet_id
    contributed: list[tuple[str, str, int, bool]] = []
    for role, files in CONTRIBUTIONS.items():
        outcomes = _contribute(p, store, datanet_id, metadata, role, roles[role], dataset, files)
        contributed.extend((role, f, cid_id, now) for f, cid_id, now in outcomes)

    pending = read_history(web3, datanet_id).pending()
    wrong = {cid_id for _, f, cid_id, _ in contributed if f in WRONG_FILES}
    verdicts = validate_pending(metadata, store, [c for c in pending if c.id not in wrong])
    reject = sorted({c.id for c in pending if c.id in wrong} | set(verdicts.reject))
    if verdicts.approve or reject:
        send_reviews(curator, datanet_id, verdicts.approve, reject)
    publication = publish_version(curator, store, datanet_id)
    history = read_history(web3, datanet_id)
    files = [
        FileOutcome(role, f, cid_id, now, history.contributions[cid_id].status)
        for role, f, cid_id, now in contributed
    ]
    audit = audit_datanet(web3, store, datanet_id)
    return DatanetDemo(metadata, created, files, verdicts.approve, reject, publication, audit)
