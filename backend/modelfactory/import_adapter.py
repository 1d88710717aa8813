"""Import a PEFT LoRA adapter trained outside ModelFactory: check it against the base model,
justify its training manifest, store it and register it on-chain.

Everything is checked before anything is stored or sent, so a refused import leaves nothing
behind: the adapter against the base model (:mod:`.adapter_check`), the Datanet version
(published, its data verified by CID and Merkle root), and the developer's training data
matched to that version's examples by content (:mod:`.example_matching`). Then the adapter
(canonical archive), the training manifest (schema 3, :mod:`.import_record`) and the metadata
go to the content store and the model is registered, or published as a new version, exactly as
a trained job is (:mod:`.publish`), in one transaction.

What the manifest can justify, it says: which of the developer's examples are examples of the
version (and which are not); that the adapter was trained on them stays the developer's word.
Without data it records the version as declared by the developer, unverified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.datanets.formats import DataFormat
from backend.modelfactory.adapter_check import base_name, check_adapter
from backend.modelfactory.chain import current_model
from backend.modelfactory.dataset import build_examples
from backend.modelfactory.example_matching import MatchResult, match_files
from backend.modelfactory.import_record import ImportRecord
from backend.modelfactory.jobs import load_published_version, resolve_base
from backend.modelfactory.provenance import build_import_manifest
from backend.modelfactory.publish import (
    Artifacts,
    Pricing,
    Published,
    PublishError,
    Split,
    model_metadata,
    publish_model,
    store_artifacts,
)
from backend.modelfactory.spec import BUILTIN_BASE
from backend.models.adapter_config import AdapterConfig
from backend.protocol.web3_protocol import Web3Protocol
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore


class AdapterImportError(RuntimeError):
    """An adapter that cannot be imported as asked; the message says what was wrong."""


@dataclass(frozen=True)
class Imported:
    """What an import stored and registered, and how its data matched."""

    artifacts: Artifacts
    published: Published
    config: AdapterConfig
    record: ImportRecord
    examples: int  # examples of the version the training manifest lists


def import_adapter(
    adapter_dir: Path,
    ol: OpenLedger,
    store: ContentStore,
    *,
    datanet_id: int,
    version: int,
    data_files: Sequence[Path] = (),
    unverified: bool = False,
    method: str = "sft",
    base_model: str = BUILTIN_BASE,
    base_alias: str | None = None,
    data_dir: Path,
    name: str,
    description: str = "",
    license: str = "",
    pricing: Pricing | None = None,
    split: Split | None = None,
    attributor: str | None = None,
    model_id: int | None = None,
) -> Imported:
    """Checks the adapter in ``adapter_dir`` and the claim that it was trained on ``version``
    of ``datanet_id`` (with ``data_files``, or ``unverified``), then stores it and registers a
    new model as the sender (``model_id`` None) or publishes the next version of
    ``model_id``."""
    adapter_dir = Path(adapter_dir)
    if bool(data_files) == unverified:
        raise AdapterImportError(
            "give the training data (--data FILE, in the Datanet's format) to match every "
            "example to the version's contributions, or --unverified to record the version as "
            "your declaration alone (not both)"
        )
    unreadable = [str(f) for f in data_files if not Path(f).is_file()]
    if unreadable:
        raise AdapterImportError(f"training data file(s) not found: {', '.join(unreadable)}")
    if model_id is None and (pricing is None or split is None or attributor is None):
        raise PublishError("a new model needs pricing, split and attributor")
    web3 = ol.protocol
    base_dir, base_cid = resolve_base(base_model, data_dir)
    config = check_adapter(adapter_dir, base_dir, base_name(base_model), base_alias)
    if model_id is not None:
        _check_model(web3, model_id, ol.address, base_cid)
    data = load_published_version(web3, store, datanet_id, version)
    fmt = data.metadata.format
    if method == "dpo" and fmt is not DataFormat.PREFERENCE:
        raise AdapterImportError(
            f"method 'dpo' needs a Datanet of preference pairs; Datanet {datanet_id} holds "
            f"{fmt.value} data"
        )
    examples, report = build_examples(data)
    if unverified:
        record, matched = ImportRecord(method, "declared_unverified"), []
    else:
        result = match_files(examples, fmt, data_files)
        _require_matches(result, datanet_id, version)
        record, matched = ImportRecord(method, "content_sha256", result.files), result.matched
    manifest = build_import_manifest(record, data, report, matched, base_model, base_cid)
    metadata = {**model_metadata(name, description, license, method, base_model, datanet_id,
                                 version), "origin": "imported"}  # fmt: skip
    artifacts = store_artifacts(store, adapter_dir, manifest.to_json_bytes(), metadata)
    published = publish_model(
        ol, artifacts, base_cid, datanet_id, version, model_id=model_id,
        pricing=pricing, split=split, attributor=attributor,
    )  # fmt: skip
    return Imported(artifacts, published, config, record, len(matched))


def _check_model(web3: Web3Protocol, model_id: int, developer: str, base_cid: str) -> None:
    """A new version of ``model_id``: the developer's own model, on the same base. Checked
    before anything is matched or stored (the base is not the contract's to check)."""
    model = current_model(web3, model_id)
    if model.developer.lower() != developer.lower():
        raise PublishError(
            f"model {model_id} belongs to {model.developer}; only its developer publishes versions"
        )
    if model.base_model_cid != base_cid:
        raise AdapterImportError(
            f"model {model_id} serves base model {model.base_model_cid}; this adapter's base "
            f"model is {base_cid}"
        )


def _require_matches(result: MatchResult, datanet_id: int, version: int) -> None:
    if result.matched:
        return
    files = ", ".join(f.name for f in result.files)
    raise AdapterImportError(
        f"none of the {result.examples} examples in {files} is an example of Datanet "
        f"{datanet_id} version {version} (matched by the sha256 of their content); is it the "
        "version the adapter was trained on, and are the files in the Datanet's format?"
    )
