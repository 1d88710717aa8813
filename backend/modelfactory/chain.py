"""What a job reads from the chain before it fetches anything: the published Datanet version
(its manifest CID and Merkle root), for DPO the model's current adapter, and a model version's
adapter and training manifest (where its lineage and attribution index are found).

Every read goes through plain web3 (:class:`~backend.protocol.web3_protocol.Web3Protocol`):
the API's job worker has no ape network context, and ``ape run modelfactory`` hands its
connection over (:meth:`backend.protocol.contracts.Protocol.as_web3`).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.protocol.web3_protocol import Web3Protocol


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
class ModelVersionRef:
    model_id: int
    version: int
    adapter_cid: str  # "" when the model has no such version
    training_manifest_cid: str


@dataclass(frozen=True)
class ModelRef:
    model_id: int
    version: int  # the latest adapter version
    developer: str
    adapter_cid: str
    training_manifest_cid: str
    base_model_cid: str


def published_version(p: Web3Protocol, datanet_id: int, version: int) -> VersionRef:
    """Version ``version`` of Datanet ``datanet_id``; refuses an unpublished one by name."""
    datanets = p["DatanetRegistry"].functions
    count = int(datanets.datanetCount().call())
    if not 1 <= datanet_id <= count:
        raise ChainLookupError(f"Datanet {datanet_id} does not exist ({count} Datanets)")
    datanet = datanets.datanet(datanet_id).call()
    published = int(datanet.versionCount)
    if not 1 <= version <= published:
        raise ChainLookupError(
            f"Datanet {datanet_id} version {version} is not published "
            f"(published versions: {f'1..{published}' if published else 'none'})"
        )
    v = datanets.version(datanet_id, version).call()
    return VersionRef(
        datanet_id, version, str(v.manifestCID), str(datanet.metadataCID), bytes(v.merkleRoot),
        int(v.contributionCount),
    )  # fmt: skip


def current_model(p: Web3Protocol, model_id: int) -> ModelRef:
    """Model ``model_id`` and its latest adapter version."""
    models = p["ModelRegistry"].functions
    count = int(models.modelCount().call())
    if not 1 <= model_id <= count:
        raise ChainLookupError(f"model {model_id} does not exist ({count} models)")
    model = models.model(model_id).call()
    latest = int(model.versionCount)
    v = models.modelVersion(model_id, latest).call()
    return ModelRef(
        model_id, latest, str(model.developer), str(v.adapterCID), str(v.trainingManifestCID),
        str(model.baseModelCID),
    )  # fmt: skip


def model_version(p: Web3Protocol, model_id: int, version: int) -> ModelVersionRef:
    """Version ``version`` of model ``model_id``, with empty CIDs when there is none."""
    v = p["ModelRegistry"].functions.modelVersion(model_id, version).call()
    return ModelVersionRef(model_id, version, str(v.adapterCID), str(v.trainingManifestCID))
