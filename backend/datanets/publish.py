"""Publish a Datanet version: the manifest of every approved contribution, stored by CID, and
its Merkle root on-chain. Skipped when nothing was approved since the last version."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backend.datanets.manifest import Manifest, ManifestEntry
from backend.datanets.registry import DatanetError, read_datanet, read_history
from backend.protocol.web3_protocol import Web3Protocol
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publication:
    version: int  # the version published now, or the latest one when skipped
    manifest_cid: str
    merkle_root: bytes
    contribution_count: int
    published_now: bool


def build_manifest(p: Web3Protocol, datanet_id: int) -> Manifest:
    """The manifest of the next version: every contribution approved now, from the events."""
    history = read_history(p, datanet_id)
    datanet = read_datanet(p, datanet_id)
    approved = history.approved()
    if len(approved) != int(datanet.approvedCount):
        raise DatanetError(
            f"datanet {datanet_id} counts {datanet.approvedCount} approved contributions but "
            f"its events show {len(approved)} (reviews landed meanwhile?); run again"
        )
    entries = (ManifestEntry(c.id, c.cid, c.contributor, c.size) for c in approved)
    return Manifest.of(datanet_id, int(datanet.versionCount) + 1, entries)


def publish_version(ol: OpenLedger, store: ContentStore, datanet_id: int) -> Publication:
    """Publishes the next version of ``datanet_id`` (the sender curates it) unless nothing
    changed since the last."""
    datanet = read_datanet(ol.protocol, datanet_id)
    approved, latest = int(datanet.approvedCount), int(datanet.versionCount)
    if latest:
        last = ol.datanets.functions.version(datanet_id, latest).call()
        if int(last.contributionCount) == approved:
            log.info("datanet %d: nothing approved since version %d", datanet_id, latest)
            return Publication(
                latest, str(last.manifestCID), bytes(last.merkleRoot),
                int(last.contributionCount), published_now=False,
            )  # fmt: skip
    if approved == 0 or approved < int(datanet.minApproved):
        raise DatanetError(
            f"datanet {datanet_id} has {approved} approved contributions; "
            f"a version needs {max(1, int(datanet.minApproved))}"
        )
    manifest = build_manifest(ol.protocol, datanet_id)
    manifest_cid = store.put(manifest.to_json_bytes())
    store.pin(manifest_cid)
    root = manifest.root
    receipt = ol.send(
        f"published version {manifest.version} of datanet {datanet_id}",
        ol.datanets.functions.publishVersion(
            datanet_id, root, manifest_cid, len(manifest.contributions)
        ),
    )
    event = ol.event(receipt, ol.datanets, "VersionPublished")
    return Publication(
        int(event.version), manifest_cid, root, int(event.contributionCount), published_now=True
    )
