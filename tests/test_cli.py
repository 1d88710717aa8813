"""The ``openledger`` console script and the SDK under it: the protocol's commands over plain
web3, and what a party gains by acting out of order through them (nothing), against
an anvil started for this module with a deployment recorded in a file of its own.

The console script itself runs as a subprocess once (a read and a transaction, as a user types
them); the rest invokes the same click group in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from eth_account import Account
from web3 import Web3

from backend.cli.main import cli
from backend.cli.registry import all_commands
from backend.devnet.anvil import Anvil, free_port
from backend.protocol.deployments import DeploymentStore
from backend.protocol.eip712 import Domain, SignedVoucher, recover_voucher_signer
from backend.protocol.enums import ContributionStatus
from backend.protocol.web3_protocol import Web3Protocol, deploy
from backend.sdk import OpenLedger, ProtocolError
from backend.sdk.signers import TEST_MNEMONIC, KeySigner, resolve_signer

OPEN = 10**18
CONSOLE_SCRIPT = Path(sys.executable).parent / "openledger"
Account.enable_unaudited_hdwallet_features()
ADDRESSES = [
    Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").address
    for i in range(4)
]
GOVERNANCE, CONTRIBUTOR, NODE, PAYER = ADDRESSES


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web3Protocol]:
    """Anvil with a fresh deployment by TEST::0, recorded where the commands look for it."""
    deployments = tmp_path_factory.mktemp("chain") / "deployments.json"
    with Anvil(port=free_port()) as node, pytest.MonkeyPatch.context() as patch:
        w3 = Web3(Web3.HTTPProvider(node.url))
        protocol = deploy(w3, GOVERNANCE)
        DeploymentStore(deployments).save(protocol.deployment)
        patch.setenv("OPENLEDGER_DEPLOYMENTS", str(deployments))
        patch.setenv("OPENLEDGER_RPC", node.url)
        yield protocol


def openledger(*args: str, account: str = "TEST::0", ok: bool = True) -> str:
    """``openledger ARGS --account ACCOUNT``, in-process; its output."""
    result = CliRunner().invoke(cli, [*args, "--account", account])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def ensure_model(chain: Web3Protocol) -> None:
    """Model 1 (on a published Datanet version), for vouchers to name."""
    if chain["ModelRegistry"].functions.modelCount().call():
        return
    openledger("create-datanet", "bafy-m-meta")
    datanet = chain["DatanetRegistry"].functions.datanetCount().call()
    openledger("contribute", str(datanet), "bafy-m-file", "1")
    openledger("review", str(datanet), "--approve",
               str(chain["DatanetRegistry"].functions.contributionCount().call()))  # fmt: skip
    openledger("publish-version", str(datanet), "0x" + "11" * 32, "bafy-manifest", "1")
    openledger("register-model", "--metadata-cid", "m", "--base-model-cid", "b",
               "--adapter-cid", "a", "--training-manifest-cid", "t", "--datanet-id",
               str(datanet), "--datanet-version", "1", "--developer-bps", "5000",
               "--contributors-bps", "2000", "--node-bps", "2500")  # fmt: skip


def balance(p: Web3Protocol, account: str) -> int:
    return int(p["OpenToken"].functions.balanceOf(account).call())


def test_the_console_script_reads_and_sends_as_a_user_types_it(chain: Web3Protocol) -> None:
    run = [str(CONSOLE_SCRIPT), "status", "--account", "TEST::1"]
    done = subprocess.run(run, capture_output=True, text=True, env=os.environ, check=False)
    assert done.returncode == 0, done.stderr
    assert f"account {CONTRIBUTOR}" in done.stdout
    assert f"OpenToken              {chain.deployment.address('OpenToken')}" in done.stdout
    before = balance(chain, NODE)
    send = [str(CONSOLE_SCRIPT), "transfer", NODE, "2.5", "--account", "TEST::0"]
    done = subprocess.run(send, capture_output=True, text=True, env=os.environ, check=False)
    assert done.returncode == 0, done.stderr
    assert f"sent 2.5 OPEN to {NODE}: tx 0x" in done.stdout
    assert balance(chain, NODE) == before + 5 * OPEN // 2


def test_a_datanet_walk_prints_what_the_chain_recorded(chain: Web3Protocol) -> None:
    openledger("transfer", CONTRIBUTOR, "10")
    out = openledger("create-datanet", "bafy-meta", "--bond", "1.5")
    datanet = int(out.split("datanet ")[1].split(":")[0])
    assert "bond 1.5 OPEN, min approved 1" in out
    out = openledger("contribute", str(datanet), "bafy-file", "100", account="TEST::1")
    assert "approved 1.5 OPEN to" in out and "contribution " in out and "tx 0x" in out
    registry = chain["DatanetRegistry"].functions
    assert registry.datanet(datanet).call().contributionBond == 3 * OPEN // 2
    assert registry.contributionCount().call() >= 1


def test_a_refused_call_prints_the_contracts_error_and_sends_nothing(chain: Web3Protocol) -> None:
    nonce = chain.w3.eth.get_transaction_count(CONTRIBUTOR)
    out = openledger("contribute", "99", "bafy-x", "1", account="TEST::1", ok=False)
    assert "Error: cannot read datanet 99: UnknownDatanet(datanetId=99)" in out
    out = openledger("resolve", "1", "--dismissed", account="TEST::1", ok=False)
    assert f"would revert: OwnableUnauthorizedAccount(account={CONTRIBUTOR})" in out
    assert chain.w3.eth.get_transaction_count(CONTRIBUTOR) == nonce


def test_an_account_the_node_unlocks_sends_and_signs_vouchers(chain: Web3Protocol) -> None:
    """An address as --account: anvil signs the transaction and the EIP-712 voucher."""
    before = balance(chain, PAYER)
    openledger("transfer", PAYER, "1", account=GOVERNANCE)
    assert balance(chain, PAYER) == before + OPEN
    ensure_model(chain)
    out = openledger("sign-voucher", NODE, "1", "0.5", account=PAYER)
    signed = SignedVoucher.from_json(json.loads(out[out.index("{") : out.rindex("}") + 1]))
    assert recover_voucher_signer(Web3ProtocolDomain(chain), signed) == PAYER


def Web3ProtocolDomain(p: Web3Protocol):  # noqa: N802

    return Domain(p.deployment.chain_id, p.deployment.address("InferencePayments"))


def test_a_keystore_account_is_unlocked_with_its_password_file(
    chain: Web3Protocol, tmp_path: Path
) -> None:
    key = Account.create().key
    keystore = tmp_path / "wallet.json"
    keystore.write_text(json.dumps(Account.encrypt(key, "correct horse")))
    (tmp_path / "password").write_text("correct horse\n")
    address = Account.from_key(key).address
    out = openledger("status", "--password-file", str(tmp_path / "password"),
                     account=str(keystore))  # fmt: skip
    assert f"account {address}" in out
    (tmp_path / "wrong").write_text("battery staple")
    out = openledger("status", "--password-file", str(tmp_path / "wrong"),
                     account=str(keystore), ok=False)  # fmt: skip
    assert f"cannot unlock {keystore}" in out
    out = openledger("status", account=str(keystore), ok=False)
    assert "needs its password (--password-file)" in out


def test_bad_accounts_and_missing_deployments_are_named(
    chain: Web3Protocol, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = openledger("status", account="TEST::x", ok=False)
    assert "TEST::x: a test account is TEST::<number>" in out
    out = openledger("status", account="nobody", ok=False)
    assert "no account 'nobody'" in out
    monkeypatch.setenv("OPENLEDGER_DEPLOYMENTS", str(tmp_path / "none.json"))
    out = openledger("status", ok=False)
    assert "no deployment recorded for chain 31337" in out and "deploy first" in out


def test_the_ape_script_serves_the_same_commands() -> None:
    """``ape run ol`` and ``openledger`` bind one set of commands (backend.cli.registry)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_ol", Path(__file__).parents[1] / "scripts/ol.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [c.name for c in all_commands()]
    assert sorted(module.cli.commands) == sorted(names) == sorted(cli.commands)
    assert len(names) == len(set(names)) == 26


