"""A model version's lineage: the training jobs whose data shaped its adapter.

An SFT job's lineage is itself. A DPO job starts from the model's current adapter, so its
lineage is that version's lineage plus itself: the contributors of the preference Datanet and
of every ancestor's Datanet all earn. Ancestors' examples are fetched again by CID and checked
byte for byte against their training manifests before they are indexed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from backend.attribution.build import MemberExamples
from backend.attribution.index import LineageMember, read_lineage
from backend.modelfactory.chain import published_version
from backend.modelfactory.dataset import Example, build_examples, load_version_data
from backend.modelfactory.provenance import ProvenanceError, TrainingManifest
from backend.storage.base import ContentStore

MAX_TRAINING_MANIFEST_BYTES = 256 << 20


class LineageError(RuntimeError):
    """An ancestor whose data cannot be recovered or does not match its manifest."""


def training_manifest(store: ContentStore, cid: str) -> TrainingManifest:
    try:
        return TrainingManifest.from_json(store.get(cid, max_bytes=MAX_TRAINING_MANIFEST_BYTES))
    except ProvenanceError as why:
        raise LineageError(f"training manifest {cid}: {why}") from None


def trained_examples(
    p: Any, store: ContentStore, manifest: TrainingManifest
) -> list[tuple[int, Example]]:
    """The examples a job trained on (its train split without the unused ones), each with its
    index in the manifest, rebuilt from the Datanet version and checked against the manifest."""
    ref = published_version(p, manifest.datanet_id, manifest.version)
    data = load_version_data(
        store,
        manifest.datanet_id,
        manifest.version,
        manifest.datanet_manifest_cid,
        ref.metadata_cid,
    )
    try:
        manifest.verify_data(data)
    except ProvenanceError as why:
        raise LineageError(
            f"datanet {manifest.datanet_id} version {manifest.version}: {why}"
        ) from None
    rebuilt, _ = build_examples(data, manifest.build.max_chars)
    by_place = {(e.contribution_id, e.byte_start, e.byte_end): e for e in rebuilt}
    unused = set(manifest.unused)
    return [
        (r.index, by_place[(r.contribution_id, r.byte_start, r.byte_end)])
        for r in manifest.split("train")
        if r.index not in unused
    ]


def ancestor_members(p: Any, store: ContentStore, model_id: int) -> list[MemberExamples]:
    """The lineage of ``model_id``'s current version, each member with its examples: what a
    DPO job on that model inherits."""
    model = p.models.model(model_id)
    held = p.models.modelVersion(model_id, int(model.versionCount))
    manifest_cid = str(held.trainingManifestCID)
    manifest = training_manifest(store, manifest_cid)
    if manifest.attribution is not None:
        lineage = read_lineage(lambda c, n: store.get(c, max_bytes=n), manifest.attribution)
        members = [
            m if m.training_manifest is not None else replace(m, training_manifest=manifest_cid)
            for m in lineage
        ]
    else:  # trained before attribution indexes: its own data is all that is known
        members = [
            LineageMember(manifest_cid, manifest.datanet_id, manifest.version, manifest.job.method)
        ]
    result = []
    for member in members:
        assert member.training_manifest is not None
        own = (
            manifest
            if member.training_manifest == manifest_cid
            else training_manifest(store, member.training_manifest)
        )
        result.append(MemberExamples(member, trained_examples(p, store, own)))
    return result
