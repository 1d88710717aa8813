"""The demo's ModelFactory part: SFT on the demo Datanet's published version, the model
registered with its provenance; then, after the node has served paid answers, the payer's
signed preferences become a preference Datanet (the payer its contributor), and a DPO round on
it publishes the model's next version.

Every step finds the work of an earlier run (a finished job folder, a registered model, the
same feedback Datanet) and reuses it, so the demo can be run again on persisted state.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.attribution.index import AttributionIndex
from backend.datanets.contribute import (
    check_files,
    collect_files,
    register_files,
    split_registered,
    store_files,
)
from backend.datanets.create import create_datanet
from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.publish import Publication, publish_version
from backend.datanets.registry import read_history
from backend.datanets.review import send_reviews
from backend.modelfactory.feedback import (
    FeedbackStore,
    Preference,
    ReceiptIndex,
    sign_preference,
)
from backend.modelfactory.jobs import ATTRIBUTION_DIR, JOB_FILE, TrainedJob, run_job
from backend.modelfactory.publish import Pricing, Published, Split, publish_job
from backend.modelfactory.spec import JobSpec, LoraSettings, TrainSettings
from backend.protocol.contracts import Protocol
from backend.protocol.deployments import PROJECT_ROOT
from backend.protocol.eip712 import feedback_domain
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

OPEN = 10**18
PRICING = Pricing(OPEN // 100, OPEN // 10_000)  # per request, per token (OPEN wei)
SPLIT = Split(5_000, 3_000, 1_500, 500)  # developer, contributors, node, protocol (bps)
MODEL_NAME = "unit-conversions-r8"
LORA = LoraSettings(rank=8, alpha=16.0)


@dataclass(frozen=True)
class Trained:
    workdir: Path
    trained_now: bool
    eval_report: dict[str, Any]
    published: Published
    adapter_cid: str


def _train_and_publish(
    p: Protocol, store: ContentStore, roles: dict[str, Any], data_dir: Path, spec: JobSpec
) -> Trained:
    name = f"{spec.method}-d{spec.datanet_id}v{spec.version}-s{spec.train.max_steps}"
    workdir = data_dir / "jobs" / name
    trained_now = not (workdir / JOB_FILE).is_file()
    if trained_now:
        shutil.rmtree(workdir, ignore_errors=True)  # a job that crashed half-way starts over
        models = PROJECT_ROOT / ".data"  # where the embedded SmolLM2 is converted (make model)
        # progress bars (training steps, attribution sketches) on stderr: never sit silent
        job: TrainedJob | Path = run_job(spec, p.as_web3(), store, workdir, models, progress=True)
    else:
        log.info("reusing the finished job in %s", workdir)
        job = workdir
    artifacts, published = publish_job(
        job, p, store, roles["developer"], name=MODEL_NAME,
        description="SmolLM2-135M-Instruct LoRA that converts units", license="CC0-1.0",
        pricing=PRICING, split=SPLIT, attributor=roles["node operator"].address,
    )  # fmt: skip
    report = json.loads((workdir / "eval_report.json").read_text())
    return Trained(workdir, trained_now, report, published, artifacts.adapter)


def sft_model(
    p: Protocol, store: ContentStore, roles: dict[str, Any], data_dir: Path,
    datanet_id: int, version: int, steps: int,
) -> Trained:  # fmt: skip
    """SFT on the demo Datanet's version; the model registered (or found) on-chain."""
    spec = JobSpec(
        datanet_id, version, "sft", lora=LORA,
        train=TrainSettings(batch_size=8, learning_rate=1e-3, max_length=160, max_steps=steps,
                            eval_fraction=0.1),
    )  # fmt: skip
    return _train_and_publish(p, store, roles, data_dir, spec)


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"-?\d+(?:\.\d+)?", text))


