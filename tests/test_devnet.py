"""The local stack behind `make demo`: anvil with persisted state, deploy once, reuse after.

The demo runs twice on one data dir (a module fixture). The tests check what each run left,
not the sentences it prints: the chain (read through Web3Protocol on an anvil over the saved
state), the content store, the index (through the API), the node's ledger and the job folders.
The held-out comparison of the SFT and DPO versions is measured live and recorded nowhere
else, so the demo writes it to ``held-out.json``. The demo exits non-zero when an audit it runs
fails (the Datanet's, the usage proof's root, the honest epoch's), so a passing run passed them.
One file, over 400 lines: every test reads the same two demo runs, the expensive part.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.manifest import Manifest
from backend.devnet.anvil import Anvil, free_port, rpc
from backend.devnet.datanet_demo import CONTRIBUTIONS, CURATOR_ROLE, DATASET, WRONG_FILES
from backend.devnet.factory_demo import HELD_OUT, HELD_OUT_FILE, FactCheck, dpo_verdict, states_fact
from backend.devnet.node_demo import ASKED, QUESTIONS, STAKE
from backend.devnet.stack import DEMO_ROLES, FUND_TARGET
from backend.modelfactory.jobs import JOB_FILE
from backend.protocol.deployments import Deployment, DeploymentStore
from backend.protocol.enums import ContributionStatus, EpochStatus
from backend.protocol.receipts import UsageLog, read_usage_log, receipts_tree
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from tests.demo_runs import DemoRun, run_demo

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

ROOT = Path(__file__).resolve().parents[1]
APE = str(Path(sys.executable).with_name("ape"))
OPEN = 10**18
APPROVED, REJECTED = ContributionStatus.APPROVED, ContributionStatus.REJECTED
EPOCH_POSTED, EPOCH_REJECTED = EpochStatus.POSTED, EpochStatus.REJECTED
SFT_JOB, DPO_JOB = "sft-d1v1-s60", "dpo-d2v1-s15"  # the default --train-steps' job folders
USERS = [role for role in DEMO_ROLES if role not in ("governance", "treasury")]
EVENTS = {  # the events the tests read, by contract (no name is in two of these lists)
    "OpenToken": ("Transfer",),
    "DatanetRegistry": ("DatanetCreated", "Contributed", "Reviewed", "VersionPublished"),
    "ModelRegistry": ("ModelRegistered", "ModelVersionPublished"),
    "NodeRegistry": ("Staked", "Slashed"),
    "InferencePayments": ("UsageProofRecorded",),
    "AttributionRewards": (
        "EpochPosted", "EpochChallenged", "ChallengeResolved", "Withdrawn", "Claimed",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class State:
    """What the demo left in its data dir after a run."""

    head: int  # the chain's head block
    deployment: Deployment
    roles: dict[str, str]  # demo role -> address (anvil's accounts, as ape's test accounts)
    supply: int
    stake: int  # the node's bonded + unbonding OPEN wei
    datanets: dict[int, Any]
    metadata: dict[int, DatanetMetadata]
    contributions: dict[int, Any]
    versions: dict[tuple[int, int], Any]  # (datanet, version) ->
    manifests: dict[tuple[int, int], Manifest]
    models: dict[int, Any]
    model_versions: dict[tuple[int, int], Any]  # (model, version) ->
    usage_records: dict[int, Any]  # usage proof id ->
    usage_logs: dict[int, UsageLog]
    epochs: dict[int, Any]
    reports: dict[int, dict[str, Any]]  # epoch id -> its report document
    events: dict[str, list[Any]]  # event name -> its logs
    api: dict[str, Any]  # what the index serves of Datanet 1's version 1
    jobs: dict[str, int]  # finished job folder -> its job file's mtime
    held_out: dict[str, Any]

    def logs(self, name: str, after: int = -1, **args: Any) -> list[Any]:
        """``name``'s logs in blocks after ``after`` whose arguments include ``args``."""
        return [
            e for e in self.events[name]
            if e.blockNumber > after and all(e.args[k] == v for k, v in args.items())
        ]  # fmt: skip


