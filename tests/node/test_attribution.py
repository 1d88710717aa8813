"""Attribution pays (issue 14): a node serving a model trained with an attribution index scores
every paid answer. The receipt commits to the answer record (spans only) written in the
receipt's own transaction; a background worker adds the gradients without delaying answers and
resumes after a restart; a redemption publishes the records beside the receipts, and every line
checks against its receipt. A version trained without an index is served with zero digests."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner
from transformers import AutoTokenizer

from backend.attribution.attributor import Attributor
from backend.attribution.build import MemberExamples, build_index
from backend.attribution.corpus import Contribution
from backend.attribution.epoch_audit import audit_epoch
from backend.attribution.index import FILES, MANIFEST_FILE, AttributionIndex, LineageMember
from backend.attribution.record import AttributionRecord
from backend.attribution.records_log import (
    ZERO_DIGEST,
    RecordsLogError,
    parse_records_log,
    verify_record,
)
from backend.attribution.reveal import (
    Revealed,
    chain_attributors,
    parse_reveal,
    refute_full_records,
)
from backend.attribution.scoring import make_record, span_evidence
from backend.attribution.settings import AttributionSettings
from backend.modelfactory.provenance import BuildCounts, ExampleRecord, TrainingManifest
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import JobSpec, LoraSettings, TrainSettings
from backend.protocol.deployments import DeploymentStore
from backend.protocol.inference_client import VoucherWallet, openai_client
from backend.protocol.receipts import read_usage_log
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from inference_node.cli import main as node_main
from inference_node.engine.packaging import put_adapter
from inference_node.payments import Ledger
from inference_node.server.runtime import NodeRuntime
from tests.attribution.test_attributor import planted_examples
from tests.engine.tiny_tokenizer import build_tiny_checkpoint
from tests.node.conftest import PRICING, World
from tests.node.server_fixtures import Checkpoint, build_runtime, node_settings, serving

QUESTION = [{"role": "user", "content": "Tell me about zorbland."}]
TRAIN = TrainSettings(epochs=4, batch_size=3, learning_rate=1e-2, max_length=96)


@dataclass(frozen=True)
class AttributedModels:
    checkpoint: Checkpoint
    store_dir: Path
    index: AttributionIndex
    index_cid: str
    indexed: int  # model id: trained with the index
    plain: int  # model id: the same adapter, its training manifest naming no index


def _register(world: World, base_cid: str, adapter_cid: str, manifest_cid: str) -> int:
    r, p = world.roles, world.protocol
    spec = (
        "bafkmeta", base_cid, adapter_cid, manifest_cid, 1, 1,
        (PRICING.per_request, PRICING.per_token), (6_000, 2_000, 1_500, 500), r.node,
    )  # fmt: skip
    p.transact(r.developer, p["ModelRegistry"].functions.registerModel(spec))
    return int(p["ModelRegistry"].functions.modelCount().call())


@dataclass(frozen=True)
class Trained:
    """What the module trains and stores once (nothing on chain)."""

    checkpoint: Checkpoint
    store_dir: Path
    index: AttributionIndex
    index_cid: str
    adapter_cid: str
    manifest_with_index: str
    manifest_without: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny chat model's adapter trained by ModelFactory's SFT on planted facts, its index in
    the store, and two training manifests: one naming the index, one naming none."""
    root = tmp_path_factory.mktemp("attributed")
    store = DirectoryStore(root / "store")
    base = build_tiny_checkpoint(root / "base")
    examples = planted_examples()
    train_sft(base, examples, LoraSettings(rank=4, alpha=8), TRAIN, root / "adapter",
              progress=False)  # fmt: skip
    adapter_cid = put_adapter(store, root / "adapter")
    members = [MemberExamples(LineageMember(None, 1, 1, "sft"), list(enumerate(examples)))]
    index, _ = build_index(base, root / "adapter", members, AttributionSettings(),
                           TRAIN.max_length, adapter_cid, None, progress=False)  # fmt: skip
    index_cid = index.write(root / "index")
    for name in [MANIFEST_FILE, *FILES.values()]:
        store.put((root / "index" / name).read_bytes())
    base_cid = compute_cid((base / "model.safetensors").read_bytes())
    manifest = TrainingManifest(
        datanet_id=1, version=1, datanet_manifest_cid=index_cid, base_model="tiny",
        base_model_cid=base_cid, job=JobSpec(1, 1, train=TRAIN),
        build=BuildCounts(len(examples), len(examples), 0, 2000),
        examples=tuple(ExampleRecord.of(i, "train", e) for i, e in enumerate(examples)),
        attribution=index_cid,
    )  # fmt: skip
    with_index = store.put(manifest.to_json_bytes())
    without = store.put(TrainingManifest(**{**manifest.__dict__, "attribution": None})
                        .to_json_bytes())  # fmt: skip
    checkpoint = Checkpoint(base, root / "adapter", base_cid)
    return Trained(checkpoint, root / "store", index, index_cid, adapter_cid, with_index, without)


