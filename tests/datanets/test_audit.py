"""The auditor (``ape run audit datanet N``): passes honest versions, and catches a tampered
manifest, a wrong root published by a curator, and missing or corrupted contribution files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.datanets.audit import audit_datanet, compare_entries
from backend.datanets.manifest import Manifest, ManifestEntry
from backend.datanets.publish import build_manifest, publish_version
from tests.datanets.conftest import pairs

Run = Callable[..., str]


def test_audit_passes_every_honest_version(
    make_datanet: Callable[..., tuple], protocol: Any, store: Any, accounts: list[Any],
    audit_cli: Run,
) -> None:  # fmt: skip
    datanet, approved = make_datanet("honest", publish=True)
    # A later contribution approved for version 2; version 1 must still audit as it was.
    cid = store.put(pairs(2, "later"))
    protocol.datanets.contribute(datanet, cid, len(pairs(2, "later")), sender=accounts[2])
    later = int(protocol.datanets.contributionIdOf(datanet, cid))
    protocol.datanets.review(datanet, [later], [True], sender=accounts[0])
    publish_version(protocol.sdk(accounts[0]), store, datanet)

    out = audit_cli("datanet", datanet)
    assert f"datanet {datanet}: 2 published version(s)" in out
    assert f"version 1: {len(approved)} contributions, root 0x" in out
    assert f"version 2: {len(approved) + 1} contributions" in out
    assert "files: 4 verified against their CIDs" in out
    assert "audit passed" in out and "DIFFERENCE" not in out


def test_audit_catches_a_manifest_that_differs_from_the_chain(
    make_datanet: Callable[..., tuple], protocol: Any, store: Any, accounts: list[Any],
    audit_cli: Run,
) -> None:  # fmt: skip
    datanet, _ = make_datanet("lying-manifest")
    honest = build_manifest(protocol.as_web3(), datanet)
    first, *rest = honest.contributions
    forged = Manifest.of(
        datanet,
        1,
        [replace(first, contributor=accounts[4].address, size=first.size + 1), *rest[:-1]],
    )
    cid = store.put(forged.to_json_bytes())
    protocol.datanets.publishVersion(
        datanet,
        honest.root,
        cid,
        protocol.datanets.datanet(datanet).approvedCount,
        sender=accounts[0],
    )

    out = audit_cli("datanet", datanet, code=1)
    assert (
        f"DIFFERENCE version 1: contribution {first.id}: manifest contributor "
        f"'{accounts[4].address}', chain says '{accounts[1].address}'"
    ) in out
    assert (
        f"contribution {first.id}: manifest size {first.size + 1}, chain says {first.size}" in out
    )
    assert f"manifest omits approved contribution {rest[-1].id} ({rest[-1].cid})" in out
    assert "the stored manifest's root 0x" in out
    assert "audit FAILED: 4 difference(s)" in out


def test_audit_catches_a_manifest_tampered_in_the_store(
    make_datanet: Callable[..., tuple], protocol: Any, store: Any, store_dir: Path,
    accounts: list[Any], audit_cli: Run,
) -> None:  # fmt: skip
    datanet, _ = make_datanet("tampered-store", publish=True)
    manifest_cid = protocol.datanets.version(datanet, 1).manifestCID
    path = store_dir / "blocks" / manifest_cid
    path.write_bytes(path.read_bytes().replace(b'"size":', b'"size":1'))

    out = audit_cli("datanet", datanet, code=1)
    assert f"DIFFERENCE version 1: manifest {manifest_cid}: content stored under" in out
    assert "hashes to bafkrei" in out and "refused" in out
    assert "audit FAILED: 1 difference(s)" in out


def test_audit_catches_a_wrong_root_published_by_a_curator(
    make_datanet: Callable[..., tuple], protocol: Any, store: Any, accounts: list[Any],
    audit_cli: Run,
) -> None:  # fmt: skip
    datanet, _ = make_datanet("wrong-root")
    honest = build_manifest(protocol.as_web3(), datanet)
    cid = store.put(honest.to_json_bytes())
    wrong = Manifest.of(datanet, 1, honest.contributions[:1]).root  # a root over one entry only
    protocol.datanets.publishVersion(
        datanet, wrong, cid, protocol.datanets.datanet(datanet).approvedCount, sender=accounts[0]
    )

    out = audit_cli("datanet", datanet, code=1)
    assert (
        f"DIFFERENCE version 1: on-chain root 0x{wrong.hex()} is not the root "
        f"0x{honest.root.hex()} of the contributions approved before publication"
    ) in out
    assert f"the stored manifest's root 0x{honest.root.hex()} is not the on-chain root" in out


def test_audit_catches_missing_and_corrupted_contribution_files(
    make_datanet: Callable[..., tuple], protocol: Any, store: Any, store_dir: Path,
    accounts: list[Any], audit_cli: Run,
) -> None:  # fmt: skip
    datanet, _ = make_datanet("lost-files", publish=True)
    manifest = build_manifest(protocol.as_web3(), datanet)  # the same entries (next version number)
    gone, corrupted, _ = manifest.contributions
    (store_dir / "blocks" / gone.cid).unlink()
    (store_dir / "blocks" / corrupted.cid).write_bytes(b"flipped bits\n")

    out = audit_cli("datanet", datanet, code=1)
    assert f"contribution {gone.id} ({gone.cid}, in version 1): no content stored under" in out
    assert f"contribution {corrupted.id} ({corrupted.cid}, in version 1): content stored" in out
    assert "files: 3 verified against their CIDs, 2 problem(s)" in out
    report = audit_datanet(protocol.as_web3(), store, datanet)
    assert len(report.findings) == 2 and not report.versions[0].findings


def test_compare_entries_names_extra_and_reordered_entries() -> None:
    a = ManifestEntry(1, "bafy-a", "0x" + "11" * 20, 10)
    b = ManifestEntry(2, "bafy-b", "0x" + "22" * 20, 20)
    expected = Manifest.of(7, 1, [a])
    extra = Manifest(7, 2, (a, b))
    assert compare_entries(expected, extra) == [
        "manifest names version 2, not 1",
        "manifest lists contribution 2, not approved at this version",
    ]
    assert compare_entries(Manifest.of(7, 1, [a, b]), Manifest(7, 1, (b, a))) == [
        "manifest entries are not in contribution id order"
    ]


def test_audit_of_an_unknown_datanet_is_a_clean_error(audit_cli: Run) -> None:
    out = audit_cli("datanet", 999, code=1)
    assert "Error: cannot read datanet 999: UnknownDatanet(datanetId=999)" in out
