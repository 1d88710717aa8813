"""A ModelFactory job end to end: published Datanet version -> verified data -> examples with
provenance -> LoRA SFT or DPO -> evaluation -> artifacts in the work folder.

:func:`run_job` trains and writes everything a publication needs into ``workdir`` (adapter,
training manifest, eval report, loss curve JSON + PNG, the job spec), reading the chain through
plain web3; :func:`backend.modelfactory.publish.publish_job` puts them into the content store
and registers the model (or its next version) on-chain, through ape. The two are separate so a
job can be inspected before anything is published, a publication that crashed can be repeated
from the work folder without training again, and the API's job worker trains without ape.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.attribution.build import MemberExamples, build_index
from backend.attribution.index import LineageMember
from backend.attribution.lineage import ancestor_members
from backend.attribution.settings import AttributionSettings
from backend.datanets.formats import DataFormat
from backend.modelfactory.chain import current_model, published_version
from backend.modelfactory.dataset import (
    DatasetError,
    Example,
    VersionData,
    build_examples,
    load_version_data,
    split_examples,
)
from backend.modelfactory.dpo import Pair, preference_metrics, train_dpo
from backend.modelfactory.evaluate import evaluate
from backend.modelfactory.lora_training import DeviceError, resolve_device
from backend.modelfactory.provenance import build_training_manifest
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import BUILTIN_BASE, JobSpec, JobSpecError
from backend.modelfactory.training_loop import save_loss_curve
from backend.models.adapter_archive import pack_adapter, unpack_adapter
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore
from backend.storage.unixfs import compute_cid

log = logging.getLogger(__name__)
StepCallback = Callable[[int, int], None]  # (step, total steps)

ADAPTER_DIR = "adapter"
TRAINING_MANIFEST = "training_manifest.json"
EVAL_REPORT = "eval_report.json"
LOSS_CURVE = "loss_curve.json"
LOSS_PLOT = "loss_curve.png"
JOB_FILE = "job.json"
ATTRIBUTION_DIR = "attribution"  # the attribution index (index.json names the other files)


class JobError(RuntimeError):
    """A job that cannot go on; the message says which input was wrong."""


@dataclass(frozen=True)
class TrainedJob:
    """What :func:`run_job` left in ``workdir``, with the numbers a caller shows."""

    spec: JobSpec
    workdir: Path
    base_model_cid: str
    datanet_manifest_cid: str
    examples: int
    skipped_rows: int
    train_examples: int
    eval_examples: int
    tokens_per_second: float
    eval_report: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.workdir / ADAPTER_DIR


def resolve_base(base_model: str, data_dir: Path) -> tuple[Path, str]:
    """The base model's folder and the CID of its weights (what the model registers as its
    base; nodes check that they serve the same bytes)."""
    if base_model == BUILTIN_BASE:
        from backend.models.base_models import ensure_smollm2

        folder = ensure_smollm2(data_dir)
    else:
        folder = Path(base_model)
        if not (folder / "config.json").is_file():
            raise JobSpecError(f"base_model {base_model!r} is not a model folder (no config.json)")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise JobSpecError(f"base model {folder} has no single model.safetensors to name by CID")
    return folder, compute_cid(_chunks(weights))


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def load_published_version(
    p: Web3Protocol, store: ContentStore, datanet_id: int, version: int
) -> VersionData:
    """Every byte of the published ``version`` of ``datanet_id``, verified by CID, its manifest
    holding the Merkle root the chain recorded."""
    ref = published_version(p, datanet_id, version)
    data = load_version_data(store, datanet_id, version, ref.manifest_cid, ref.metadata_cid)
    if data.manifest.root != ref.merkle_root:
        raise DatasetError(
            f"the manifest {ref.manifest_cid} of Datanet {datanet_id} version {version} does "
            "not have the Merkle root recorded on-chain"
        )
    return data


def run_job(
    spec: JobSpec,
    p: Web3Protocol,
    store: ContentStore,
    workdir: Path,
    data_dir: Path,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> TrainedJob:
    """Trains ``spec`` and writes its artifacts into ``workdir`` (created; must be empty).
    ``on_step(step, total)`` follows the training steps (the API's job status shows them)."""
    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        raise JobError(f"work folder {workdir} is not empty; give a new one")
    try:
        resolve_device(spec.train.device)  # before any fetching: a machine without it fails now
    except DeviceError as why:
        raise JobError(str(why)) from None
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = load_published_version(p, store, spec.datanet_id, spec.version)
    examples, report = build_examples(data)
    log.info("Datanet %d v%d: %d examples, %d malformed rows skipped", spec.datanet_id,
             spec.version, len(examples), report.skipped)  # fmt: skip
    if len(examples) < 2:
        raise JobError(
            f"Datanet {spec.datanet_id} version {spec.version} gives {len(examples)} usable "
            f"examples ({report.skipped} malformed rows skipped); a job needs at least 2"
        )
    train, held = split_examples(examples, spec.train.eval_fraction, spec.train.seed)
    base_dir, base_cid = resolve_base(spec.base_model, data_dir)
    adapter_dir = workdir / ADAPTER_DIR
    if spec.method == "sft":
        result = _sft(spec, base_dir, train, held, adapter_dir, workdir, progress, on_step)
    else:
        result = _dpo(spec, p, store, data.metadata.format, base_dir, train, held, adapter_dir,
                      workdir, progress, on_step)  # fmt: skip
    eval_report, tokens_per_second, unused = result
    attribution = _attribution_index(spec, p, store, base_dir, base_cid, train, unused, workdir,
                                     progress)  # fmt: skip
    manifest = build_training_manifest(
        spec, data, report, train, held, spec.base_model, base_cid, unused=unused,
        attribution=attribution,
    )  # fmt: skip
    manifest.verify_against(data.manifest)
    (workdir / TRAINING_MANIFEST).write_bytes(manifest.to_json_bytes())
    eval_report = {**eval_report, "build": report.to_json(),
                   "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    (workdir / EVAL_REPORT).write_text(json.dumps(eval_report, indent=2, sort_keys=True) + "\n")
    job = {"spec": spec.to_json(), "base_model_cid": base_cid,
           "datanet_manifest_cid": data.manifest_cid}  # fmt: skip
    (workdir / JOB_FILE).write_text(json.dumps(job, indent=2, sort_keys=True) + "\n")
    return TrainedJob(
        spec, workdir, base_cid, data.manifest_cid, len(examples), report.skipped, len(train),
        len(held), tokens_per_second, eval_report,
    )  # fmt: skip


def _attribution_index(
    spec: JobSpec,
    p: Web3Protocol,
    store: ContentStore,
    base_dir: Path,
    base_cid: str,
    train: list[Example],
    unused: tuple[int, ...],
    workdir: Path,
    progress: bool,
) -> str:
    """Builds the attribution index of the trained adapter over its lineage's examples into
    ``workdir/attribution``; returns the CID of its ``index.json``."""
    members = ancestor_members(p, store, spec.model_id) if spec.method == "dpo" else []
    skip = set(unused)
    own = [(i, e) for i, e in enumerate(train) if i not in skip]
    members.append(MemberExamples(LineageMember(None, spec.datanet_id, spec.version,
                                                spec.method), own))  # fmt: skip
    adapter_dir = workdir / ADAPTER_DIR
    index, stats = build_index(
        base_dir, adapter_dir, members, AttributionSettings(), spec.train.max_length,
        compute_cid(pack_adapter(adapter_dir)), base_cid, device=spec.train.device,
        progress=progress,
    )  # fmt: skip
    cid = index.write(workdir / ATTRIBUTION_DIR)
    log.info("attribution index %s: %d examples of %d lineage member(s), %d tokens",
             cid, stats.documents, len(members), stats.tokens)  # fmt: skip
    return cid


def _sft(
    spec: JobSpec,
    base_dir: Path,
    train: list[Example],
    held: list[Example],
    adapter_dir: Path,
    workdir: Path,
    progress: bool,
    on_step: StepCallback | None,
) -> tuple[dict[str, Any], float, tuple[int, ...]]:
    result = train_sft(base_dir, train, spec.lora, spec.train, adapter_dir, progress=progress,
                       on_step=on_step)  # fmt: skip
    save_loss_curve(result.loss_curve, workdir / LOSS_CURVE, workdir / LOSS_PLOT)
    report = evaluate(base_dir, adapter_dir, held, spec.train.max_length,
                      device=spec.train.device, progress=progress)  # fmt: skip
    log.info("held-out loss %.3f -> %.3f (%.0f%% lower)", report.base_loss, report.adapter_loss,
             100 * report.relative_loss_reduction)  # fmt: skip
    data = {"method": "sft", "training": {"steps": result.steps, "tokens": result.tokens,
            "seconds": result.seconds, "tokens_per_second": result.tokens_per_second},
            **report.to_json()}  # fmt: skip
    return data, result.tokens_per_second, result.dropped


def _pairs(examples: list[Example]) -> list[Pair]:
    return [Pair(e.prompt or "", e.chosen or "", e.rejected or "") for e in examples]


def _dpo(
    spec: JobSpec,
    p: Web3Protocol,
    store: ContentStore,
    data_format: DataFormat,
    base_dir: Path,
    train: list[Example],
    held: list[Example],
    adapter_dir: Path,
    workdir: Path,
    progress: bool,
    on_step: StepCallback | None,
) -> tuple[dict[str, Any], float, tuple[int, ...]]:
    if data_format is not DataFormat.PREFERENCE:
        raise JobError(
            f"method 'dpo' needs a Datanet of preference pairs; Datanet {spec.datanet_id} "
            f"holds {data_format.value} data"
        )
    assert spec.model_id is not None  # JobSpec checks it
    model = current_model(p, spec.model_id)
    init_dir = workdir / "initial_adapter"
    init_dir.mkdir()
    for name, content in unpack_adapter(store.get(model.adapter_cid)).items():
        (init_dir / name).write_bytes(content)
    held_pairs = _pairs(held)

    def metrics(policy: Path, reference: Path | None) -> dict[str, float | int]:
        return preference_metrics(base_dir, policy, reference, held_pairs, spec.train.beta,
                                  spec.train.max_length, device=spec.train.device)  # fmt: skip

    # implicit rewards against the base model: "before" is the current adapter, "after" the new
    # one (against the current adapter itself "before" would be 0 by definition)
    before = metrics(init_dir, None)
    result = train_dpo(base_dir, init_dir, _pairs(train), spec.lora, spec.train, adapter_dir,
                       progress=progress, on_step=on_step)  # fmt: skip
    after = metrics(adapter_dir, None)
    after_vs_current = metrics(adapter_dir, init_dir)
    curve = [{"step": i + 1, "epoch": 0, "loss": loss} for i, loss in enumerate(result.losses)]
    save_loss_curve(curve, workdir / LOSS_CURVE, workdir / LOSS_PLOT)
    log.info("held-out preference accuracy %.2f -> %.2f", before["accuracy"], after["accuracy"])
    data = {"method": "dpo", "improves": {"model_id": model.model_id, "version": model.version,
            "adapter": model.adapter_cid}, "training": result.to_json(),
            "held_out_preferences": {"before": before, "after": after,
                                     "after_vs_current": after_vs_current}}  # fmt: skip
    tokens_per_second = result.tokens * spec.train.epochs / max(result.seconds, 1e-9)
    return data, tokens_per_second, ()