@pytest.fixture
def models(world: World, trained: Trained) -> AttributedModels:
    """The adapter registered twice in this test's chain state (the world reverts after each
    test): with the index, and with the manifest that names none."""
    base_cid = trained.checkpoint.base_cid
    indexed = _register(world, base_cid, trained.adapter_cid, trained.manifest_with_index)
    plain = _register(world, base_cid, trained.adapter_cid, trained.manifest_without)
    return AttributedModels(trained.checkpoint, trained.store_dir, trained.index,
                            trained.index_cid, indexed, plain)  # fmt: skip


def _runtime(world: World, models: AttributedModels, data_dir: Path) -> NodeRuntime:
    store = DirectoryStore(models.store_dir)
    settings = node_settings(data_dir, models.store_dir, world)
    return build_runtime(world, settings, models.checkpoint, store)


@pytest.fixture
def client(world: World) -> Callable[[str], openai.OpenAI]:
    """An openai client paying as the world's payer, for a node's URL."""
    wallet = VoucherWallet(world.roles.payer, world.payer_key, node=world.roles.node)
    return lambda url: openai_client(f"{url}/v1", wallet)


def _ask(client: Callable[[str], openai.OpenAI], url: str, model_id: int) -> None:
    client(url).chat.completions.create(
        model=str(model_id), messages=QUESTION, max_tokens=10, temperature=0
    )


def _wait_full(ledger: Ledger, receipt_ids: list[int], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = ledger.attribution_records(receipt_ids)
        if all(rows[i].full_record is not None for i in receipt_ids):
            return
        time.sleep(0.1)
    raise TimeoutError("the attribution worker did not fill the full records")


def _spans_record(models: AttributedModels, model_id: int, prompt, answer) -> AttributionRecord:  # type: ignore[no-untyped-def]
    """The answer record recomputed here, independently of the node, from the index."""
    index = models.index
    evidence = span_evidence(index, prompt, answer)
    return make_record(index, models.index_cid, model_id, 1, prompt, answer, evidence, None)


def test_a_paid_answer_commits_to_its_spans_record_while_the_worker_is_busy(
    world: World, models: AttributedModels, client, tmp_path: Path
) -> None:
    runtime = _runtime(world, models, tmp_path / "node")
    assert runtime.attribution is not None
    with serving(runtime) as url:
        with runtime.attribution._gradients:  # the worker holds the model mid-batch
            _ask(client, url, models.indexed)
            (receipt_id, receipt), = runtime.ledger.pending_receipts()  # fmt: skip
            row = runtime.ledger.attribution_records([receipt_id])[receipt_id]
            assert row.full_record is None  # answered without waiting for gradients
        tokenizer = AutoTokenizer.from_pretrained(str(models.checkpoint.base))
        prompt = list(tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True))
        a = row.attribution
        assert list(a.prompt_ids) == prompt and len(a.answer_ids) == receipt.tokens_out
        expected = _spans_record(models, models.indexed, prompt, a.answer_ids)
        assert receipt.attribution_digest == expected.digest() != ZERO_DIGEST
        assert a.answer_record == expected.to_bytes()

        _wait_full(runtime.ledger, [receipt_id])
        full_bytes = runtime.ledger.attribution_records([receipt_id])[receipt_id].full_record
        assert full_bytes is not None
        full = AttributionRecord.from_json(full_bytes)
        assert full.query_sketch is not None and full.to_bytes() == full_bytes
        args = (models.index, models.index_cid, prompt, list(a.answer_ids))
        assert verify_record(receipt, full, *args) == full