def test_the_console_script_loads_neither_ape_nor_torch() -> None:
    """What makes it start fast: plain web3 and the shipped ABIs, nothing heavier."""
    code = "import sys, backend.cli.main; print(sorted({'ape', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- the SDK under attack: what a party gains by acting out of order -------------------------


def as_account(chain: Web3Protocol, spec: str, **kw: Any) -> OpenLedger:
    return OpenLedger(chain, resolve_signer(chain.w3, spec), **kw)


class FrontRunSigner:
    """Signs as ``inner``, but lets ``front_run`` act between the SDK's simulation and the
    transaction (another party's transaction landing first)."""

    def __init__(self, inner: Any, front_run: Callable[[], None]) -> None:
        self.inner, self.front_run = inner, front_run
        self.address = inner.address

    def send_transaction(self, w3: Web3, tx: dict[str, Any]) -> bytes:
        self.front_run()
        return self.inner.send_transaction(w3, tx)

    def sign_typed_data(self, document: dict[str, Any]) -> Any:
        return self.inner.sign_typed_data(document)


def test_a_review_front_run_by_another_curator_fails_and_changes_nothing(
    chain: Web3Protocol,
) -> None:
    """Curator A's approval passed its simulation, then curator B rejected the contribution
    first: A's transaction reverts, B's verdict stands, A is told, nothing is reported sent."""
    owner = as_account(chain, "TEST::0")
    datanet = int(owner.create_datanet("bafy-race-meta", 0, 1).datanetId)
    owner.add_curator(datanet, NODE)
    contribution = int(owner.contribute(datanet, "bafy-race-file", 10).contributionId)
    rival = as_account(chain, "TEST::2")
    sent: list[str] = []
    racer = OpenLedger(
        chain,
        FrontRunSigner(resolve_signer(chain.w3, "TEST::0"),
                       lambda: rival.review(datanet, [], [contribution])),
        on_sent=lambda action, _: sent.append(action),
    )  # fmt: skip
    with pytest.raises(ProtocolError, match=f"reviewed datanet {datanet}.*reverted"):
        racer.review(datanet, [contribution], [])
    status = chain["DatanetRegistry"].functions.contribution(contribution).call().status
    assert status == ContributionStatus.REJECTED and sent == []


