"""The ape scripts, driven for real against an anvil node started for this module.

ape-foundry's ``ethereum:local:foundry`` provider connects to a running anvil when
``APE_FOUNDRY_HOST`` names it (and never stops a node it did not start). The deployment and a
few commands run as ``ape run ...`` subprocesses, exactly as a user types them; the walk through
the protocol invokes the same click commands in-process (``CliRunner``), since each ``ape run``
spends ~4 s starting up. ``TEST::n`` are ape's test accounts, the same mnemonic as anvil's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from eth_account import Account

from backend.devnet.anvil import Anvil, free_port, rpc
from backend.protocol.amounts import format_open, parse_amount
from backend.protocol.deployments import CONTRACT_NAMES
from backend.protocol.eip712 import (
    VOUCHER_TYPE,
    Domain,
    SignedVoucher,
    Voucher,
    recover_voucher_signer,
    sign_voucher,
)
from backend.protocol.merkle import StandardMerkleTree
from backend.sdk.signers import ApeSigner, typed_data

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

ROOT = Path(__file__).resolve().parents[1]
APE = Path(sys.executable).parent / "ape"
NETWORK = "ethereum:local:foundry"
MNEMONIC = "test test test test test test test test test test test junk"
OPEN = 10**18
Account.enable_unaudited_hdwallet_features()
# TEST::n, as ape derives them from the test mnemonic in ape-config.yaml
ADDRESSES = [
    Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").address for i in range(6)
]
GOVERNANCE, CONTRIBUTOR, NODE, PAYER, SESSION_KEY, CURATOR = ADDRESSES
DEPLOY_OPTIONS = (
    "--min-stake", "100",
    "--challenge-window", "600",
    "--challenge-bond", "10",
    "--slash-amount", "50",
    "--withdrawal-delay", "60",
    "--unbonding-delay", "120",
)  # fmt: skip


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anvil() -> Iterator[str]:
    """The URL of an anvil node started for this module, stopped by its PID afterwards."""
    with Anvil(port=free_port()) as node:
        yield node.url


@pytest.fixture(scope="module")
def env(anvil: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """This anvil and a deployments file of its own, for subprocesses and in-process commands."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APE_FOUNDRY_HOST", anvil)
        patch.setenv(
            "OPENLEDGER_DEPLOYMENTS", str(tmp_path_factory.mktemp("chain") / "deployments.json")
        )
        yield {**os.environ, "PATH": f"{APE.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def ape(env: dict[str, str], *args: str, account: str = "TEST::0", ok: bool = True) -> str:
    """Runs ``ape run <args> --network ... --account ...``; its stdout and stderr together."""
    command = [str(APE), "run", *args, "--network", NETWORK, "--account", account]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    if ok:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    else:
        assert done.returncode == 1, f"{' '.join(args)} should have failed:\n{output}"
    return output


def _load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module, loaded as ``ape run`` loads it."""
    spec = importlib.util.spec_from_file_location(
        f"_script_{name}", ROOT / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(name: str) -> click.Command:
    """The ``cli`` of ``scripts/<name>.py``."""
    return _load_script(name).cli


def invoke(command: click.Command, *args: str, account: str = "TEST::0", ok: bool = True) -> str:
    """Invokes ``command`` in-process as ``ape run`` would; its output."""
    result = CliRunner().invoke(command, [*args, "--network", NETWORK, "--account", account])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug, not a clean error: show its traceback
    if ok:
        assert result.exit_code == 0, f"{' '.join(args)} failed:\n{result.output}"
    else:
        assert result.exit_code in (1, 2), f"{' '.join(args)} should fail:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def ol_cli(env: dict[str, str]) -> click.Command:
    return _script("ol")


@pytest.fixture(scope="module")
def ol(ol_cli: click.Command) -> Callable[..., str]:
    """``ape run ol ...``, in-process."""

    def run(*args: str, account: str = "TEST::0", ok: bool = True) -> str:
        return invoke(ol_cli, *args, account=account, ok=ok)

    return run


@pytest.fixture(scope="module")
def deployment(env: dict[str, str]) -> dict[str, Any]:
    """A fresh deployment by TEST::0 (governance and treasury), as recorded."""
    output = ape(env, "deploy", "--fresh", *DEPLOY_OPTIONS)
    assert "deployed the protocol on chain 31337" in output
    records = json.loads(Path(env["OPENLEDGER_DEPLOYMENTS"]).read_text())
    return records["31337"]


def balance_of(url: str, token: str, account: str) -> int:
    data = "0x70a08231" + "00" * 12 + account[2:].lower()  # balanceOf(address)
    return int(str(rpc(url, "eth_call", [{"to": token, "data": data}, "latest"])), 16)


def travel(url: str, seconds: int) -> None:
    rpc(url, "evm_increaseTime", [seconds])
    rpc(url, "evm_mine")


def hexes(proof: list[bytes]) -> list[str]:
    return ["0x" + p.hex() for p in proof]


def number_after(label: str, output: str) -> int:
    match = re.search(rf"{label} (\d+)", output)
    assert match, f"no '{label} <n>' in:\n{output}"
    return int(match.group(1))


# --- amounts (no chain) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wei"),
    [
        ("1", OPEN),
        ("1.5", 3 * OPEN // 2),
        ("0.000000000000000001", 1),
        ("1000000000.123456789012345678", 1_000_000_000_123_456_789_012_345_678),
        ("1_000", 1_000 * OPEN),
        ("15wei", 15),
        ("2 OPEN", 2 * OPEN),
        ("12345678901234567890.123456789012345678", 12345678901234567890123456789012345678),
    ],
)
def test_parse_amount_converts_exactly(text: str, wei: int) -> None:
    assert parse_amount(text) == wei


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1.5.3", "not a number"),
        ("-1", "negative"),
        ("0.0000000000000000001", "at most 18 decimals"),
        ("1.5wei", "whole wei"),
        ("nan", "not a finite amount"),
        ("", "not a number"),
        ("1e80", "larger than any amount"),
    ],
)
def test_parse_amount_rejects_malformed_text(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_amount(text)


def test_format_open_is_exact_and_trims_zeros() -> None:
    assert format_open(3 * OPEN // 2) == "1.5 OPEN"
    assert format_open(1) == "0.000000000000000001 OPEN"
    assert format_open(10**27) == "1000000000 OPEN"
    assert format_open(0) == "0 OPEN"
    big = 12345678901234567890123456789012345678
    assert format_open(big) == "12345678901234567890.123456789012345678 OPEN"


class _Wallet:
    """An account that signs but does not reveal its key (a keyfile or hardware wallet)."""

    alias = "wallet"

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.address = Account.from_key(key).address

    def sign_message(self, message: Any) -> Any:
        from ape.types.signatures import MessageSignature

        signed = Account.sign_message(message, self._key)
        return MessageSignature(
            v=signed.v, r=signed.r.to_bytes(32, "big"), s=signed.s.to_bytes(32, "big")
        )


def test_sign_voucher_signs_through_a_wallet_without_a_private_key() -> None:
    key = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/3").key
    domain = Domain(31337, "0x" + "11" * 20)
    voucher = Voucher(payer=PAYER, node=NODE, model_id=1, cumulative_amount=OPEN, deadline=2**40)
    document = typed_data(domain, "Voucher", VOUCHER_TYPE, voucher.message())
    signature = ApeSigner(_Wallet(key)).sign_typed_data(document)
    signed = SignedVoucher(voucher, signature)
    assert signed == sign_voucher(key, domain, voucher)
    assert recover_voucher_signer(domain, signed) == PAYER


# --- deploy ----------------------------------------------------------------------------------


def test_deploy_records_the_contracts_and_parameters(
    anvil: str, deployment: dict[str, Any]
) -> None:
    assert set(deployment["contracts"]) == set(CONTRACT_NAMES)
    for address in deployment["contracts"].values():
        assert rpc(anvil, "eth_getCode", [address, "latest"]) not in ("0x", "0x0")
    assert deployment["governance"] == GOVERNANCE
    assert deployment["treasury"] == GOVERNANCE
    assert deployment["network"] == NETWORK
    params = deployment["params"]
    assert params["min_stake"] == 100 * OPEN
    assert params["challenge_window"] == 600
    assert params["challenge_bond"] == 10 * OPEN
    assert params["slash_amount"] == 50 * OPEN
    assert params["withdrawal_delay"] == 60
    assert params["unbonding_delay"] == 120
    assert params["protocol_bps"] == 500  # the default
    token = deployment["contracts"]["OpenToken"]
    assert balance_of(anvil, token, GOVERNANCE) == 10**9 * OPEN


def test_deploy_reuses_the_recorded_deployment_by_default(
    env: dict[str, str], deployment: dict[str, Any]
) -> None:
    output = invoke(_script("deploy"))
    assert "reused the protocol on chain 31337" in output
    for name, address in deployment["contracts"].items():
        assert re.search(rf"{name}\s+{address}", output), output


def test_deploy_refuses_other_parameters_without_fresh(
    env: dict[str, str], deployment: dict[str, Any]
) -> None:
    output = invoke(_script("deploy"), "--min-stake", "5", ok=False)
    assert "Error: a deployment is recorded for this chain with other --min-stake" in output
    assert "pass --fresh" in output


def test_deploy_offers_governance_which_accept_governance_takes(
    ol: Callable[..., str], deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("OPENLEDGER_DEPLOYMENTS", str(tmp_path / "handed-over.json"))
    out = invoke(_script("deploy"), "--fresh", "--governance", CURATOR)
    assert f"governance {CURATOR} must accept ownership" in out
    out = ol("resolve", "1", "--dismissed", account="TEST::5", ok=False)
    assert f"OwnableUnauthorizedAccount(account={CURATOR})" in out  # only offered
    out = ol("accept-governance", account="TEST::5")
    for name in CONTRACT_NAMES[1:]:
        assert f"accepted {name}: tx 0x" in out
    assert f"governance             {CURATOR}" in ol("status", account="TEST::5")
    out = ol("accept-governance", account="TEST::5", ok=False)
    assert f"Error: no contract offers its ownership to {CURATOR}" in out


# --- the whole protocol, command by command --------------------------------------------------


def test_protocol_walk_from_datanet_to_claims_disputes_and_withdrawals(
    anvil: str, ol: Callable[..., str], deployment: dict[str, Any], tmp_path: Path
) -> None:
    token = deployment["contracts"]["OpenToken"]
    domain = Domain(31337, deployment["contracts"]["InferencePayments"])
    # Fund the roles.
    for address, amount in ((CONTRIBUTOR, "100"), (NODE, "1000"), (PAYER, "50")):
        assert f"sent {amount} OPEN to {address}: tx 0x" in ol("transfer", address, amount)
    assert balance_of(anvil, token, NODE) == 1000 * OPEN

    # A Datanet: create, add a curator, two contributions, one approved and one rejected.
    out = ol("create-datanet", "bafy-datanet-meta", "--bond", "2.5", "--min-approved", "1")
    datanet = number_after("datanet", out)
    assert "bond 2.5 OPEN, min approved 1" in out
    ol("add-curator", str(datanet), CURATOR)
    out = ol("contribute", str(datanet), "bafy-file-a", "1000", account="TEST::1")
    assert "approved 2.5 OPEN" in out and "bond 2.5 OPEN" in out
    kept = number_after("contribution", out)
    out = ol("contribute", str(datanet), "bafy-file-b", "2000", account="TEST::1")
    dropped = number_after("contribution", out)
    assert balance_of(anvil, token, CONTRIBUTOR) == 95 * OPEN
    out = ol(
        "review", str(datanet), "--approve", str(kept), "--reject", str(dropped),
        account="TEST::5",
    )  # fmt: skip
    assert f"approved [{kept}], rejected [{dropped}]: tx 0x" in out
    root = StandardMerkleTree.of(
        [(kept, CONTRIBUTOR, "bafy-file-a")], ["uint256", "address", "string"]
    ).root
    out = ol(
        "publish-version", str(datanet), "0x" + root.hex(), "bafy-manifest", "1",
        account="TEST::5",
    )  # fmt: skip
    assert f"datanet {datanet} version 1: 1 contributions, root 0x{root.hex()}" in out

    # A model trained on that version; the node stakes and is its attributor.
    out = ol(
        "register-model",
        "--metadata-cid", "bafy-model-meta", "--base-model-cid", "bafy-base",
        "--adapter-cid", "bafy-adapter-1", "--training-manifest-cid", "bafy-train-1",
        "--datanet-id", str(datanet), "--datanet-version", "1",
        "--price-per-request", "0.01",
        "--developer-bps", "5000", "--contributors-bps", "2000", "--node-bps", "2500",
        "--attributor", NODE,
    )  # fmt: skip
    model = number_after("model", out)
    assert f"attributor {NODE}" in out
    out = ol("publish-model-version", str(model), "bafy-adapter-2", "bafy-train-2",
             "--datanet-id", str(datanet), "--datanet-version", "1")  # fmt: skip
    assert f"model {model} version 2" in out
    out = ol("stake", "100", "--endpoint", "http://node.example/v1", account="TEST::2")
    assert "bonded 100 OPEN: active" in out and "set endpoint http://node.example/v1" in out

    # The payer deposits, lets a session key sign, and the node redeems what the key signed.
    out = ol("deposit", NODE, "20", account="TEST::3")
    assert "channel balance 20 OPEN" in out
    out = ol("authorize-session-key", NODE, SESSION_KEY, "--allowance", "15", "--expires-in",
             "3600", account="TEST::3")  # fmt: skip
    assert f"authorized session key {SESSION_KEY} for node {NODE} until" in out
    assert "allowance 15 OPEN" in out
    vouchers = tmp_path / "vouchers.json"
    out = ol(
        "sign-voucher", NODE, str(model), "10", "--payer", PAYER, "--out", str(vouchers),
        account="TEST::4",
    )  # fmt: skip
    signed = SignedVoucher.from_json(json.loads(out[out.index("{") : out.rindex("}") + 1]))
    assert signed.voucher.payer == PAYER
    assert signed.voucher.cumulative_amount == 10 * OPEN
    assert recover_voucher_signer(domain, signed) == SESSION_KEY
    assert json.loads(vouchers.read_text()) == [signed.to_json()]
    out = ol("redeem", str(vouchers), "--receipts-cid", "bafy-receipts", account="TEST::2")
    assert "paid 10 OPEN" in out and "usage proof 1: paid 10 OPEN in total" in out
    # A second voucher, signed by the payer itself, funds the pool again.
    second = tmp_path / "second.json"
    ol("sign-voucher", NODE, str(model), "20", "--out", str(second), account="TEST::3")
    out = ol("redeem", str(second), account="TEST::2")
    assert "usage proof 2: paid 10 OPEN in total" in out

    # Epoch 1 allocates the contributors' 2 x 2 OPEN; it is claimable after the window.
    rows = [(0, CONTRIBUTOR, 3 * OPEN), (1, CURATOR, OPEN)]
    tree = StandardMerkleTree.of(rows, ["uint256", "address", "uint256"])
    out = ol("post-epoch", str(model), "0x" + tree.root.hex(), "4", "bafy-report-1",
             account="TEST::2")  # fmt: skip
    epoch = number_after("epoch", out)
    claim = ("claim", str(epoch), "0", CONTRIBUTOR, "3", *hexes(tree.proof(0)))
    out = ol(*claim, account="TEST::1", ok=False)
    assert f"would revert: ChallengeWindowOpen(epochId={epoch}, challengeEndsAt=" in out
    travel(anvil, 601)
    out = ol(*claim[:4], "4", *claim[5:], account="TEST::1", ok=False)
    assert f"would revert: InvalidClaimProof(epochId={epoch}, index=0, account={CONTRIBUTOR}" in out
    before = balance_of(anvil, token, CONTRIBUTOR)
    out = ol(*claim, account="TEST::1")
    assert f"claimed 3 OPEN for {CONTRIBUTOR} from epoch {epoch}: tx 0x" in out
    assert balance_of(anvil, token, CONTRIBUTOR) == before + 3 * OPEN
    out = ol(*claim, account="TEST::1", ok=False)
    assert f"would revert: AlreadyClaimed(epochId={epoch}, index=0)" in out

    # Epoch 2 is challenged and the dispute upheld: the node is slashed for the challenger.
    ol("deposit", NODE, "15", account="TEST::3")
    third = tmp_path / "third.json"
    ol("sign-voucher", NODE, str(model), "30", "--out", str(third), account="TEST::3")
    ol("redeem", str(third), account="TEST::2")
    out = ol("post-epoch", str(model), "0x" + tree.root.hex(), "2", "bafy-report-2",
             account="TEST::2")  # fmt: skip
    disputed = number_after("epoch", out)
    out = ol("challenge", str(disputed), "--reason-cid", "bafy-evidence")
    assert f"challenged epoch {disputed} with a bond of 10 OPEN: tx 0x" in out
    out = ol("resolve", str(disputed), "--upheld")
    assert f"upheld the challenge of epoch {disputed}" in out
    assert f"slashed 50 OPEN from {NODE}" in out

    # Withdrawals: earnings, refunded bond, slashing reward, deposit, unbonded stake.
    out = ol("withdraw", "earnings", account="TEST::2")
    assert "received 7.5 OPEN" in out  # node: 25% of 3 x 10 OPEN
    out = ol("withdraw", "earnings")
    assert "received 16.5 OPEN" in out  # developer 50% + protocol 5% of 30 OPEN
    out = ol("withdraw", "datanet", account="TEST::1")
    assert "received 2.5 OPEN" in out  # the approved contribution's bond
    out = ol("withdraw", "rewards")
    assert "received 60 OPEN" in out  # 50 slashed + the 10 bond back
    ol("request-withdrawal", NODE, "5", account="TEST::3")
    out = ol("withdraw", "payments-deposit", "--node", NODE, account="TEST::3", ok=False)
    assert "would revert: WithdrawalLocked(payer=" in out
    travel(anvil, 61)
    out = ol("withdraw", "payments-deposit", "--node", NODE, account="TEST::3")
    assert "received 5 OPEN" in out
    out = ol("revoke-session-key", NODE, SESSION_KEY, account="TEST::3")
    assert f"revoked session key {SESSION_KEY}" in out and "valid until" in out
    ol("unbond", "50", account="TEST::2")
    travel(anvil, 121)
    # Epoch 2's challenge window (600 s) holds the whole stake, unbonded or not.
    out = ol("withdraw", "unbonded", account="TEST::2", ok=False)
    assert f"would revert: StakeHeld(node={NODE}" in out
    out = ol("status", account="TEST::2")
    assert "stake held          until" in out and "0 open dispute(s)" in out
    travel(anvil, 600)
    before = balance_of(anvil, token, NODE)
    out = ol("withdraw", "unbonded", account="TEST::2")
    assert "received 50 OPEN" in out
    assert balance_of(anvil, token, NODE) == before + 50 * OPEN

    # A contribution nobody reviews is taken back after 30 days; epoch 1's unclaimed leaf
    # (the curator's 1 OPEN) goes back to the pool after the 180-day claim period.
    out = ol("contribute", str(datanet), "bafy-file-c", "10", account="TEST::1")
    orphan = number_after("contribution", out)
    out = ol("withdraw-contribution", str(orphan), account="TEST::1", ok=False)
    assert f"would revert: ReviewTimeoutNotReached(contributionId={orphan}" in out
    out = ol("sweep-epoch", str(epoch), ok=False)
    assert f"would revert: ClaimPeriodOpen(epochId={epoch}" in out
    travel(anvil, 180 * 86_400)
    out = ol("withdraw-contribution", str(orphan), account="TEST::1")
    assert f"withdrew contribution {orphan}: tx 0x" in out and "bond 2.5 OPEN credited" in out
    assert "received 2.5 OPEN" in ol("withdraw", "datanet", account="TEST::1")
    out = ol("sweep-epoch", str(epoch), account="TEST::4")
    assert f"swept epoch {epoch}: tx 0x" in out
    assert f"returned 1 OPEN to the pool of model {model}" in out

    # The summary, read back from the chain.
    out = ol("status", "--node", NODE, account="TEST::3")
    assert "OPEN supply           1000000000 OPEN" in out
    assert "datanets 1, contributions 3, models 1, epochs 2, usage proofs 3" in out
    assert f"account {PAYER}" in out
    assert "OPEN balance        20 OPEN" in out  # 50 - 35 deposited + 5 withdrawn
    assert f"channel with {NODE}: 0 OPEN" in out  # 35 deposited, 30 redeemed, 5 withdrawn
    out = ol("status", account="TEST::2")
    assert "stake               0 OPEN bonded, 0 OPEN unbonding, inactive" in out
    assert "endpoint http://node.example/v1" in out


def test_claim_all_claims_every_leaf_the_reports_pay(
    anvil: str, ol: Callable[..., str], deployment: dict[str, Any], tmp_path: Path
) -> None:
    """After the walk: the node posts an epoch whose report is in a content store;
    `ol claim-all` claims what it pays the sender (and, with --for, another account)."""
    from backend.storage.local import DirectoryStore

    store = DirectoryStore(tmp_path / "store")
    token = deployment["contracts"]["OpenToken"]
    rows = [(0, CONTRIBUTOR, OPEN // 2), (1, CURATOR, OPEN // 4)]
    tree = StandardMerkleTree.of(rows, ["uint256", "address", "uint256"])
    report = {"leaves": [[i, a, str(amount)] for i, a, amount in rows]}
    cid = store.put(json.dumps(report).encode())
    ol("stake", "100", account="TEST::2")  # the walk unbonded everything
    out = ol("post-epoch", "1", "0x" + tree.root.hex(), "0.75", cid, account="TEST::2")
    epoch = number_after("epoch", out)
    out = ol("claim-all", "--store", str(store.root), account="TEST::1")
    assert f"epoch {epoch} (model 1): 0.5 OPEN waits for its challenge window" in out
    travel(anvil, 601)
    before = balance_of(anvil, token, CONTRIBUTOR)
    out = ol("claim-all", "--store", str(store.root), account="TEST::1")
    assert f"claimed 0.5 OPEN for {CONTRIBUTOR} from epoch {epoch} (model 1): tx 0x" in out
    assert balance_of(anvil, token, CONTRIBUTOR) == before + OPEN // 2
    out = ol("claim-all", "--store", str(store.root), account="TEST::1")
    assert "claimed 0 OPEN now" in out and "tx 0x" not in out
    # Anyone may send a claim for another account: the curator is paid.
    out = ol("claim-all", "--for", CURATOR, "--store", str(store.root), account="TEST::1")
    assert f"claimed 0.25 OPEN for {CURATOR} from epoch {epoch}" in out


def test_audit_attribution_names_what_it_cannot_check(
    deployment: dict[str, Any], tmp_path: Path
) -> None:
    audit = _script("audit")
    out = invoke(audit, "attribution", "99", ok=False)
    assert "model 99 has no posted epoch" in out
    # The walk's epoch 1 names a report no store holds: the audit says which, and fails.
    out = invoke(audit, "attribution", "1", "1", "--store", str(tmp_path / "empty"), ok=False)
    assert "epoch 1's report bafy-report-1 is unreadable" in out


# --- bad input -------------------------------------------------------------------------------


def test_ape_run_ol_names_an_unknown_datanet_and_exits_1(
    env: dict[str, str], deployment: dict[str, Any]
) -> None:
    out = ape(env, "ol", "contribute", "99", "bafy-x", "10", ok=False)
    assert "Error: cannot read datanet 99: UnknownDatanet(datanetId=99)" in out
    assert "tx 0x" not in out


def test_ape_run_ol_status_reads_the_deployment_back(
    env: dict[str, str], deployment: dict[str, Any]
) -> None:
    out = ape(env, "ol", "status", account="TEST::1")
    assert f"OpenToken              {deployment['contracts']['OpenToken']}" in out
    assert "OPEN supply           1000000000 OPEN" in out
    assert f"account {CONTRIBUTOR}" in out


def test_contribute_to_an_unknown_datanet_names_it(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    out = ol("contribute", "99", "bafy-x", "10", ok=False)
    assert "Error: cannot read datanet 99: UnknownDatanet(datanetId=99)" in out
    assert "tx 0x" not in out


@pytest.mark.parametrize(
    ("amount", "why"),
    [("1.5.3", "is not a number of OPEN"), ("0.0000000000000000001", "at most 18 decimals")],
)
def test_deposit_rejects_a_malformed_amount(
    ol: Callable[..., str], deployment: dict[str, Any], amount: str, why: str
) -> None:
    out = ol("deposit", NODE, amount, ok=False)
    assert f"Invalid value for 'AMOUNT': '{amount}'" in out and why in out, out
    assert "tx 0x" not in out


def test_create_datanet_revert_shows_the_custom_error(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    out = ol("create-datanet", "bafy-meta", "--treasury", "0x" + "00" * 20, ok=False)
    assert "Error: created datanet would revert: DatanetZeroAddress()" in out


def test_publish_version_without_new_approvals_shows_the_custom_error(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    datanet = number_after("datanet", ol("create-datanet", "bafy-meta-2"))
    contribution = number_after("contribution", ol("contribute", str(datanet), "bafy-c", "1"))
    ol("review", str(datanet), "--approve", str(contribution))
    ol("publish-version", str(datanet), "0x" + "11" * 32, "bafy-manifest-1", "1")
    out = ol("publish-version", str(datanet), "0x" + "22" * 32, "bafy-manifest-2", "1", ok=False)
    assert f"would revert: NoChangeSinceVersion(datanetId={datanet}, version=1)" in out


def test_publish_version_over_a_stale_approved_count_is_refused(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    datanet = number_after("datanet", ol("create-datanet", "bafy-meta-stale"))
    first = number_after("contribution", ol("contribute", str(datanet), "bafy-s1", "1"))
    second = number_after("contribution", ol("contribute", str(datanet), "bafy-s2", "1"))
    ol("review", str(datanet), "--approve", f"{first},{second}")
    out = ol("publish-version", str(datanet), "0x" + "11" * 32, "bafy-manifest-s", "1", ok=False)
    assert f"would revert: ApprovedCountChanged(datanetId={datanet}, expected=1, approved=2)" in out


def test_review_by_a_non_curator_is_refused(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    datanet = number_after("datanet", ol("create-datanet", "bafy-meta-3"))
    out = ol("review", str(datanet), "--approve", "1", account="TEST::1", ok=False)
    assert f"would revert: NotCurator(datanetId={datanet}, caller={CONTRIBUTOR})" in out


def test_resolve_by_a_non_governance_account_is_refused(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    out = ol("resolve", "1", "--dismissed", account="TEST::1", ok=False)
    assert f"would revert: OwnableUnauthorizedAccount(account={CONTRIBUTOR})" in out


def test_register_model_rejects_a_split_not_summing_to_10000(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    out = ol(
        "register-model",
        "--metadata-cid", "m", "--base-model-cid", "b", "--adapter-cid", "a",
        "--training-manifest-cid", "t", "--datanet-id", "1", "--datanet-version", "1",
        "--developer-bps", "5000", "--contributors-bps", "2000", "--node-bps", "2000",
        ok=False,
    )  # fmt: skip
    assert "would revert: SplitTotalNot10000(total=9500)" in out


def test_commands_without_a_deployment_say_to_deploy_first(
    ol: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENLEDGER_DEPLOYMENTS", str(tmp_path / "none.json"))
    out = ol("status", ok=False)
    assert "no deployment recorded for chain 31337" in out
    assert "deploy first: ape run deploy" in out


def test_authorize_session_key_rejects_a_past_or_doubled_expiry(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    key = ("authorize-session-key", NODE, SESSION_KEY, "--allowance", "1")
    out = ol(*key, "--expiry", "1000", ok=False)
    assert "Error: the expiry 1000 is not in the future" in out
    out = ol(*key, "--expiry", "1000", "--expires-in", "60", ok=False)
    assert "as a timestamp or as seconds from now, not both" in out


def test_sign_voucher_rejects_an_address_typo(
    ol: Callable[..., str], deployment: dict[str, Any]
) -> None:
    out = ol("sign-voucher", "0x1234", "1", "1", ok=False)
    assert "Invalid value for 'NODE': '0x1234' is not an address" in out


def test_an_ape_account_signs_and_sends_through_ape(
    anvil: str, env: dict[str, str], deployment: dict[str, Any]
) -> None:
    """A keyfile or hardware account holds no key in the clear: ApeSigner hands the SDK's
    simulated transaction to ape, which fills, signs and sends it (test account 0 here)."""
    from ape import accounts, networks

    from backend.protocol.cli_support import load_protocol
    from backend.sdk import OpenLedger
    from backend.sdk.signers import ApeSigner

    token = deployment["contracts"]["OpenToken"]
    stranger = Account.create().address
    with networks.parse_network_choice(NETWORK):
        ol = OpenLedger(load_protocol().as_web3(), ApeSigner(accounts.test_accounts[0]))
        ol.transfer(stranger, 3 * OPEN)
    assert balance_of(anvil, token, stranger) == 3 * OPEN