def test_a_crash_after_settle_loses_no_record_and_a_restart_fills_it(
    world: World, models: AttributedModels, client, tmp_path: Path
) -> None:
    first = _runtime(world, models, tmp_path / "node")
    first.worker = None  # the process dies before its worker reaches the answer
    with serving(first) as url:
        _ask(client, url, models.indexed)
    with Ledger(tmp_path / "node" / "ledger.sqlite", world.roles.node) as ledger:
        (receipt_id, receipt), = ledger.pending_receipts()  # fmt: skip
        row = ledger.attribution_records([receipt_id])[receipt_id]
        assert row.full_record is None and receipt.attribution_digest == keccak_of(row)

    again = _runtime(world, models, tmp_path / "node").start()
    try:
        _wait_full(again.ledger, [receipt_id])
    finally:
        again.stop()


def keccak_of(row) -> bytes:  # type: ignore[no-untyped-def]
    return AttributionRecord.from_json(row.attribution.answer_record).digest()


def test_a_redemption_publishes_records_that_verify_and_an_unindexed_model_pays_zero(
    world: World, models: AttributedModels, client, tmp_path: Path
) -> None:
    runtime = _runtime(world, models, tmp_path / "node")
    runtime.worker = None  # the redeemer computes the gradients itself before publishing
    with serving(runtime) as url:
        _ask(client, url, models.indexed)
        _ask(client, url, models.plain)  # served normally, with a zero digest
        _ask(client, url, models.indexed)
        done = httpx.post(f"{url}/node/redeem", timeout=300).json()
        assert done["redeemed"] is True and done["receipts"] == 3
        usage = read_usage_log(runtime.store.get, done["receipts_cid"])
        assert usage.records_cid is not None
        records = parse_records_log(runtime.store.get(usage.records_cid))
        ids = runtime.ledger.receipt_ids_of(done["redemption_id"])
        rows = runtime.ledger.attribution_records(ids)
    assert len(records) == len(usage.receipts) == 3
    assert [r.model_id for r in usage.receipts] == [models.indexed, models.plain, models.indexed]
    assert usage.receipts[1].attribution_digest == ZERO_DIGEST and records[1] is None
    assert set(rows) == {ids[0], ids[2]}
    for n in (0, 2):
        a = rows[ids[n]].attribution
        record = records[n]
        assert record is not None and record.query_sketch is not None  # published full
        verified = verify_record(usage.receipts[n], record, models.index, models.index_cid,
                                 a.prompt_ids, a.answer_ids)  # fmt: skip
        assert verified == record
    with pytest.raises(RecordsLogError, match="its line is null"):
        verify_record(usage.receipts[0], None)
    with pytest.raises(RecordsLogError, match="with the index and the answer's token ids"):
        verify_record(usage.receipts[0], records[0])
    spans_only = AttributionRecord.from_json(rows[ids[0]].attribution.answer_record)
    assert verify_record(usage.receipts[0], spans_only) == spans_only
    tampered = replace(spans_only, covered_weight=spans_only.covered_weight + 1)
    with pytest.raises(RecordsLogError, match=r"receipt 0x.* commits to attribution digest"):
        verify_record(usage.receipts[0], tampered)


def test_an_older_ledger_gains_the_records_table(tmp_path: Path, world: World) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, world.roles.node).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE attribution_records")
    with Ledger(path, world.roles.node) as ledger:
        assert ledger.unsketched(10) == [] and ledger.unsketched_count() == 0