class OtherDataSigner:
    """A wallet that signs something other than what it was shown (a higher amount)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.address = inner.address

    def send_transaction(self, w3: Web3, tx: dict[str, Any]) -> bytes:
        return self.inner.send_transaction(w3, tx)

    def sign_typed_data(self, document: dict[str, Any]) -> Any:
        message = {**document["message"], "cumulativeAmount": 10**30}
        return self.inner.sign_typed_data({**document, "message": message})


def test_a_wallet_that_signs_other_data_gives_no_voucher(chain: Web3Protocol) -> None:
    ensure_model(chain)
    payer = OpenLedger(chain, OtherDataSigner(resolve_signer(chain.w3, "TEST::3")))
    with pytest.raises(ProtocolError, match="does not recover to the sender"):
        payer.sign_voucher(NODE, 1, OPEN, 2**40, None)


def test_a_revoked_session_key_cannot_sign_once_its_delay_passed(chain: Web3Protocol) -> None:
    """Revoked, a key keeps its power for the channel's delay (the node may rely on what it
    signed); after that the SDK refuses to sign with it rather than hand out a voucher the
    contract would skip."""
    ensure_model(chain)
    key = Account.create()
    as_account(chain, "TEST::0").transfer(PAYER, 2 * OPEN)
    payer = as_account(chain, "TEST::3")
    payer.deposit(NODE, OPEN)  # the channel, and with it its one-day delay
    payer.authorize_session_key(NODE, key.address, payer.now() + 30 * 86_400, OPEN)
    session = OpenLedger(chain, KeySigner(key.key))
    assert session.sign_voucher(NODE, 1, OPEN // 2, 2**40, PAYER).voucher.payer == PAYER
    payer.revoke_session_key(NODE, key.address)
    session.sign_voucher(NODE, 1, OPEN // 2, 2**40, PAYER)  # within the delay: still live
    chain.w3.provider.make_request("evm_increaseTime", [2 * 86_400])  # type: ignore[arg-type]
    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=f"is not a live session key of {PAYER}"):
        session.sign_voucher(NODE, 1, OPEN // 2, 2**40, PAYER)
