"""A model version's lineage: the training jobs whose data shaped its adapter.

An SFT job's lineage is itself. A DPO job starts from the model's current adapter, so its
lineage is that version's lineage plus itself: the contributors of the preference Datanet and
of every ancestor's Datanet all earn. The lineage is read from the chain (each version's
training manifest), never from an index, and ancestors' examples are fetched again by CID and
checked byte for byte against their training manifests: the job that builds an index and the
auditor who checks it derive the same members.
"""

from __future__ import annotations

from backend.attribution.build import MemberExamples
from backend.attribution.index import LineageMember
from backend.modelfactory.chain import current_model, model_version, published_version
from backend.modelfactory.dataset import Example, build_examples, load_version_data
from backend.modelfactory.provenance import ProvenanceError, TrainingManifest
from backend.protocol.web3_protocol import Web3Protocol
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
    p: Web3Protocol, store: ContentStore, manifest: TrainingManifest
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


def chain_lineage(
    p: Web3Protocol, store: ContentStore, model_id: int, version: int
) -> list[LineageMember]:
    """The lineage of ``model_id`` version ``version`` as the chain and the training manifests
    state it, not as any index claims: a DPO version improves the version before it, so its
    lineage is that version's plus itself; any other version is its own."""
    manifest_cid = model_version(p, model_id, version).training_manifest_cid
    if not manifest_cid:
        raise LineageError(f"model {model_id} has no version {version}")
    manifest = training_manifest(store, manifest_cid)
    own = LineageMember(manifest_cid, manifest.datanet_id, manifest.version, manifest.method)
    if manifest.method == "dpo" and version > 1:
        return [*chain_lineage(p, store, model_id, version - 1), own]
    return [own]


def member_examples(
    p: Web3Protocol, store: ContentStore, members: list[LineageMember]
) -> list[MemberExamples]:
    """Every member with the examples its job trained on, fetched and checked."""
    result = []
    for member in members:
        if member.training_manifest is None:
            raise LineageError("a lineage member without its training manifest's CID")
        manifest = training_manifest(store, member.training_manifest)
        result.append(MemberExamples(member, trained_examples(p, store, manifest)))
    return result


def ancestor_members(p: Web3Protocol, store: ContentStore, model_id: int) -> list[MemberExamples]:
    """The lineage of ``model_id``'s current version, each member with its examples: what a
    DPO job on that model inherits."""
    current = current_model(p, model_id).version
    return member_examples(p, store, chain_lineage(p, store, model_id, current))