def prefer(reference: str, first: str, second: str) -> int | None:
    """The payer's rule in the demo: the answer sharing more numbers with the Datanet's own
    answer is better (0 or 1); None when they tie (no preference is signed)."""
    truth = _numbers(reference)
    scores = [len(_numbers(first) & truth), len(_numbers(second) & truth)]
    if scores[0] == scores[1]:
        scores = [-len(first), -len(second)] if first != second else scores  # shorter wins
    if scores[0] == scores[1]:
        return None
    return 0 if scores[0] > scores[1] else 1


@dataclass(frozen=True)
class Feedback:
    signed_now: int
    pairs: int
    datanet_id: int
    publication: Publication


def feedback_datanet(
    p: Protocol, store: ContentStore, roles: dict[str, Any], data_dir: Path, model_id: int,
    answers: list[dict[str, Any]], references: dict[str, str], receipts_cids: list[str],
) -> Feedback:  # fmt: skip
    """The payer signs a preference between the two answers to each question, the backend
    checks them against the redeemed receipts, and the export becomes a contribution to a
    preference Datanet (created by the developer, contributed by the payer, approved, published).
    """
    payer, curator = roles["payer"], roles["developer"]
    domain = feedback_domain(int(p.deployment.chain_id), p.models.address)
    receipts = ReceiptIndex.from_logs(store, receipts_cids)
    feedback = FeedbackStore(data_dir / "feedback.db", domain, receipts)
    signed_now = 0
    by_question: dict[str, list[dict[str, Any]]] = {}
    for a in answers:
        by_question.setdefault(a["question"], []).append(a)
    key = bytes.fromhex(payer.private_key.removeprefix("0x"))
    for question, pair in by_question.items():
        if len(pair) != 2:
            continue
        better = prefer(references[question], pair[0]["answer"], pair[1]["answer"])
        if better is None:
            continue
        chosen, rejected = pair[better], pair[1 - better]
        signed = sign_preference(key, domain, Preference(
            bytes.fromhex(chosen["request_hash"].removeprefix("0x")),
            bytes.fromhex(rejected["request_hash"].removeprefix("0x")),
        ))  # fmt: skip
        signed_now += feedback.add_preference(signed, question, chosen["answer"],
                                              rejected["answer"])  # fmt: skip
    export = feedback.export_preferences(model_id)
    pairs = export.count(b"\n")
    metadata = DatanetMetadata(
        f"feedback on model {model_id}", "preferences signed by the payers of its answers",
        "CC0-1.0", DataFormat.PREFERENCE,
    )  # fmt: skip
    created = create_datanet(p, store, curator, metadata)
    path = data_dir / "feedback" / f"model-{model_id}-preferences.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if pairs:
        path.write_bytes(export)
        stored = list(store_files(store, check_files(metadata, collect_files([path]))))
        _, todo = split_registered(p, created.datanet_id, stored, payer.address)
        for _ in register_files(p, created.datanet_id, payer, todo):
            pass
        pending = [c.id for c in read_history(p, created.datanet_id).pending()]
        if pending:
            send_reviews(p, created.datanet_id, curator, pending, [])
    publication = publish_version(p, store, created.datanet_id, curator)
    return Feedback(signed_now, pairs, created.datanet_id, publication)


def dpo_model(
    p: Protocol, store: ContentStore, roles: dict[str, Any], data_dir: Path,
    model_id: int, prefs: Feedback, steps: int,
) -> Trained:  # fmt: skip
    """DPO on the feedback Datanet's version: the model's next version."""
    spec = JobSpec(
        prefs.datanet_id, prefs.publication.version, "dpo", lora=LORA, model_id=model_id,
        train=TrainSettings(batch_size=2, learning_rate=5e-4, max_length=160, max_steps=steps,
                            eval_fraction=0.25, beta=0.1),
    )  # fmt: skip
    return _train_and_publish(p, store, roles, data_dir, spec)


def index_summary(trained: Trained) -> tuple[str, int, int, int]:
    """(CID, examples, contributions, lineage members) of a job's attribution index."""
    index, cid = AttributionIndex.read_folder(trained.workdir / ATTRIBUTION_DIR)
    return cid, len(index.corpus), len(index.corpus.contributions), len(index.lineage)
