"""The local stack behind `make demo`: anvil with persisted state, deploy once, reuse after."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from backend.devnet.anvil import Anvil, free_port, rpc
from backend.devnet.factory_demo import states_fact
from backend.devnet.node_demo import QUESTIONS

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

ROOT = Path(__file__).resolve().parents[1]
APE = str(Path(sys.executable).with_name("ape"))


def run_demo(data_dir: Path, port: int, *options: str) -> str:
    result = subprocess.run(
        [APE, "run", "devnet", "demo", "--data-dir", str(data_dir), "--port", str(port),
         "--api-port", str(free_port()), "--node-port", str(free_port()), *options],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_deploys_once_then_reuses_the_persisted_chain(tmp_path):
    port = free_port()
    first = run_demo(tmp_path, port)  # the default SFT steps: the answers must be right
    assert "(deployed now)" in first
    assert "1,000,000,000 OPEN" in first
    assert first.count("funded 10,000 OPEN now") == 4
    deployments = json.loads((tmp_path / "deployments.json").read_text())
    contracts = deployments["31337"]["contracts"]
    assert (tmp_path / "chain" / "anvil-state.json").exists()
    # The Datanet flow: created, contributed by three accounts, curated, published, audited.
    assert "Datanet 1: Invented atlas (created now)" in first
    assert "licence CC0-1.0, format instruction" in first
    assert first.count("registered now;") == 4
    for role in ("contributor", "developer", "payer"):
        assert re.search(rf"{role} +data/\S+ +contribution \d+ +registered now; approved", first)
    assert re.search(
        r"bad/wrong-capitals.jsonl +contribution (\d+) +registered now; rejected", first
    )
    assert "approved [1, 2, 3], rejected [4] (wrong answers: bad/wrong-capitals.jsonl)" in first
    assert "version 1 (published now): 3 contributions, root 0x" in first
    assert "audit passed: 1 version(s)" in first and "3 files verified by CID" in first
    # The indexer and the API serve what the chain holds; the API's proof verifies on-chain.
    assert "has 3 contributions in version 1" in first
    assert "from the API verifies on-chain: True" in first
    root = re.search(r"root (0x[0-9a-f]{64})", first)
    assert root is not None
    # Datanet: metadata, 4 files, manifest; SFT and DPO: adapter, training manifest, eval
    # report, loss curve and plot, model metadata each; the receipts log; the feedback
    # Datanet's metadata, file, manifest
    assert len(list((tmp_path / "store" / "blocks").iterdir())) >= 6 + 2 * 6 + 1 + 3
    # ModelFactory: SFT on version 1, the model registered with its provenance
    assert re.search(r"trained now in \S+sft-d1v1-s60; registered as model 1 version 1", first)
    assert re.search(r"held-out loss [\d.]+ \(SmolLM2\) -> [\d.]+ \(adapter\)", first)
    # The inference node: sixteen paid answers redeemed, mostly right (the planted facts
    # learned; the general-knowledge ones are the feedback's business)
    assert "model 1 v1 (adapter" in first and "staked now" in first
    assert first.count("  A: ") == 16 and first.count("receipt ") == 16
    asked = re.findall(r"  Q: (.*)", first)
    said = [ast.literal_eval(a) for a in re.findall(r"  A: (.*)  \[\d+\+\d+ tokens", first)]
    answers = list(zip(asked, said, strict=True))
    assert sum(states_fact(q, QUESTIONS[q], a) for q, a in answers) >= 12, answers
    assert re.search(r"usage proof 1, 16 receipts, [\d.]+ OPEN paid", first)
    assert "recomputed from the log matches the chain: True" in first
    # A tampered epoch (1) is caught by the audit, challenged by the robbed contributor and
    # slashed; then Proof of Attribution pays: the node's records match the receipts; the node
    # posts epoch 2, an auditor recomputes it from public inputs alone, the contributors claim.
    assert first.count("= receipt's") == 16
    assert "longest span found in training data: 'The capital of Veltoria is Quorbin.' " \
           "(data/capitals.jsonl)" in first  # fmt: skip
    assert "the node first posts a tampered epoch 1: " in first
    failed = re.search(r"audit FAILED: posted vs recomputed from public inputs: (.*); evidence",
                       first)  # fmt: skip
    assert failed is not None
    assert re.fullmatch(r"(\w+ -[\d.]+ OPEN, node operator \+[\d.]+ OPEN"
                        r"|node operator \+[\d.]+ OPEN, \w+ -[\d.]+ OPEN)", failed[1])  # fmt: skip
    assert re.search(r"the node's stake 2,000 OPEN -> 1,500 OPEN \(slashed 500 OPEN\), the \w+ "
                     r"withdraws 600 OPEN", first)  # fmt: skip
    assert re.search(r"epoch 2 posted by the node \(the model's attributor\): [\d.]+ OPEN over "
                     r"16 receipts of usage proofs \[1\]", first)  # fmt: skip
    assert "audit passed: epoch 2 recomputed from public inputs alone" in first
    # the planted contributors (capitals, inventors: the facts asked) earn the most
    earned = {role: float(amount) for role, amount in
              re.findall(r"  (\w+) +earns ([\d.]+) OPEN: data/", first)}  # fmt: skip
    assert earned["contributor"] > earned.get("payer", 0) < earned["developer"], earned
    claimed = {role: float(amount) for role, amount in
               re.findall(r"  (\w+) +claimed ([\d.]+) OPEN now", first)}  # fmt: skip
    assert claimed["contributor"] == earned["contributor"] > 0, claimed
    assert claimed["developer"] == earned["developer"] > 0, claimed
    # Feedback: signed preferences -> a preference Datanet -> DPO -> model 1 version 2
    signed = re.search(r"the payer signed (\d+) preferences now", first)
    assert signed is not None and int(signed[1]) >= 2
    assert "exported to Datanet 2 version 1" in first
    assert re.search(r"trained now in \S+dpo-d2v1-s15; published as model 1 version 2", first)
    assert re.search(r"held-out split: preference accuracy [\d.]+ -> [\d.]+ on \d+ pair", first)
    assert re.search(r"\d/9 right -> \d/9 right \(greedy\)", first)
    assert "DPO gained on questions it never trained on" in first or "no gain: " in first

    second = run_demo(tmp_path, port)
    assert "(reused from the persisted chain state)" in second
    assert "funded 10,000" not in second  # only the bonds spent by the first run are topped up
    assert (
        json.loads((tmp_path / "deployments.json").read_text())["31337"]["contracts"] == contracts
    )
    for address in contracts.values():
        assert address in second
    assert "Datanet 1: Invented atlas (reused: created by an earlier run)" in second
    assert second.count("already registered, skipped;") == 4
    assert "registered now" not in second
    assert "review: nothing pending" in second
    assert f"version 1 (unchanged, not republished): 3 contributions, root {root[1]}" in second
    assert "audit passed: 1 version(s)" in second
    assert "from the API verifies on-chain: True" in second
    assert "Confirmed" not in second.split("Datanet 1:")[1].split("Inference node")[0]
    assert re.search(r"reused the finished job in \S+sft-d1v1-s60; already on-chain as model 1 "
                     r"version 1", second)  # fmt: skip
    assert "already staked" in second and second.count("  A: ") == 16
    assert re.search(r"usage proof 2, 16 receipts, [\d.]+ OPEN paid", second)
    assert "the node first posts a tampered epoch 3: " in second
    assert "the node's stake 2,000 OPEN -> 1,500 OPEN (slashed 500 OPEN)" in second
    assert re.search(r"epoch 4 posted by the node .* of usage proofs \[2\]", second)
    assert "audit passed: epoch 4 recomputed from public inputs alone" in second
    assert "recomputed from the log matches the chain: True" in second
    # the DPO version answers now; its answers' preferences, if any differ, join the feedback
    # Datanet's next version (the loop goes on), else the first version's DPO job is reused
    assert re.search(r"the payer signed \d+ preferences now", second)
    assert re.search(r"(exported to Datanet 2 version 2.*published as model 1 version 3"
                     r"|exported to Datanet 2 version 1.*already on-chain as model 1 version 2)",
                     second, re.DOTALL)  # fmt: skip
    # Every process the demo started is gone: nothing answers on its port.
    assert not Anvil(port=port).is_up()
    operator_commands_on_the_demo_state(tmp_path, second)


def operator_commands_on_the_demo_state(data_dir: Path, output: str) -> None:
    """The command-line tools a node operator and an auditor run, on the chain the demo left:
    nothing is left to attribute; the node reveals the answers of usage proof 2 and the
    auditor recomputes epoch 4 (which paid them) with them (every full record, gradients
    included) and from public inputs alone, and both pass; the tampered epoch 3 fails."""
    env = {**os.environ, "APE_FOUNDRY_HOST": "", "OPENLEDGER_DEPLOYMENTS":
           str(data_dir / "deployments.json")}  # fmt: skip
    node = re.search(r"node (0x[0-9a-fA-F]{40}) already staked", output)
    assert node is not None
    with Anvil(port=free_port(), state_file=data_dir / "chain" / "anvil-state.json") as anvil:
        env["APE_FOUNDRY_HOST"] = anvil.url
        node_env = {**env, "OPENLEDGER_NODE_RPC_URL": anvil.url, "OPENLEDGER_NODE_ADDRESS":
                    node[1], "OPENLEDGER_NODE_DEPLOYMENTS": env["OPENLEDGER_DEPLOYMENTS"],
                    "OPENLEDGER_NODE_STORE": str(data_dir / "store"),
                    "OPENLEDGER_NODE_DATA_DIR": str(data_dir / "node"),
                    "OPENLEDGER_NODE_PORT": str(free_port())}  # fmt: skip

        def run(*command: str, environment: dict[str, str], rc: int = 0) -> str:
            done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True,
                                  text=True, timeout=600)  # fmt: skip
            assert done.returncode == rc, done.stdout + done.stderr
            return done.stdout

        node_cli = str(Path(sys.executable).with_name("openledger-node"))
        attribute = json.loads(run(node_cli, "attribute", "--model", "1", "--dry-run",
                                   environment=node_env))  # fmt: skip
        assert attribute == {"posted": False, "reason": "no redemption of model 1 left to pay for"}
        revealed = json.loads(run(node_cli, "reveal", "--proof", "2", environment=node_env))
        assert revealed["revealed"] == 16
        store = ["--store", str(data_dir / "store"), "--network", "ethereum:local:foundry"]
        audit = run(APE, "run", "audit", "attribution", "1", "4", "--reveal",
                    revealed["reveal_cid"], *store, environment=env)  # fmt: skip
        assert "audit passed: the epoch pays exactly what the rule says" in audit, audit
        assert "REFUTED" not in audit
        audit = run(APE, "run", "audit", "attribution", "1", *store, environment=env)
        assert "epoch 4 of model 1" in audit and "audit passed" in audit, audit
        tampered = run(APE, "run", "audit", "attribution", "1", "3", *store, environment=env,
                       rc=1)  # fmt: skip
        assert "audit FAILED: 2 account(s) paid differently" in tampered, tampered


def test_demo_redeploys_when_the_recorded_deployment_has_no_code(tmp_path):
    port = free_port()
    run_demo(tmp_path, port, "--no-inference")
    (tmp_path / "chain" / "anvil-state.json").unlink()  # the chain is reset, the record is not
    assert "(deployed now)" in run_demo(tmp_path, port, "--no-inference")


def test_anvil_keeps_state_across_restart(tmp_path):
    state = tmp_path / "state.json"
    with Anvil(port=free_port(), state_file=state) as anvil:
        rpc(anvil.url, "anvil_mine", ["0x5"])
        height = int(str(rpc(anvil.url, "eth_blockNumber")), 16)
    assert height == 5
    with Anvil(port=free_port(), state_file=state) as anvil:
        assert int(str(rpc(anvil.url, "eth_blockNumber")), 16) == height


def test_up_serves_chain_index_and_api_until_stopped(tmp_path):
    port, api_port = free_port(), free_port()
    process = subprocess.Popen(
        [APE, "run", "devnet", "up", "--data-dir", str(tmp_path), "--port", str(port),
         "--api-port", str(api_port)],
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
        assert Anvil(port=port).is_up()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    assert "Stopped." in out
    assert not Anvil(port=port).is_up()
    with pytest.raises(OSError):
        urllib.request.urlopen(status_url, timeout=2)


def test_a_chain_deployed_by_other_contract_code_is_moved_aside(tmp_path):
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
