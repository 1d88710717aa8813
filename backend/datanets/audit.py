"""Audit a Datanet: every published version checked against the chain and the content store.

For each version the approved set is recomputed from the ``Contributed`` and ``Reviewed``
events that precede its ``VersionPublished`` event; it must have the version's contribution
count, its Merkle root must be the on-chain root, and the manifest stored under the version's
CID (read verified) must list exactly it. Every contribution's bytes are verified by CID and
checked against the declared size. Read-only: nothing is sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.datanets.manifest import Manifest, ManifestEntry, ManifestError
from backend.datanets.registry import DatanetHistory, read_datanet, read_history
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore, ContentStoreError
from backend.storage.cid import InvalidCIDError

log = logging.getLogger(__name__)


@dataclass
class VersionAudit:
    version: int
    contribution_count: int
    merkle_root: bytes
    manifest_cid: str
    findings: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    datanet_id: int
    versions: list[VersionAudit] = field(default_factory=list)
    files_checked: int = 0
    file_findings: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[str]:
        """Every difference found, each naming its version or file."""
        per_version = [f"version {v.version}: {f}" for v in self.versions for f in v.findings]
        return per_version + self.file_findings

    @property
    def ok(self) -> bool:
        return not self.findings


def _hex(root: bytes) -> str:
    return "0x" + root.hex()


def compare_entries(expected: Manifest, stored: Manifest) -> list[str]:
    """The differences of ``stored`` from ``expected``, entry by entry."""
    problems: list[str] = []
    if stored.datanet_id != expected.datanet_id:
        problems.append(f"manifest names datanet {stored.datanet_id}, not {expected.datanet_id}")
    if stored.version != expected.version:
        problems.append(f"manifest names version {stored.version}, not {expected.version}")
    want = {e.id: e for e in expected.contributions}
    got: dict[int, ManifestEntry] = {}
    for e in stored.contributions:
        if e.id in got:
            problems.append(f"manifest lists contribution {e.id} twice")
        got[e.id] = e
    for cid_id in sorted(want.keys() - got.keys()):
        problems.append(f"manifest omits approved contribution {cid_id} ({want[cid_id].cid})")
    for cid_id in sorted(got.keys() - want.keys()):
        problems.append(f"manifest lists contribution {cid_id}, not approved at this version")
    for cid_id in sorted(want.keys() & got.keys()):
        a, b = want[cid_id], got[cid_id]
        for name in ("cid", "contributor", "size"):
            if getattr(a, name) != getattr(b, name):
                problems.append(
                    f"contribution {cid_id}: manifest {name} {getattr(b, name)!r}, "
                    f"chain says {getattr(a, name)!r}"
                )
    ids = [e.id for e in stored.contributions]
    if not problems and ids != sorted(ids):
        problems.append("manifest entries are not in contribution id order")
    return problems


def audit_version(
    p: Web3Protocol, store: ContentStore, history: DatanetHistory, number: int
) -> tuple[VersionAudit, list[ManifestEntry]]:
    """Checks version ``number``; returns its audit and the approved set the events give."""
    datanet_id = history.datanet_id
    on_chain = p["DatanetRegistry"].functions.version(datanet_id, number).call()
    audit = VersionAudit(
        number,
        int(on_chain.contributionCount),
        bytes(on_chain.merkleRoot),
        str(on_chain.manifestCID),
    )
    event = history.versions.get(number)
    if event is None:
        audit.findings.append("no VersionPublished event")
        return audit, []
    for name, logged, stored in (
        ("root", _hex(event.merkle_root), _hex(audit.merkle_root)),
        ("contribution count", event.contribution_count, audit.contribution_count),
        ("manifest CID", event.manifest_cid, audit.manifest_cid),
    ):
        if logged != stored:
            audit.findings.append(f"event {name} {logged} differs from the stored {stored}")
    approved = history.approved(event.position)
    entries = [ManifestEntry(c.id, c.cid, c.contributor, c.size) for c in approved]
    if len(entries) != audit.contribution_count:
        audit.findings.append(
            f"{len(entries)} contributions approved before publication, "
            f"the version says {audit.contribution_count}"
        )
    expected = Manifest.of(datanet_id, number, entries)
    root = expected.root if entries else b"\x00" * 32
    if root != audit.merkle_root:
        audit.findings.append(
            f"on-chain root {_hex(audit.merkle_root)} is not the root {_hex(root)} "
            "of the contributions approved before publication"
        )
    try:
        stored = Manifest.from_json(store.get(audit.manifest_cid))
    except (ContentStoreError, InvalidCIDError, ManifestError) as why:
        audit.findings.append(f"manifest {audit.manifest_cid}: {why}")
        return audit, entries
    audit.findings.extend(compare_entries(expected, stored))
    if stored.contributions and stored.root != audit.merkle_root:
        audit.findings.append(
            f"the stored manifest's root {_hex(stored.root)} is not the on-chain root"
        )
    return audit, entries


def audit_datanet(p: Web3Protocol, store: ContentStore, datanet_id: int) -> AuditReport:
    """Audits every published version of ``datanet_id`` and every file they contain."""
    datanet = read_datanet(p, datanet_id)
    history = read_history(p, datanet_id)
    report = AuditReport(datanet_id)
    files: dict[str, tuple[ManifestEntry, list[int]]] = {}  # cid -> (entry, versions)
    for number in range(1, int(datanet.versionCount) + 1):
        audit, entries = audit_version(p, store, history, number)
        report.versions.append(audit)
        for e in entries:
            files.setdefault(e.cid, (e, []))[1].append(number)
    for cid, (entry, versions) in files.items():
        where = f"contribution {entry.id} ({cid}, in version {', '.join(map(str, versions))})"
        try:
            size = sum(len(chunk) for chunk in store.iter_verified(cid))
        except (ContentStoreError, InvalidCIDError) as why:
            report.file_findings.append(f"{where}: {why}")
            continue
        if size != entry.size:
            report.file_findings.append(f"{where}: {size} bytes stored, {entry.size} declared")
    report.files_checked = len(files)
    log.info("audited datanet %d: %d finding(s)", datanet_id, len(report.findings))
    return report