def api_view(p: Web3Protocol, data_dir: Path, scratch: Path) -> dict[str, Any]:
    """Datanet 1's version 1 as the API serves it from the index the demo wrote; its Merkle
    proof checked on-chain."""
    from fastapi.testclient import TestClient

    from backend.api.config import Settings
    from backend.api.main import create_app

    settings = Settings(
        db_path=data_dir / "index.db", content_dir=data_dir / "store", data_dir=scratch
    )
    with TestClient(create_app(settings), base_url="http://t/api/v1") as client:
        detail = client.get("/datanets/1").json()
        members = client.get("/datanets/1/versions/1/contributions").json()
        first = members["items"][0]["id"]
        proof = client.get(f"/datanets/1/versions/1/proofs/{first}").json()
    siblings = [bytes.fromhex(h.removeprefix("0x")) for h in proof["proof"]]
    verifies = (
        p["DatanetRegistry"]
        .functions.isInVersion(1, 1, first, proof["leaf"]["cid"], siblings)
        .call()
    )
    return {"metadata_cid": detail["metadata_cid"], "total": members["total"], "verifies": verifies}


def read_state(data_dir: Path, scratch: Path) -> State:
    """Reads the chain (on an anvil over the saved state, stopped after), the store and the
    index the demo left in ``data_dir``."""
    store = DirectoryStore(data_dir / "store")
    with Anvil(port=free_port(), state_file=data_dir / "chain" / "anvil-state.json") as anvil:
        p = Web3Protocol.connect(anvil.url, DeploymentStore(data_dir / "deployments.json"))
        f = {name: c.functions for name, c in p.contracts.items()}
        roles = dict(zip(DEMO_ROLES, p.w3.eth.accounts, strict=False))
        events = {
            name: list(getattr(p[contract].events, name)().get_logs(from_block=p.deployment.block))
            for contract, names in EVENTS.items() for name in names
        }  # fmt: skip
        datanets = {
            i: f["DatanetRegistry"].datanet(i).call()
            for i in range(1, f["DatanetRegistry"].datanetCount().call() + 1)
        }
        versions = {
            (d, v): f["DatanetRegistry"].version(d, v).call()
            for d, datanet in datanets.items() for v in range(1, datanet.versionCount + 1)
        }  # fmt: skip
        models = {
            i: f["ModelRegistry"].model(i).call()
            for i in range(1, f["ModelRegistry"].modelCount().call() + 1)
        }
        model_versions = {
            (m, v): f["ModelRegistry"].modelVersion(m, v).call()
            for m, model in models.items() for v in range(1, model.versionCount + 1)
        }  # fmt: skip
        usage_records = {
            i: f["InferencePayments"].usageRecord(i).call()
            for i in range(1, f["InferencePayments"].usageProofCount().call() + 1)
        }
        epochs = {
            i: f["AttributionRewards"].epoch(i).call()
            for i in range(1, f["AttributionRewards"].epochCount().call() + 1)
        }
        info = f["NodeRegistry"].nodeInfo(roles["node operator"]).call()
        state = State(
            head=p.w3.eth.block_number,
            deployment=p.deployment,
            roles=roles,
            supply=f["OpenToken"].totalSupply().call(),
            stake=info.bonded + info.unbonding,
            datanets=datanets,
            metadata={
                i: DatanetMetadata.from_json(store.get(d.metadataCID)) for i, d in datanets.items()
            },
            contributions={
                e.args.contributionId: f["DatanetRegistry"]
                .contribution(e.args.contributionId)
                .call()
                for e in events["Contributed"]
            },
            versions=versions,
            manifests={
                k: Manifest.from_json(store.get(v.manifestCID)) for k, v in versions.items()
            },
            models=models,
            model_versions=model_versions,
            usage_records=usage_records,
            usage_logs={
                e.args.proofId: read_usage_log(store.get, e.args.receiptsCID)
                for e in events["UsageProofRecorded"]
            },
            epochs=epochs,
            reports={
                e.args.epochId: json.loads(store.get(e.args.reportCID))
                for e in events["EpochPosted"]
            },
            events=events,
            api=api_view(p, data_dir, scratch),
            jobs={
                d.name: (d / JOB_FILE).stat().st_mtime_ns
                for d in (data_dir / "jobs").iterdir()
                if (d / JOB_FILE).is_file()
            },
            held_out=json.loads((data_dir / HELD_OUT_FILE).read_text()),
        )
    return state


