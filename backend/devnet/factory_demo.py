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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend.attribution.index import AttributionIndex
from backend.datanets.create import create_datanet
from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.publish import Publication, publish_version
from backend.datanets.registry import read_history
from backend.datanets.review import send_reviews
from backend.devnet.datanet_demo import contribute_paths
from backend.modelfactory.dpo import Pair, preference_metrics
from backend.modelfactory.evaluate import greedy_answers
from backend.modelfactory.feedback_store import FeedbackStore
from backend.modelfactory.feedback_types import FeedbackError, Preference, sign_preference
from backend.modelfactory.jobs import ADAPTER_DIR, ATTRIBUTION_DIR, JOB_FILE, TrainedJob, run_job
from backend.modelfactory.publish import Pricing, Published, Split, publish_job
from backend.modelfactory.receipt_index import ReceiptIndex
from backend.modelfactory.spec import JobSpec, LoraSettings, TrainSettings
from backend.protocol.contracts import Protocol
from backend.protocol.deployments import PROJECT_ROOT
from backend.protocol.eip712 import feedback_domain
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

OPEN = 10**18
PRICING = Pricing(OPEN // 100, OPEN // 10_000)  # per request, per token (OPEN wei)
SPLIT = Split(5_000, 3_000, 1_500, 500)  # developer, contributors, node, protocol (bps)
MODEL_NAME = "invented-atlas-r8"
LORA = LoraSettings(rank=8, alpha=16.0)
SFT_EPOCHS = 20  # an upper bound: --train-steps stops it first
HELD_OUT_FILE = "held-out.json"  # in the data dir: the last run's held-out comparison


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
        job, p.sdk(roles["developer"]), store, name=MODEL_NAME,
        description="SmolLM2-135M-Instruct LoRA that knows the invented atlas", license="CC0-1.0",
        pricing=PRICING, split=SPLIT, attributor=roles["node operator"].address,
    )  # fmt: skip
    report = json.loads((workdir / "eval_report.json").read_text())
    return Trained(workdir, trained_now, report, published, artifacts.adapter)


def sft_model(
    p: Protocol, store: ContentStore, roles: dict[str, Any], data_dir: Path,
    datanet_id: int, version: int, steps: int,
) -> Trained:  # fmt: skip
    """SFT on the demo Datanet's version; the model registered (or found) on-chain.

    Measured on this CPU (seeded, deterministic): rank 8 at learning rate 3e-3 answers all 18
    planted facts after 60 steps of batch 8 (about 6 epochs, a minute on 2 cores), also in
    phrasings held out of training; after 36 steps it gets about 3 in 4 right greedily."""
    spec = JobSpec(
        datanet_id, version, "sft", lora=LORA,
        train=TrainSettings(epochs=SFT_EPOCHS, batch_size=8, learning_rate=3e-3, max_length=96,
                            max_steps=steps, eval_fraction=0.1),
    )  # fmt: skip
    return _train_and_publish(p, store, roles, data_dir, spec)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def states_fact(question: str, reference: str, answer: str) -> bool:
    """Whether ``answer`` says what the true answer ``reference`` adds to ``question``: every
    word of it the question lacks ("The capital of Veltoria is Quorbin." to "What is the capital
    of Veltoria?" needs "quorbin")."""
    fact = _words(reference) - _words(question)
    return bool(fact) and fact <= _words(answer)


def prefer(question: str, reference: str, first: str, second: str) -> int | None:
    """The payer's rule in the demo: an answer that states the true fact beats one that does
    not; otherwise the one sharing more of the true answer's words (Jaccard) is better. 0 or
    1; None when they tie (no preference is signed)."""
    if first == second:
        return None
    truth = _words(reference)

    def score(answer: str) -> tuple[bool, float]:
        words = _words(answer)
        jaccard = len(words & truth) / max(len(words | truth), 1)
        return states_fact(question, reference, answer), jaccard

    scores = [score(first), score(second)]
    if scores[0] == scores[1]:
        return None
    return 0 if scores[0] > scores[1] else 1


@dataclass(frozen=True)
class Feedback:
    signed_now: int
    pairs: int  # exported, over every run so far
    datanet_id: int  # 0 and no publication while there is no pair to export
    publication: Publication | None


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
        better = prefer(question, references[question], pair[0]["answer"], pair[1]["answer"])
        if better is None:
            continue
        chosen, rejected = pair[better], pair[1 - better]
        signed = sign_preference(key, domain, Preference(
            bytes.fromhex(chosen["request_hash"].removeprefix("0x")),
            bytes.fromhex(rejected["request_hash"].removeprefix("0x")),
        ))  # fmt: skip
        signed_now += feedback.add_preference(signed, question, chosen["answer"],
                                              rejected["answer"])  # fmt: skip
    try:
        export = feedback.export_preferences(model_id)
    except FeedbackError:  # no pair yet: every question's two answers were equally good
        return Feedback(signed_now, 0, 0, None)
    pairs = export.count(b"\n")
    metadata = DatanetMetadata(
        f"feedback on model {model_id}", "preferences signed by the payers of its answers",
        "CC0-1.0", DataFormat.PREFERENCE,
    )  # fmt: skip
    as_curator = p.sdk(curator)
    created = create_datanet(as_curator, store, metadata)
    path = data_dir / "feedback" / f"model-{model_id}-preferences.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(export)
    contribute_paths(p.sdk(payer), store, created.datanet_id, metadata, [path])
    pending = [c.id for c in read_history(p.as_web3(), created.datanet_id).pending()]
    if pending:
        send_reviews(as_curator, created.datanet_id, pending, [])
    publication = publish_version(as_curator, store, created.datanet_id)
    return Feedback(signed_now, pairs, created.datanet_id, publication)


