"""Publish a trained adapter: its files to the content store, then the model on-chain, through
the SDK (:class:`backend.sdk.OpenLedger`, as the developer; training needs no chain: :mod:`.jobs`).

Everything goes to the store first (adapter archive, training manifest, eval report, loss curve,
model metadata) and the chain last, in one transaction: a crash before it leaves only content
nobody points to, and a re-run stores the same bytes under the same CIDs. Before sending, the
chain is read for a version of this model that already names the same adapter and training
manifest (a re-run after a crash that followed the transaction): it is reported, not repeated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend.modelfactory.jobs import (
    ADAPTER_DIR,
    ATTRIBUTION_DIR,
    EVAL_REPORT,
    JOB_FILE,
    LOSS_CURVE,
    LOSS_PLOT,
    TRAINING_MANIFEST,
    JobError,
    TrainedJob,
)
from backend.modelfactory.spec import JobSpec
from backend.models.adapter_archive import pack_adapter
from backend.protocol.canonical import canonical_json
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

BPS = 10_000


class PublishError(RuntimeError):
    """The model cannot be published as asked; the message says why."""


@dataclass(frozen=True)
class Pricing:
    per_request: int  # OPEN wei per inference
    per_token: int  # OPEN wei per token in or out

    def __post_init__(self) -> None:
        for name, value in (("per_request", self.per_request), ("per_token", self.per_token)):
            if not 0 <= value < 2**96:
                raise PublishError(f"pricing.{name} must be in [0, 2^96), not {value}")


@dataclass(frozen=True)
class Split:
    developer: int  # basis points
    contributors: int
    node: int
    protocol: int

    def __post_init__(self) -> None:
        parts = (self.developer, self.contributors, self.node, self.protocol)
        if any(p < 0 for p in parts) or sum(parts) != BPS:
            raise PublishError(f"split {parts} must be non-negative basis points summing to {BPS}")


@dataclass(frozen=True)
class Artifacts:
    """CIDs of what a job produced (or an import brought), all in the content store."""

    adapter: str  # the PEFT adapter archive (what nodes serve)
    training_manifest: str  # every example -> its contribution (what attribution scores)
    metadata: str  # the model's metadata: name, description, and the CIDs here
    eval_report: str | None = None  # None: an imported adapter, not evaluated here
    loss_curve: str | None = None  # JSON
    loss_plot: str | None = None  # PNG
    attribution: str | None = None  # the attribution index's index.json (it names its files)


@dataclass(frozen=True)
class Published:
    model_id: int
    version: int
    registered_now: bool  # a new model (False: a new version of an existing one)
    sent_now: bool  # False when the chain already held this version (a re-run)


def model_metadata(
    name: str,
    description: str,
    license: str,
    method: str,
    base_model: str,
    datanet_id: int,
    datanet_version: int,
) -> dict[str, Any]:
    """The model's metadata document, less the artifacts' CIDs (:func:`store_artifacts`)."""
    return {"name": name, "description": description, "license": license, "method": method,
            "base_model": base_model, "datanet": {"id": datanet_id, "version": datanet_version},
            "prompt_format": "chat_template"}  # fmt: skip


def store_artifacts(
    store: ContentStore,
    adapter_dir: Path,
    training_manifest: bytes,
    metadata: dict[str, Any],
    *,
    eval_report: dict[str, Any] | None = None,
    loss_curve_json: Path | None = None,
    loss_plot_png: Path | None = None,
    attribution_dir: Path | None = None,
) -> Artifacts:
    """Puts every artifact into ``store``; the metadata names all the others by CID. The
    attribution index's files go first: the training manifest names its ``index.json``."""
    attribution = None
    if attribution_dir is not None and (attribution_dir / "index.json").is_file():
        for path in sorted(attribution_dir.iterdir()):
            stored = store.put(path.read_bytes())
            if path.name == "index.json":
                attribution = stored
    adapter = store.put(pack_adapter(adapter_dir))
    manifest = store.put(training_manifest)
    report = None if eval_report is None else store.put(_canonical(eval_report))
    curve = None if loss_curve_json is None else store.put(loss_curve_json.read_bytes())
    plot = None if loss_plot_png is None else store.put(loss_plot_png.read_bytes())
    links = {"adapter": adapter, "training_manifest": manifest, "eval_report": report,
             "loss_curve": curve, "loss_plot": plot, "attribution_index": attribution}  # fmt: skip
    links = {key: cid for key, cid in links.items() if cid is not None}
    meta = store.put(_canonical({**metadata, "artifacts": links}))
    log.info("stored adapter %s, training manifest %s, eval report %s", adapter, manifest, report)
    return Artifacts(adapter, manifest, meta, report, curve, plot, attribution)


def _canonical(data: dict[str, Any]) -> bytes:
    return canonical_json(data)