@dataclass(frozen=True)
class Answer:
    """A paid answer, as the node's ledger keeps it."""

    question: str
    text: str
    version: int
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]


def served_answers(data_dir: Path, node: str, tokenizer: Any) -> dict[int, list[Answer]]:
    """Usage proof id -> the answers it paid for, from the node's ledger (the token ids the
    engine was given and generated, decoded with the base model's tokenizer)."""
    from inference_node.payments.ledger import Ledger

    served: dict[int, list[Answer]] = {}
    with Ledger(data_dir / "node" / "ledger.sqlite", node) as ledger:
        for redemption in ledger.redemptions("confirmed"):
            ids = ledger.receipt_ids_of(redemption.id)
            rows = ledger.attribution_records(ids)
            answers = served.setdefault(redemption.proof_id, [])
            for i in ids:
                a = rows[i].attribution
                prompt = tokenizer.decode(list(a.prompt_ids))
                (question,) = [q for q in QUESTIONS if q in prompt]
                text = tokenizer.decode(list(a.answer_ids), skip_special_tokens=True)
                answers.append(Answer(question, text, a.version, a.prompt_ids, a.answer_ids))
    return served


@dataclass(frozen=True)
class Demo:
    data_dir: Path
    port: int
    first_out: str
    second_out: str
    first: State
    second: State
    answers: dict[int, list[Answer]]  # usage proof id -> the answers it paid for
    tokenizer: Any  # the base model's


