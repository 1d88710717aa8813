"""The plain-web3 access layer on a local anvil: deploy from the shipped bytecode, connect by
RPC URL to a recorded deployment (and refuse the wrong chain or a reset one), send from an
unlocked account and from a local key; and the processes that reach the chain through it
(the node, ModelFactory's worker, the indexer) never import ape."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port
from backend.protocol.deployments import CONTRACT_NAMES, DeploymentStore
from backend.protocol.web3_protocol import ChainMismatchError, Web3Protocol, deploy

OPEN = 10**18
NO_APE = (
    "inference_node.server.runtime",
    "backend.modelfactory.worker",
    "backend.modelfactory.jobs",
    "backend.attribution.verify",
    "backend.indexer.sync",
)


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil(port=free_port()) as anvil:
        yield anvil


@pytest.fixture(scope="module")
def protocol(anvil: Anvil) -> Web3Protocol:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    governance, treasury = w3.eth.accounts[:2]
    return deploy(w3, governance, treasury=treasury)


def test_deploy_wires_the_six_contracts(protocol: Web3Protocol) -> None:
    d = protocol.deployment
    assert set(d.contracts) == set(CONTRACT_NAMES)
    nodes, rewards = protocol["NodeRegistry"], protocol["AttributionRewards"]
    assert nodes.functions.slasher().call() == rewards.address
    assert protocol["OpenToken"].functions.balanceOf(d.treasury).call() > 0


def test_connect_finds_the_deployment_recorded_for_the_chain(
    anvil: Anvil, protocol: Web3Protocol, tmp_path: Path
) -> None:
    store = DeploymentStore(tmp_path / "deployments.json")
    store.save(protocol.deployment)
    connected = Web3Protocol.connect(anvil.url, store)
    assert connected.deployment == protocol.deployment
    registry = connected["DatanetRegistry"]
    assert registry.address == protocol.deployment.address("DatanetRegistry")
    assert registry.functions.datanetCount().call() == 0


def test_connect_refuses_another_chain_and_a_reset_one(
    anvil: Anvil, protocol: Web3Protocol
) -> None:
    d = protocol.deployment
    with pytest.raises(ChainMismatchError, match=f"is chain {d.chain_id}, but the deployment"):
        Web3Protocol.connect(anvil.url, replace(d, chain_id=d.chain_id + 1))
    nowhere = {name: f"0x{i + 1:040x}" for i, name in enumerate(CONTRACT_NAMES)}
    with pytest.raises(ChainMismatchError, match="the chain was reset"):
        Web3Protocol.connect(anvil.url, replace(d, contracts=nowhere))


def test_connect_refuses_a_url_where_nothing_answers() -> None:
    with pytest.raises(ConnectionError, match="no chain answers"):
        Web3Protocol.connect(f"http://127.0.0.1:{free_port()}", timeout=2)


def test_transact_from_an_unlocked_account_and_from_a_local_key(protocol: Web3Protocol) -> None:
    token = protocol["OpenToken"]
    treasury = protocol.deployment.treasury
    key = Account.create()
    protocol.transact(treasury, token.functions.transfer(key.address, 5 * OPEN))
    w3 = protocol.w3
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_transaction({"from": treasury, "to": key.address, "value": OPEN})  # gas
    )
    receipt = protocol.transact_signed(bytes(key.key), token.functions.transfer(treasury, 2 * OPEN))
    assert receipt["status"] == 1 and receipt["from"] == key.address
    assert token.functions.balanceOf(key.address).call() == 3 * OPEN


def test_the_node_the_worker_and_the_indexer_reach_the_chain_without_ape() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {NO_APE!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'ape' or m.startswith('ape.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"