def _node_cli(world: World, data_dir: Path, store_dir: Path, monkeypatch, *args: str) -> dict:  # type: ignore[no-untyped-def]
    """``openledger-node ARGS`` in-process, configured as this test's node; its JSON output."""
    deployments = data_dir.parent / "deployments.json"
    DeploymentStore(deployments).save(world.protocol.deployment)
    for key, value in {
        "RPC_URL": world.w3.provider.endpoint_uri, "DEPLOYMENTS": str(deployments),
        "ADDRESS": world.roles.node, "STORE": str(store_dir), "DATA_DIR": str(data_dir),
        "PORT": "1",  # nothing serves there: the CLI works offline
    }.items():  # fmt: skip
        monkeypatch.setenv(f"OPENLEDGER_NODE_{key}", value)
    result = CliRunner(mix_stderr=False).invoke(node_main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _shifted(record: AttributionRecord, to: Contribution) -> AttributionRecord:
    """``record`` with every share it names moved to ``to``: a node's forgery for a friend."""
    first = record.contributions[0]
    moved = replace(first, datanet_id=to.datanet_id, contribution_id=to.contribution_id,
                    contributor=to.contributor,
                    share=sum(c.share for c in record.contributions))  # fmt: skip
    return replace(record, contributions=(moved,))


def test_a_forged_full_record_stands_until_its_token_ids_are_revealed(
    world: World, models: AttributedModels, client, tmp_path: Path, monkeypatch
) -> None:
    """The node forges one answer's full record (its shares moved to a friend's contribution)
    and, as the model's attributor, posts an epoch paying it (`openledger-node attribute`).
    From the published records alone the auditor agrees; once the node reveals the answers'
    token ids (`openledger-node reveal`), the auditor recomputes the records, refuses the forged
    one (paid by training examples instead) and the epoch differs: the challenge's evidence."""
    data_dir = tmp_path / "node"
    runtime = _runtime(world, models, data_dir)
    runtime.worker = None  # the redeemer computes the honest answer's gradients itself
    with serving(runtime) as url:
        _ask(client, url, models.indexed)
        _ask(client, url, models.indexed)
        (forged_id, forged_receipt), _ = runtime.ledger.pending_receipts()
        row = runtime.ledger.attribution_records([forged_id])[forged_id].attribution
        attributor = Attributor(models.index, models.index_cid, models.indexed, 1,
                                models.checkpoint.base, models.checkpoint.adapter)  # fmt: skip
        honest = attributor.attribute(row.prompt_ids, row.answer_ids)
        named = {c.contribution_id for c in honest.contributions}
        friend = next(c for c in models.index.corpus.contributions
                      if c.contribution_id not in named)  # fmt: skip
        assert named  # the forgery moves something
        runtime.ledger.set_full_record(forged_id, _shifted(honest, friend).to_bytes())
        done = httpx.post(f"{url}/node/redeem", timeout=300).json()
        assert done["redeemed"] is True and done["receipts"] == 2

    store = DirectoryStore(models.store_dir)
    posted = _node_cli(world, data_dir, models.store_dir, monkeypatch,
                       "attribute", "--model", str(models.indexed))  # fmt: skip
    assert posted["posted"] is True and posted["refused_records"] == 0
    assert posted["usage_proofs"] == [done["usage_proof_id"]] and posted["receipts"] == 2
    epoch_id = posted["epoch"]
    blind = audit_epoch(world.protocol, store, epoch_id)
    assert blind.passed, blind.evidence()  # nothing public tells the forgery apart

    # The node reveals only the disputed answer; anyone checks it against the records.
    revealed_now = _node_cli(world, data_dir, models.store_dir, monkeypatch, "reveal",
                             "--proof", str(done["usage_proof_id"]),
                             "--receipt", "0x" + forged_receipt.request_hash.hex())  # fmt: skip
    assert revealed_now["revealed"] == 1
    revealed = parse_reveal(store.get(revealed_now["reveal_cid"]))
    assert list(revealed) == [forged_receipt.request_hash]
    assert revealed[forged_receipt.request_hash].answer == row.answer_ids
    attributors = chain_attributors(world.protocol, store, models.checkpoint.base,
                                    tmp_path / "auditor")  # fmt: skip
    audit = audit_epoch(
        world.protocol, store, epoch_id,
        refute=lambda x: refute_full_records(x, revealed, attributors),
    )  # fmt: skip
    assert not audit.passed
    (why,) = audit.refuted["0x" + forged_receipt.request_hash.hex()]
    assert "differs in contributions" in why
    paid = {d.account: d.posted - d.recomputed for d in audit.differences}
    assert paid[friend.contributor] > 0  # the friend was paid what it was not owed
    assert sum(paid.values()) == 0  # and the others were paid that much less
    assert audit.evidence()["refuted_records"] == audit.refuted

    # Every answer revealed: the honest full record (its sketch recomputed from the adapter's
    # gradients) stands; only the forged one is refuted.
    everything = parse_reveal(store.get(_node_cli(
        world, data_dir, models.store_dir, monkeypatch, "reveal", "--proof",
        str(done["usage_proof_id"]))["reveal_cid"]))  # fmt: skip
    assert len(everything) == 2
    again = audit_epoch(
        world.protocol, store, epoch_id,
        refute=lambda x: refute_full_records(x, everything, attributors),
    )  # fmt: skip
    assert list(again.refuted) == ["0x" + forged_receipt.request_hash.hex()]
    assert again.differences == audit.differences

    # Anyone may write a reveal file: a false challenger's made-up ids for the honest answer
    # (and for the forged one) are not those answers' and refute nothing.
    made_up = {h: Revealed(h, r.prompt, (*r.answer, 7)) for h, r in everything.items()}
    false = audit_epoch(
        world.protocol, store, epoch_id,
        refute=lambda x: refute_full_records(x, made_up, attributors),
    )  # fmt: skip
    assert false.refuted == {} and false.passed  # as blind as the audit without a reveal


def test_sketches_run_on_the_engine_thread_in_the_index_batches_and_pay_the_same(
    world: World, models: AttributedModels, client, tmp_path: Path
) -> None:
    """The node computes query sketches on its engine's thread (the process's one
    multi-threaded torch thread), a sketch batch per call so that serving waits one batch at
    most: the full records equal those of one call over every answer, and verify."""
    runtime = _runtime(world, models, tmp_path / "node")
    runtime.worker = None  # the test completes the rows itself
    attribution = runtime.attribution
    assert attribution is not None
    calls: list[tuple[str, int]] = []
    through_engine = attribution.run_torch

    def recorded(fn):  # type: ignore[no-untyped-def]
        def job():  # type: ignore[no-untyped-def]
            out = fn()
            calls.append((threading.current_thread().name, len(out)))
            return out

        return through_engine(job)

    attribution.run_torch = recorded
    with serving(runtime) as url:
        for _ in range(3):
            _ask(client, url, models.indexed)
        attributor = attribution.attributor(models.indexed, 1)
        assert attributor is not None
        settings = attributor.index.settings
        small = replace(settings, sketches=replace(settings.sketches, batch_size=2))
        attributor.index = replace(attributor.index, settings=small)  # batches of 2 answers
        ids = [i for i, _ in runtime.ledger.pending_receipts()]
        rows = list(runtime.ledger.attribution_records(ids).values())
        assert attribution.complete(runtime.ledger, rows) == 3
        assert calls == [("scheduler", 2), ("scheduler", 1)]
        queries = [(r.attribution.prompt_ids, r.attribution.answer_ids) for r in rows]
        at_once = runtime.engine.call(lambda: attributor.sketches(queries))
        done = runtime.ledger.attribution_records(ids)
        receipts = dict(runtime.ledger.pending_receipts())
    for row, sketch in zip(rows, at_once, strict=True):
        a = row.attribution
        full_bytes = done[row.receipt_id].full_record
        assert full_bytes == attributor.record(a.prompt_ids, a.answer_ids, sketch=sketch).to_bytes()
        full = AttributionRecord.from_json(full_bytes)
        args = (models.index, models.index_cid, a.prompt_ids, a.answer_ids)
        assert verify_record(receipts[row.receipt_id], full, *args) == full