@pytest.fixture(scope="module")
def demo(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo run twice on one data dir (the default SFT steps: the answers must be right),
    with what each run left (the first run is the session's shared one)."""
    data_dir, port, first_out = demo_run.data_dir, demo_run.port, demo_run.first_out
    first = read_state(data_dir, tmp_path_factory.mktemp("api"))
    second_out = run_demo(data_dir, port)
    assert not Anvil(port=port).is_up()  # every process the demo started is gone
    second = read_state(data_dir, tmp_path_factory.mktemp("api"))
    from transformers import AutoTokenizer

    from backend.models.base_models import ensure_smollm2

    tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2(ROOT / ".data"))
    answers = served_answers(data_dir, second.roles["node operator"], tokenizer)
    return Demo(data_dir, port, first_out, second_out, first, second, answers, tokenizer)


def test_first_run_deploys_and_funds_the_users(demo: Demo) -> None:
    s, roles = demo.first, demo.first.roles
    assert (demo.data_dir / "chain" / "anvil-state.json").exists()
    assert (s.deployment.governance, s.deployment.treasury) == (
        roles["governance"], roles["treasury"],
    )  # fmt: skip
    assert s.supply == 1_000_000_000 * OPEN
    funded = [(e.args.to, e.args.value) for e in s.logs("Transfer", **{"from": roles["treasury"]})]
    assert sorted(funded) == sorted((roles[r], FUND_TARGET) for r in USERS)


def test_first_run_creates_curates_publishes_the_datanet(demo: Demo) -> None:
    s, roles = demo.first, demo.first.roles
    assert s.datanets[1].owner == roles[CURATOR_ROLE]
    meta = s.metadata[1]
    assert meta == DatanetMetadata.from_json((DATASET / "metadata.json").read_bytes())
    assert (meta.license, meta.format) == ("CC0-1.0", DataFormat.INSTRUCTION)
    # contributed by three accounts, the wrong file rejected, the others approved
    sent = [(role, f) for role, files in CONTRIBUTIONS.items() for f in files]
    contributed = s.logs("Contributed", datanetId=1)
    assert [(e.args.contributor, e.args.cid) for e in contributed] == [
        (roles[role], compute_cid((DATASET / f).read_bytes())) for role, f in sent
    ]
    ids = [e.args.contributionId for e in contributed]
    wrong = [i for i, (_, f) in zip(ids, sent, strict=True) if f in WRONG_FILES]
    reviewed = s.logs("Reviewed", datanetId=1)
    assert {e.args.curator for e in reviewed} == {roles[CURATOR_ROLE]}
    assert sorted(e.args.contributionId for e in reviewed if e.args.approved) == [1, 2, 3]
    assert [e.args.contributionId for e in reviewed if not e.args.approved] == wrong == [4]
    assert [s.contributions[i].status for i in ids] == [APPROVED] * 3 + [REJECTED]
    # version 1: the approved three, its manifest's root on-chain, every file by CID
    assert s.datanets[1].versionCount == 1 and s.versions[1, 1].contributionCount == 3
    manifest = s.manifests[1, 1]
    assert [e.id for e in manifest.contributions] == [1, 2, 3]
    assert manifest.root == bytes(s.versions[1, 1].merkleRoot)
    store = DirectoryStore(demo.data_dir / "store")
    assert all(len(store.get(e.cid)) == e.size for e in manifest.contributions)
    # Datanet: metadata, 4 files, manifest; SFT and DPO: adapter, training manifest, eval
    # report, loss curve and plot, model metadata each; the receipts log; the feedback
    # Datanet's metadata, file, manifest
    assert len(list((demo.data_dir / "store" / "blocks").iterdir())) >= 6 + 2 * 6 + 1 + 3


def test_the_index_serves_the_datanet_and_its_proof_verifies_on_chain(demo: Demo) -> None:
    for s in (demo.first, demo.second):
        assert s.api == {"metadata_cid": s.datanets[1].metadataCID, "total": 3, "verifies": True}


def test_first_run_trains_and_registers_the_model_with_its_provenance(demo: Demo) -> None:
    s, roles = demo.first, demo.first.roles
    assert SFT_JOB in s.jobs
    report = json.loads((demo.data_dir / "jobs" / SFT_JOB / "eval_report.json").read_text())
    assert isinstance(report["base_loss"], float) and isinstance(report["adapter_loss"], float)
    (registered,) = s.logs("ModelRegistered")
    assert (registered.args.modelId, registered.args.developer, registered.args.attributor) == (
        1, roles["developer"], roles["node operator"],
    )  # fmt: skip
    sft = s.model_versions[1, 1]
    assert (sft.datanetId, sft.datanetVersion) == (1, 1)
    assert DirectoryStore(demo.data_dir / "store").has(sft.adapterCID)


def test_first_run_serves_sixteen_paid_answers_mostly_right(demo: Demo) -> None:
    s, roles = demo.first, demo.first.roles
    node = roles["node operator"]
    assert STAKE in [e.args.amount for e in s.logs("Staked", node=node)]  # staked now
    assert s.stake == STAKE
    assert list(s.usage_records) == [1]
    record, log = s.usage_records[1], s.usage_logs[1]
    assert record.receiptCount == len(log.receipts) == 16 and record.amount > 0
    assert receipts_tree(log.receipts).root == bytes(record.receiptsRoot)
    assert {(r.model_id, r.adapter_version, r.payer) for r in log.receipts} == {
        (1, 1, roles["payer"])
    }
    # the planted facts learned; the general-knowledge ones are the feedback's business
    answers = demo.answers[1]
    assert Counter(a.question for a in answers) == dict.fromkeys(QUESTIONS, ASKED)
    said = [(a.question, a.text) for a in answers]
    assert sum(states_fact(q, QUESTIONS[q], a) for q, a in said) >= 12, said


def test_each_paid_answer_has_the_attribution_record_its_receipt_commits_to(demo: Demo) -> None:
    from backend.attribution.corpus import tokens_hash
    from backend.attribution.explain import earning_spans
    from backend.attribution.index import AttributionIndex
    from backend.attribution.records_log import parse_records_log, verify_record

    store = DirectoryStore(demo.data_dir / "store")
    log = demo.first.usage_logs[1]
    assert log.records_cid is not None
    records = parse_records_log(store.get(log.records_cid))
    assert len(records) == len(log.receipts) == 16 and None not in records
    indexes = {r.index: AttributionIndex.read(store.get, r.index) for r in records if r}
    by_hash = {(tokens_hash(a.prompt_ids), tokens_hash(a.answer_ids)): a for a in demo.answers[1]}
    longest = []
    for receipt, r in zip(log.receipts, records, strict=True):
        assert r is not None
        a = by_hash[r.prompt_hash, r.answer_hash]  # the node's record is of a paid answer ...
        index = indexes[r.index]  # ... and the one its receipt commits to
        assert verify_record(receipt, r, index, r.index, a.prompt_ids, a.answer_ids) is r
        spans = earning_spans(r, index, a.answer_ids)
        if spans:  # the longest span of the answer found in training data, and whose it is
            owners = [c.contribution_id for c in spans[0].contributions]
            longest.append((demo.tokenizer.decode(list(spans[0].tokens)), owners))
    # the answer to the Veltoria question found in the capitals file, and only there
    capitals = 1  # CONTRIBUTIONS' first file, data/capitals.jsonl
    assert (QUESTIONS["What is the capital of Veltoria?"], [capitals]) in longest, longest


def test_a_tampered_epoch_is_slashed_then_the_honest_one_is_claimed(demo: Demo) -> None:
    store = DirectoryStore(demo.data_dir / "store")
    for s, after, tampered, honest, proof in (
        (demo.first, -1, 1, 2, 1), (demo.second, demo.first.head, 3, 4, 2),
    ):  # fmt: skip
        roles, params = s.roles, s.deployment.params
        node = roles["node operator"]
        assert [e.args.epochId for e in s.logs("EpochPosted", after, poster=node)] == [
            tampered, honest,
        ]  # fmt: skip
        # the tampered epoch: the audit's evidence moves an amount from one contributor to
        # the node; that contributor challenges; upheld, the node is slashed
        assert s.epochs[tampered].status == EPOCH_REJECTED
        (challenge,) = s.logs("EpochChallenged", after, epochId=tampered)
        victim = challenge.args.challenger
        evidence = json.loads(store.get(challenge.args.reasonCID))
        moved = {d["account"].lower(): int(d["posted"]) - int(d["recomputed"])
                 for d in evidence["differences"]}  # fmt: skip
        thief, robbed = node.lower(), victim.lower()
        assert moved.keys() == {robbed, thief} and moved[thief] == -moved[robbed] > 0, evidence
        (resolved,) = s.logs("ChallengeResolved", after, epochId=tampered)
        assert resolved.args.upheld and resolved.args.slashed == params.slash_amount == 500 * OPEN
        assert [e.args.amount for e in s.logs("Slashed", after, node=node)] == [500 * OPEN]
        assert [e.args.amount for e in s.logs("Withdrawn", after, account=victim)] == [
            params.challenge_bond + params.slash_amount  # 600 OPEN: its bond and the stake
        ]
        assert s.stake == STAKE  # the operator staked the loss again
        # the honest epoch: the node's receipts of the run's usage proof
        assert s.epochs[honest].status == EPOCH_POSTED and s.epochs[honest].modelId == 1
        report = s.reports[honest]
        assert [u["id"] for u in report["inputs"]["usage_proofs"]] == [proof]
        assert len(report["receipts"]) == 16
    # the planted contributors (capitals, inventors: the facts asked) earn the most; the
    # developer claims what it earned, the contributor's claim is left for the web app
    s, names = demo.first, {a.lower(): role for role, a in demo.first.roles.items()}
    earned = {names[row["account"].lower()]: int(row["amount"])
              for row in s.reports[2]["contributors"]}  # fmt: skip
    assert earned["contributor"] > earned.get("payer", 0) < earned["developer"], earned
    claimed = Counter[str]()
    for e in s.logs("Claimed", epochId=2):
        claimed[names[e.args.account.lower()]] += e.args.amount
    assert claimed["developer"] == earned["developer"] > 0, claimed
    assert claimed["contributor"] == 0 < earned["contributor"], claimed


def test_feedback_becomes_a_preference_datanet_and_dpo_the_next_version(demo: Demo) -> None:
    s, roles = demo.first, demo.first.roles
    store = DirectoryStore(demo.data_dir / "store")
    # the payer's signed preferences, exported as Datanet 2's version 1
    assert s.metadata[2].format == DataFormat.PREFERENCE
    assert s.datanets[2].owner == roles["developer"]
    assert s.datanets[2].versionCount == 1
    exported = s.manifests[2, 1].contributions
    assert {e.contributor for e in exported} == {roles["payer"]}
    pairs = sum(store.get(e.cid).count(b"\n") for e in exported)
    assert pairs >= 2
    # DPO on it: the model's version 2
    assert DPO_JOB in s.jobs and s.models[1].versionCount == 2
    dpo = s.model_versions[1, 2]
    assert (dpo.datanetId, dpo.datanetVersion) == (2, 1)
    report = json.loads((demo.data_dir / "jobs" / DPO_JOB / "eval_report.json").read_text())
    held = report["held_out_preferences"]
    assert 0 <= held["before"]["accuracy"] <= 1 and 0 <= held["after"]["accuracy"] <= 1
    assert held["after"]["pairs"] >= 1
    # measured on held-out questions, SFT version against DPO's, with a verdict
    before, after = (FactCheck(**s.held_out[k]) for k in ("sft", "dpo"))
    assert before.total == after.total == len(HELD_OUT) == 9
    assert 0 <= before.right <= 9 and 0 <= after.right <= 9
    assert dpo_verdict(before, after, pairs) == (s.held_out["gained"], s.held_out["verdict"])


def test_second_run_reuses_the_persisted_state(demo: Demo) -> None:
    first, s, out = demo.first, demo.second, demo.second_out
    after, roles = first.head, s.roles
    assert s.deployment == first.deployment
    for address in s.deployment.contracts.values():
        assert address in out  # the summary names the contracts it reused
    # only the bonds spent by the first run are topped up
    topped = [e.args.value for e in s.logs("Transfer", after, **{"from": roles["treasury"]})]
    assert all(v < FUND_TARGET for v in topped)
    assert out.count("Confirmed") <= len(topped)  # ape logs no line per later transaction
    # the Datanets reused: nothing created, contributed, reviewed or published in Datanet 1
    assert not s.logs("DatanetCreated", after)
    for name in ("Contributed", "Reviewed", "VersionPublished"):
        assert not s.logs(name, after, datanetId=1), name
    assert s.versions[1, 1] == first.versions[1, 1] and s.datanets[1].versionCount == 1
    # the finished SFT job and its model reused; the node already staked
    assert s.jobs[SFT_JOB] == first.jobs[SFT_JOB]
    assert not s.logs("ModelRegistered", after)
    assert s.model_versions[1, 1] == first.model_versions[1, 1]
    assert STAKE not in [e.args.amount for e in s.logs("Staked", after)]
    # sixteen more paid answers, by the DPO version now
    record, log = s.usage_records[2], s.usage_logs[2]
    assert record.receiptCount == len(log.receipts) == len(demo.answers[2]) == 16
    assert receipts_tree(log.receipts).root == bytes(record.receiptsRoot) and record.amount > 0
    assert {r.adapter_version for r in log.receipts} == {first.models[1].versionCount}
    # the DPO version's answers' preferences, if any differ, join the feedback Datanet's next
    # version (the loop goes on), else the first version's DPO job is reused
    if s.datanets[2].versionCount == 2:
        v3 = s.model_versions[1, 3]
        assert (v3.datanetId, v3.datanetVersion) == (2, 2)
    else:
        assert s.datanets[2].versionCount == 1 and s.models[1].versionCount == 2
        assert s.jobs[DPO_JOB] == first.jobs[DPO_JOB]


def test_operator_commands_on_the_demo_state(demo: Demo) -> None:
    """The command-line tools a node operator and an auditor run, on the chain the demo left:
    nothing is left to attribute; the node reveals the answers of usage proof 2 and the
    auditor recomputes epoch 4 (which paid them) with them (every full record, gradients
    included) and from public inputs alone, and both pass; the tampered epoch 3 fails."""
    data_dir = demo.data_dir
    env = {**os.environ, "APE_FOUNDRY_HOST": "", "OPENLEDGER_DEPLOYMENTS":
           str(data_dir / "deployments.json")}  # fmt: skip
    with Anvil(port=free_port(), state_file=data_dir / "chain" / "anvil-state.json") as anvil:
        env["APE_FOUNDRY_HOST"] = anvil.url
        node_env = {**env, "OPENLEDGER_NODE_RPC_URL": anvil.url, "OPENLEDGER_NODE_ADDRESS":
                    demo.second.roles["node operator"], "OPENLEDGER_NODE_DEPLOYMENTS":
                    env["OPENLEDGER_DEPLOYMENTS"], "OPENLEDGER_NODE_STORE": str(data_dir / "store"),
                    "OPENLEDGER_NODE_DATA_DIR": str(data_dir / "node"),
                    "OPENLEDGER_NODE_PORT": str(free_port())}  # fmt: skip

        def run(*command: str, environment: dict[str, str], rc: int = 0) -> str:
            done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True,
                                  text=True, timeout=600)  # fmt: skip
            assert done.returncode == rc, done.stdout + done.stderr
            return done.stdout if rc == 0 else done.stdout + done.stderr

        node_cli = str(Path(sys.executable).with_name("openledger-node"))
        attribute = json.loads(run(node_cli, "attribute", "--model", "1", "--dry-run",
                                   environment=node_env))  # fmt: skip
        assert attribute == {"posted": False, "reason": "no redemption of model 1 left to pay for"}
        revealed = json.loads(run(node_cli, "reveal", "--proof", "2", environment=node_env))
        assert revealed["revealed"] == 16
        store = ["--store", str(data_dir / "store"), "--network", "ethereum:local:foundry"]
        audit = run(APE, "run", "audit", "attribution", "1", "4", "--reveal",
                    revealed["reveal_cid"], *store, environment=env)  # fmt: skip
        assert "audit passed" in audit and "REFUTED" not in audit, audit
        audit = run(APE, "run", "audit", "attribution", "1", *store, environment=env)
        assert "epoch 4 of model 1" in audit and "audit passed" in audit, audit  # the latest
        tampered = run(APE, "run", "audit", "attribution", "1", "3", *store, environment=env,
                       rc=1)  # fmt: skip
        assert "FAILED: 2 account(s)" in tampered, tampered
        # Challenging it files the evidence and sends the challenge through the SDK, which
        # names the contract's refusal: governance already upheld the demo's challenge.
        again = run(APE, "run", "audit", "attribution", "1", "3", *store, "--challenge",
                    "--account", "TEST::5", environment=env, rc=1)  # fmt: skip
        assert "evidence stored as" in again, again
        assert "would revert: WrongEpochStatus(epochId=3, status=3)" in again, again


