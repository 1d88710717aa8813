"""What a job reads from the chain before it fetches anything: the published Datanet version
(its manifest CID and Merkle root) and, for DPO, the model's current adapter."""

from __future__ import annotations

from dataclasses import dataclass

from backend.protocol.contracts import Protocol


class ChainLookupError(LookupError):
    """The Datanet, version or model a job names does not exist (or is not published)."""


@dataclass(frozen=True)
class VersionRef:
    datanet_id: int
    version: int
    manifest_cid: str
    metadata_cid: str
    merkle_root: bytes
    contribution_count: int


@dataclass(frozen=True)
class ModelRef:
    model_id: int
    version: int  # the latest adapter version
    developer: str
    adapter_cid: str
    training_manifest_cid: str
    base_model_cid: str


def published_version(p: Protocol, datanet_id: int, version: int) -> VersionRef:
    """Version ``version`` of Datanet ``datanet_id``; refuses an unpublished one by name."""
    count = int(p.datanets.datanetCount())
    if not 1 <= datanet_id <= count:
        raise ChainLookupError(f"Datanet {datanet_id} does not exist ({count} Datanets)")
    datanet = p.datanets.datanet(datanet_id)
    published = int(datanet.versionCount)
    if not 1 <= version <= published:
        raise ChainLookupError(
            f"Datanet {datanet_id} version {version} is not published "
            f"(published versions: {f'1..{published}' if published else 'none'})"
        )
    v = p.datanets.version(datanet_id, version)
    return VersionRef(
        datanet_id, version, str(v.manifestCID), str(datanet.metadataCID), bytes(v.merkleRoot),
        int(v.contributionCount),
    )  # fmt: skip


def current_model(p: Protocol, model_id: int) -> ModelRef:
    """Model ``model_id`` and its latest adapter version."""
    count = int(p.models.modelCount())
    if not 1 <= model_id <= count:
        raise ChainLookupError(f"model {model_id} does not exist ({count} models)")
    model = p.models.model(model_id)
    latest = int(model.versionCount)
    v = p.models.modelVersion(model_id, latest)
    return ModelRef(
        model_id, latest, str(model.developer), str(v.adapterCID), str(v.trainingManifestCID),
        str(model.baseModelCID),
    )  # fmt: skip