def publish_model(
    ol: OpenLedger,
    artifacts: Artifacts,
    base_model_cid: str,
    datanet_id: int,
    datanet_version: int,
    *,
    model_id: int | None = None,
    pricing: Pricing | None = None,
    split: Split | None = None,
    attributor: str | None = None,
) -> Published:
    """Registers a new model as the sender (``model_id`` None: needs pricing, split and
    attributor) or publishes a new version of ``model_id`` (its developer only: the contract
    refuses anyone else, and the simulation says so before anything is sent)."""
    if model_id is not None:
        return _publish_version(ol, artifacts, datanet_id, datanet_version, model_id)
    if pricing is None or split is None or attributor is None:
        raise PublishError("a new model needs pricing, split and attributor")
    existing = _find_version(ol, artifacts)
    if existing is not None:
        log.info("model %d version %d already holds adapter %s", *existing, artifacts.adapter)
        return Published(existing[0], existing[1], registered_now=False, sent_now=False)
    spec = (
        artifacts.metadata, base_model_cid, artifacts.adapter, artifacts.training_manifest,
        datanet_id, datanet_version, (pricing.per_request, pricing.per_token),
        tuple(asdict(split).values()), attributor,
    )  # fmt: skip
    receipt = ol.send("register model", ol.models.functions.registerModel(spec))
    model = int(ol.event(receipt, ol.models, "ModelRegistered").modelId)
    log.info("registered model %d with adapter %s", model, artifacts.adapter)
    return Published(model, 1, registered_now=True, sent_now=True)


def _holds(version: object, artifacts: Artifacts) -> bool:
    """Whether an on-chain model version names these artifacts (a re-run after a crash)."""
    held = (version.adapterCID, version.trainingManifestCID)  # type: ignore[attr-defined]
    return held == (artifacts.adapter, artifacts.training_manifest)


def _publish_version(
    ol: OpenLedger, artifacts: Artifacts, datanet_id: int, datanet_version: int, model_id: int
) -> Published:
    models = ol.models.functions
    model = ol.read(f"model {model_id}", models.model(model_id))
    count = int(model.versionCount)
    if model.developer == ol.address:  # only its developer's versions can be this re-run's
        for version in range(count, 0, -1):
            if _holds(models.modelVersion(model_id, version).call(), artifacts):
                return Published(model_id, version, registered_now=False, sent_now=False)
    args = (model_id, artifacts.adapter, artifacts.training_manifest, datanet_id, datanet_version)
    ol.send(f"publish model {model_id} version {count + 1}", models.publishVersion(*args))
    log.info("model %d version %d: adapter %s", model_id, count + 1, artifacts.adapter)
    return Published(model_id, count + 1, registered_now=False, sent_now=True)


def _find_version(ol: OpenLedger, artifacts: Artifacts) -> tuple[int, int] | None:
    """A model of the sender whose version 1 already holds these artifacts (a re-run)."""
    models = ol.models.functions
    for model_id in range(int(models.modelCount().call()), 0, -1):
        if models.model(model_id).call().developer != ol.address:
            continue
        if _holds(models.modelVersion(model_id, 1).call(), artifacts):
            return model_id, 1
    return None


def publish_job(
    job: Path | TrainedJob,
    ol: OpenLedger,
    store: ContentStore,
    *,
    name: str,
    description: str = "",
    license: str = "",
    pricing: Pricing | None = None,
    split: Split | None = None,
    attributor: str | None = None,
) -> tuple[Artifacts, Published]:
    """Stores a trained job's artifacts and registers the model as the sender, or (the spec
    names a model) publishes its next version. Safe to repeat: see
    :mod:`backend.modelfactory.publish`."""
    workdir = job.workdir if isinstance(job, TrainedJob) else Path(job)
    try:
        record = json.loads((workdir / JOB_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise JobError(f"{workdir} holds no finished job ({JOB_FILE}: {exc})") from None
    spec = JobSpec.from_json(record["spec"])
    metadata = model_metadata(name, description, license, spec.method, spec.base_model,
                              spec.datanet_id, spec.version)  # fmt: skip
    artifacts = store_artifacts(
        store, workdir / ADAPTER_DIR, (workdir / TRAINING_MANIFEST).read_bytes(), metadata,
        eval_report=json.loads((workdir / EVAL_REPORT).read_text()),
        loss_curve_json=workdir / LOSS_CURVE, loss_plot_png=workdir / LOSS_PLOT,
        attribution_dir=workdir / ATTRIBUTION_DIR,
    )  # fmt: skip
    published = publish_model(
        ol, artifacts, record["base_model_cid"], spec.datanet_id, spec.version,
        model_id=spec.model_id, pricing=pricing, split=split, attributor=attributor,
    )  # fmt: skip
    return artifacts, published