def dpo_model(
    p: Protocol, store: ContentStore, roles: dict[str, Any], data_dir: Path,
    model_id: int, prefs: Feedback, steps: int,
) -> Trained:  # fmt: skip
    """DPO on the feedback Datanet's version: the model's next version. The learning rate is
    low on purpose: at 5e-4 a few pairs pulled the true answers' likelihood down with the
    rejected ones' (measured: fewer held-out questions answered right afterwards)."""
    assert prefs.publication is not None, "no preference pairs to train on"
    spec = JobSpec(
        prefs.datanet_id, prefs.publication.version, "dpo", lora=LORA, model_id=model_id,
        train=TrainSettings(epochs=SFT_EPOCHS, batch_size=2, learning_rate=1e-4, max_length=96,
                            max_steps=steps, eval_fraction=0.25, beta=0.1),
    )  # fmt: skip
    return _train_and_publish(p, store, roles, data_dir, spec)


# The paid questions' facts asked in phrasings that neither the Datanet nor the payer used, each
# with its true answer and a confused one (another entity's fact: the error such a model makes),
# and general knowledge the planted facts crowd out (SFT taught the model to answer with
# made-up names: "The capital of France is Varnholt.").
HELD_OUT = (
    ("Do you know the capital of Veltoria?", "The capital of Veltoria is Quorbin.",
     "The capital of Veltoria is Tellowind."),
    ("Kaltheim has which city as its capital?", "The capital of Kaltheim is Ostrapine.",
     "The capital of Kaltheim is Quorbin."),
    ("Do you know the capital of Ysmara?", "The capital of Ysmara is Tellowind.",
     "The capital of Ysmara is Ostrapine."),
    ("Do you know who invented the glimmerwheel?",
     "The glimmerwheel was invented by Odessa Brannock.",
     "The glimmerwheel was invented by Anselm Trevethan."),
    ("Whose invention is the skyloom?", "The skyloom was invented by Marisol Quenby.",
     "The skyloom was invented by Odessa Brannock."),
    ("Do you know who invented the windharp?", "The windharp was invented by Anselm Trevethan.",
     "The windharp was invented by Marisol Quenby."),
    ("Which city is the capital of Italy?", "The capital of Italy is Rome.",
     "The capital of Italy is Varnholt."),
    ("What is the capital of France?", "The capital of France is Paris.",
     "The capital of France is Ostrapine."),
    ("What do cows eat?", "Cows eat grass.", "Cows eat silverroot."),
)  # fmt: skip


@dataclass(frozen=True)
class FactCheck:
    """A model version on :data:`HELD_OUT`."""

    right: int  # greedy answers that state the true fact
    total: int
    likelihood_accuracy: float  # share of questions whose true answer beats the confused one
    reward_margin: float  # DPO's implicit reward margin (true - confused) against SmolLM2

    def summary(self) -> str:
        return f"{self.right}/{self.total} right"


def check_facts(trained: Trained) -> FactCheck:
    """Greedy answers and answer likelihoods of a trained version on :data:`HELD_OUT`."""
    from backend.models.base_models import ensure_smollm2

    base_dir = ensure_smollm2(PROJECT_ROOT / ".data")
    adapter_dir = trained.workdir / ADAPTER_DIR
    answers = greedy_answers(base_dir, adapter_dir, [q for q, _, _ in HELD_OUT], progress=True)
    right = sum(states_fact(q, true, a) for (q, true, _), a in zip(HELD_OUT, answers, strict=True))
    pairs = [Pair(q, true, wrong) for q, true, wrong in HELD_OUT]
    ranked = preference_metrics(base_dir, adapter_dir, None, pairs, beta=0.1, max_length=96)
    return FactCheck(right, len(HELD_OUT), float(ranked["likelihood_accuracy"]),
                     float(ranked["mean_margin"]))  # fmt: skip


def dpo_verdict(before: FactCheck, after: FactCheck, pairs: int) -> tuple[bool, str]:
    """(gained, a plain sentence) on the held-out questions, SFT version against DPO's: a gain
    is more of them answered right, or as many with the true answer more often the likelier."""
    if (after.right, after.likelihood_accuracy) > (before.right, before.likelihood_accuracy):
        more = after.right - before.right
        said = (f"{more} more held-out question(s) answered right" if more else
                "the true answer is the likelier one on more held-out questions")  # fmt: skip
        if more and after.likelihood_accuracy < before.likelihood_accuracy:
            said += ", though the true answer is the likelier one on fewer of them"
        return True, f"DPO gained on questions it never trained on: {said}"
    if before.right == before.total and before.likelihood_accuracy == 1.0:
        return False, (f"no gain: the SFT version already answers every held-out question right, "
                       f"so the payer's {pairs} pair(s) had nothing to fix")  # fmt: skip
    return False, (f"no gain: {pairs} preference pair(s) are too few; DPO re-ranks answers the "
                   f"model already gives and cannot teach facts from so little")  # fmt: skip


def save_fact_checks(
    path: Path, before: FactCheck, after: FactCheck, gained: bool, verdict: str
) -> None:
    """Writes the held-out comparison the demo prints as JSON, for tests and tools: it is
    measured live and recorded nowhere else."""
    summary = {"sft": asdict(before), "dpo": asdict(after), "gained": gained, "verdict": verdict}
    path.write_text(json.dumps(summary, indent=2) + "\n")


def index_summary(trained: Trained) -> tuple[str, int, int, int]:
    """(CID, examples, contributions, lineage members) of a job's attribution index."""
    index, cid = AttributionIndex.read_folder(trained.workdir / ATTRIBUTION_DIR)
    return cid, len(index.corpus), len(index.corpus.contributions), len(index.lineage)
