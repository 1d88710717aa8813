"""The operator CLI against a real chain: stake (with a clear error when it would revert),
redeem-now without a running node (from the ledger on disk), status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from backend.protocol.deployments import DeploymentStore
from inference_node.cli import main
from inference_node.payments import Ledger
from tests.node.conftest import OPEN, World
from tests.node.test_payments import receipt, voucher
from tests.protocol_history import private_key


@pytest.fixture
def env(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    deployments = tmp_path / "deployments.json"
    DeploymentStore(deployments).save(world.protocol.deployment)
    values = {
        "OPENLEDGER_NODE_RPC_URL": world.w3.provider.endpoint_uri,
        "OPENLEDGER_NODE_DEPLOYMENTS": str(deployments),
        "OPENLEDGER_NODE_ADDRESS": world.roles.node,
        "OPENLEDGER_NODE_STORE": str(tmp_path / "store"),
        "OPENLEDGER_NODE_DATA_DIR": str(tmp_path / "node"),
        "OPENLEDGER_NODE_PORT": "1",  # nothing serves there: the CLI works offline
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def run(*args: str) -> tuple[int, str]:
    result = CliRunner(mix_stderr=False).invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + (result.stderr if result.exit_code else "")


def test_stake_with_a_key_activates_a_new_node_and_sets_its_endpoint(
    world: World, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = world.roles.alice  # holds OPEN, never staked
    monkeypatch.delenv("OPENLEDGER_NODE_ADDRESS")
    monkeypatch.setenv("OPENLEDGER_NODE_PRIVATE_KEY", "0x" + private_key(5).hex())
    nodes = world.protocol["NodeRegistry"].functions
    assert not nodes.isActive(alice).call()
    code, out = run("stake", "1500.5", "--endpoint", "https://node.example/v1")
    assert code == 0, out
    assert json.loads(out)["node"] == alice and nodes.isActive(alice).call()
    info = nodes.nodeInfo(alice).call()
    assert info[0] == 1500 * OPEN + OPEN // 2
    assert "https://node.example/v1" in info


def test_stake_that_would_revert_names_the_error(world: World, env: dict[str, str]) -> None:
    code, out = run("stake", "1000000000")  # far more OPEN than the node holds
    assert code != 0
    assert "would revert" in out and "stake" in out


@pytest.mark.parametrize("amount", ["zero", "-3", "0", "0.0000000000000000001"])
def test_stake_refuses_a_bad_amount(env: dict[str, str], amount: str) -> None:
    code, out = run("stake", amount)
    assert code != 0 and amount in out


def test_settings_errors_are_reported_not_raised(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENLEDGER_NODE_PRIVATE_KEY", "0x" + "11" * 32)  # with _ADDRESS: both
    code, out = run("status")
    assert code != 0 and "exactly one of" in out


def test_redeem_now_offline_redeems_the_ledger_and_status_shows_it(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    price = OPEN // 10
    signed = voucher(world, price)
    (tmp_path / "node").mkdir()
    with Ledger(tmp_path / "node" / "ledger.sqlite", world.roles.node) as ledger:
        ledger.commit(signed, receipt(signed, price))
    code, out = run("status")
    assert code == 0, out
    status = json.loads(out)
    assert status["active"] is True and status["serving"] is None
    assert status["ledger"] == {
        "unredeemed_wei": str(price), "pending_receipts": 1, "redemptions": 0,
    }  # fmt: skip
    code, out = run("redeem-now")
    assert code == 0, out
    done = json.loads(out)
    assert done["redeemed"] is True and done["receipts"] == 1 and int(done["paid"]) == price
    payments = world.payments.functions
    assert payments.redeemed(world.roles.payer, world.roles.node, 1).call() == price
    code, out = run("redeem-now")
    assert json.loads(out) == {"redeemed": False, "reason": "nothing unredeemed"}


def test_attribute_with_nothing_redeemed_posts_nothing_and_an_unreadable_lineage_is_named(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    code, out = run("attribute", "--model", "1")
    assert code == 0, out
    assert json.loads(out) == {
        "posted": False,
        "reason": "no redemption of model 1 left to pay for",
    }
    price = OPEN // 10
    signed = voucher(world, price)
    (tmp_path / "node").mkdir()
    with Ledger(tmp_path / "node" / "ledger.sqlite", world.roles.node) as ledger:
        ledger.commit(signed, receipt(signed, price))
    assert run("redeem-now")[0] == 0
    # The world's model names a training manifest no store holds: the epoch cannot be
    # allocated, and the error says which version and which CID.
    code, out = run("attribute", "--model", "1", "--dry-run")
    assert code != 0
    assert "model 1 version 1" in out and "bafkmanifest" in out, out
    assert world.protocol["AttributionRewards"].functions.epochCount().call() == 0


def test_reveal_names_what_it_cannot_reveal(
    world: World, env: dict[str, str], tmp_path: Path
) -> None:
    code, out = run("reveal", "--proof", "1")
    assert code != 0 and "no ledger at" in out and "nothing was served" in out
    price = OPEN // 10
    signed = voucher(world, price)
    (tmp_path / "node").mkdir()
    with Ledger(tmp_path / "node" / "ledger.sqlite", world.roles.node) as ledger:
        ledger.commit(signed, receipt(signed, price))
    code, out = run("reveal", "--proof", "1")
    assert code != 0 and "usage proof 1 is not a confirmed redemption of this node" in out
    assert run("redeem-now")[0] == 0
    # The receipt was served without attribution: nothing to reveal, and asking for it by
    # hash names it.
    code, out = run("reveal", "--proof", "1")
    assert code == 0, out
    done = json.loads(out)
    assert done["revealed"] == 0 and done["usage_proof_id"] == 1
    hash_ = "0x" + "ab" * 32
    code, out = run("reveal", "--proof", "1", "--receipt", hash_)
    assert code != 0 and f"usage proof 1 has no attributed receipt {hash_}" in out
    code, out = run("reveal", "--proof", "1", "--receipt", "0x1234")
    assert code != 0 and "'0x1234' is not a request hash" in out