def test_demo_redeploys_when_the_recorded_deployment_has_no_code(tmp_path: Path) -> None:
    port = free_port()
    run_demo(tmp_path, port, "--no-inference")
    (tmp_path / "chain" / "anvil-state.json").unlink()  # the chain is reset, the record is not
    run_demo(tmp_path, port, "--no-inference")
    with Anvil(port=free_port(), state_file=tmp_path / "chain" / "anvil-state.json") as anvil:
        # raises ChainMismatchError where the recorded contracts have no code
        p = Web3Protocol.connect(anvil.url, DeploymentStore(tmp_path / "deployments.json"))
        assert p["DatanetRegistry"].functions.datanet(1).call().versionCount == 1


def test_anvil_keeps_state_across_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Anvil(port=free_port(), state_file=state) as anvil:
        rpc(anvil.url, "anvil_mine", ["0x5"])
        height = int(str(rpc(anvil.url, "eth_blockNumber")), 16)
    assert height == 5
    with Anvil(port=free_port(), state_file=state) as anvil:
        assert int(str(rpc(anvil.url, "eth_blockNumber")), 16) == height


def test_anvil_keeps_its_clock_across_restart(tmp_path: Path) -> None:
    """Time moved forward (as the demo passes a challenge window) is not lost at a restart:
    the next block is not stamped before the loaded head, so a window that closed stays
    closed."""
    state = tmp_path / "state.json"

    def head_time(url: str) -> int:
        return int(rpc(url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)  # type: ignore[index]

    with Anvil(port=free_port(), state_file=state) as anvil:
        rpc(anvil.url, "evm_increaseTime", [86_400])
        rpc(anvil.url, "evm_mine")
        warped = head_time(anvil.url)
    assert warped >= time.time() + 86_000
    with Anvil(port=free_port(), state_file=state) as anvil:
        rpc(anvil.url, "evm_mine")
        assert warped < head_time(anvil.url) < warped + 60


def test_up_serves_chain_index_and_api_until_stopped(tmp_path: Path) -> None:
    port, api_port = free_port(), free_port()
    process = subprocess.Popen(
        [APE, "run", "devnet", "up", "--data-dir", str(tmp_path), "--port", str(port),
         "--api-port", str(api_port), "--node-port", str(free_port())],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    status_url = f"http://127.0.0.1:{api_port}/api/v1/status"
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(status_url, timeout=2) as response:
                    status = json.loads(response.read())
                if status["events"]:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.5)
        # The indexer follows the chain: the deployment's events are served by the API.
        assert status is not None and status["chain_id"] == 31337
        assert status["events"] > 0 and status["block"] >= 1
        assert status["rpc_url"] == f"http://127.0.0.1:{port}"  # offered to the web app
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/", timeout=5) as response:
            assert b'<script type="module" src="assets/app.js">' in response.read()  # the web app
        assert Anvil(port=port).is_up()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out  # stopped cleanly on SIGTERM
    assert not Anvil(port=port).is_up()
    with pytest.raises(OSError):
        urllib.request.urlopen(status_url, timeout=2)


def test_a_chain_deployed_by_other_contract_code_is_moved_aside(tmp_path: Path) -> None:
    from backend.devnet.stack import CONTRACTS_MARK, contracts_fingerprint, retire_stale_chain

    data = tmp_path / "devnet"
    (data / "chain").mkdir(parents=True)
    (data / "store" / "blocks").mkdir(parents=True)
    (data / "deployments.json").write_text("{}")
    (data / "chain" / "anvil-state.json").write_text("{}")
    (data / CONTRACTS_MARK).write_text("0" * 64 + "\n")  # other contracts
    retired = retire_stale_chain(data)
    assert retired is not None and retired.parent == data / "retired"
    assert sorted(p.name for p in data.iterdir()) == ["retired", "store"]
    assert (retired / "chain" / "anvil-state.json").exists()  # moved, not deleted
    # A data dir of the current contracts is left alone; one without a chain too.
    (data / "deployments.json").write_text("{}")
    (data / CONTRACTS_MARK).write_text(contracts_fingerprint() + "\n")
    assert retire_stale_chain(data) is None
    assert retire_stale_chain(tmp_path / "empty") is None
    # A chain from before the mark existed cannot say which code it has: it is moved aside.
    (data / CONTRACTS_MARK).unlink()
    assert retire_stale_chain(data) is not None
