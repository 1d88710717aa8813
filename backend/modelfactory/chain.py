"""What a job reads from the chain before it fetches anything: the published Datanet version
(its manifest CID and Merkle root) and, for DPO, the model's current adapter.

The reads take ape's :class:`Protocol` (the CLI, under ``ape run``) or a :class:`Web3Reader`
over plain web3 (the API's job worker, which has no ape network context).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from backend.devnet.w3protocol import Web3Protocol
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


class _ViewCalls:
    """A web3 contract's functions called as ape calls them: ``calls.name(*args)``, a struct
    result with its fields as attributes."""

    def __init__(self, contract: Any) -> None:
        self._contract = contract
        self._outputs = {
            item["name"]: item.get("outputs", [])
            for item in contract.abi
            if item.get("type") == "function"
        }

    def __getattr__(self, name: str) -> Callable[..., Any]:
        outputs = self.__dict__.get("_outputs", {}).get(name)
        if outputs is None:
            raise AttributeError(name)

        def call(*args: Any) -> Any:
            result = getattr(self._contract.functions, name)(*args).call()
            if len(outputs) == 1 and outputs[0]["type"] == "tuple":
                names = [c["name"] for c in outputs[0]["components"]]
                return SimpleNamespace(**dict(zip(names, result, strict=True)))
            return result

        return call


@dataclass(frozen=True)
class Web3Reader:
    """The registries a job reads, over plain web3, shaped like :class:`Protocol`'s."""

    datanets: Any
    models: Any

    @classmethod
    def of(cls, protocol: Web3Protocol) -> Web3Reader:
        return cls(_ViewCalls(protocol["DatanetRegistry"]), _ViewCalls(protocol["ModelRegistry"]))


ChainReader = Protocol | Web3Reader


def published_version(p: ChainReader, datanet_id: int, version: int) -> VersionRef:
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


def current_model(p: ChainReader, model_id: int) -> ModelRef:
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
