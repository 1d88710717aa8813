"""Payments v2 through a real node process (``python -m inference_node serve``) on anvil: an
x402 client that signs with ethers in Node.js (no project code on its side) pays and its voucher
is redeemed on-chain; and the findings of the payments review that only show end to end — one
dead voucher does not block a redemption (1), a node on a new data dir does not take vouchers at
or below what the chain redeemed (7), redemptions are cut into batches that fit (8), and a fresh
wallet resumes a channel it paid before (9)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

from backend.devnet.anvil import Anvil, free_port
from backend.protocol.deployments import PROJECT_ROOT, DeploymentStore
from backend.protocol.inference_client import InflatedQuoteError, VoucherWallet, openai_client
from backend.storage.local import DirectoryStore
from tests.node.conftest import OPEN, World, _build_world, funded_payer
from tests.node.node_process import NodeProcess, node_env
from tests.node.server_fixtures import make_checkpoint, register_served_model
from tests.protocol_history import private_key

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

NODE_JS = shutil.which("node")
CLIENT = Path(__file__).with_name("x402_client.mjs")
BATCH = 2  # vouchers per redemption: small, so that a handful of channels needs batches


@dataclass
class ProcessWorld:
    world: World
    model_id: int
    node: NodeProcess
    rpc_url: str
    root: Path

    def redeem(self) -> dict:
        response = httpx.post(f"{self.node.url}/node/redeem", timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    def redeemed(self, payer: str) -> int:
        payments = self.world.payments.functions
        return int(payments.redeemed(payer, self.world.roles.node, self.model_id).call())

    def travel(self, seconds: int) -> None:
        self.world.w3.provider.make_request("evm_increaseTime", [seconds])
        self.world.w3.provider.make_request("evm_mine", [])


@pytest.fixture(scope="module")
def pw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessWorld]:
    root = tmp_path_factory.mktemp("payments-process")
    with Anvil(port=free_port()) as anvil:
        world = _build_world(Web3(Web3.HTTPProvider(anvil.url)))
        checkpoint = make_checkpoint(root / "checkpoint")
        model_id = register_served_model(world, DirectoryStore(root / "store"), checkpoint)
        deployments = root / "deployments.json"
        DeploymentStore(deployments).save(world.protocol.deployment)
        env = node_env(
            anvil.url, deployments, world.roles.node, root, checkpoint.base, model_id,
            SLOTS="2", REDEEM_BATCH=str(BATCH),
        )  # fmt: skip
        node = NodeProcess(env, int(env["OPENLEDGER_NODE_PORT"]), root / "node.log").start()
        node.wait_ready()
        try:
            yield ProcessWorld(world, model_id, node, anvil.url, root)
        finally:
            node.stop()


def _sdk_wallet(pw: ProcessWorld, payer: str, key: bytes) -> VoucherWallet:
    """A wallet whose vouchers outlive a revoked key's day of grace (the node allows a week)."""
    return VoucherWallet(payer, key, node=pw.world.roles.node, validity=3 * 86_400)


def _complete(pw: ProcessWorld, wallet: VoucherWallet, prompt: str = "the tide") -> None:
    ai = openai_client(f"{pw.node.url}/v1", wallet, max_retries=0)
    answer = ai.completions.create(model=str(pw.model_id), prompt=prompt, max_tokens=4)
    assert answer.choices[0].text is not None


@pytest.mark.skipif(NODE_JS is None, reason="needs Node.js (make setup installs it with npm)")
def test_an_ethers_x402_client_pays_and_its_voucher_is_redeemed(pw: ProcessWorld) -> None:
    payer = pw.world.roles.payer
    before = pw.redeemed(payer)
    out = subprocess.run(
        [NODE_JS or "node", str(CLIENT), pw.node.url, "0x" + private_key(4).hex(),
         str(pw.model_id), "high tide", pw.rpc_url],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + pw.node.tail()
    paid = json.loads(out.stdout.strip().splitlines()[-1])
    assert paid["signedWithV4"]  # eth_signTypedData_v4 took the quote's typed data as-is
    receipt = paid["receipt"]
    assert receipt["success"] and receipt["payer"] == payer
    assert receipt["network"] == f"eip155:{pw.world.w3.eth.chain_id}"
    assert int(receipt["amount"]) <= int(paid["price"])
    cumulative = int(paid["voucher"]["cumulativeAmount"])
    done = pw.redeem()
    assert done["redeemed"] and all(r["status"] == "confirmed" for r in done["redemptions"])
    assert pw.redeemed(payer) == cumulative > before


def test_a_fresh_wallet_resumes_its_channel_with_a_node_process(pw: ProcessWorld) -> None:
    """Finding 9: running the SDK snippet a second time (a new wallet) just works."""
    account = funded_payer(pw.world, 10 * OPEN)
    _complete(pw, _sdk_wallet(pw, account.address, bytes(account.key)))
    second = _sdk_wallet(pw, account.address, bytes(account.key))
    _complete(pw, second)
    assert second.spent > 0
    latest = second.latest(pw.world.roles.node, pw.model_id)
    assert latest is not None and latest.voucher.cumulative_amount > second.spent


def test_one_dead_voucher_does_not_block_the_others_and_batches_fit(pw: ProcessWorld) -> None:
    """Findings 1 and 8: a voucher whose session key stopped is left out, every other channel
    is paid, in batches of at most BATCH vouchers."""
    w, r = pw.world, pw.world.roles
    payers = [funded_payer(w, 5 * OPEN) for _ in range(4)]
    for account in payers:
        _complete(pw, _sdk_wallet(pw, account.address, bytes(account.key)))
    # A session key pays once, is revoked, and the node waits past the key's grace (a day).
    key = Account.create()
    keyed = funded_payer(w, 5 * OPEN)
    far = w.now() + 30 * 86_400
    authorize = w.payments.functions.authorizeSessionKey(r.node, key.address, far, OPEN)
    w.transact(keyed.address, authorize)
    _complete(pw, _sdk_wallet(pw, keyed.address, bytes(key.key)))
    w.transact(keyed.address, w.payments.functions.revokeSessionKey(r.node, key.address))
    start = w.w3.eth.block_number
    pw.travel(86_400 + 60)
    # The node's own loop may redeem first (the revoked key made its pair urgent): count on
    # the chain, not in this call's answer.
    pw.redeem()
    payments = w.payments
    proofs = payments.events.UsageProofRecorded().get_logs(from_block=start)
    assert len(proofs) >= 2
    for proof in proofs:
        receipt = w.w3.eth.get_transaction_receipt(proof["transactionHash"])
        redeemed = payments.events.VoucherRedeemed().process_receipt(receipt, errors=DISCARD)
        assert len(redeemed) <= BATCH
    assert all(pw.redeemed(a.address) > 0 for a in payers)
    assert pw.redeemed(keyed.address) == 0
    assert "session key" in pw.node.tail(200) and "wei lost" in pw.node.tail(200)


def test_a_node_on_a_new_data_dir_does_not_sell_below_the_chain(pw: ProcessWorld) -> None:
    """Finding 7: after a restart on an empty data dir the node prices from what the chain
    redeemed, not from its (empty) ledger: the payer's old voucher buys nothing."""
    account = funded_payer(pw.world, 10 * OPEN)
    wallet = _sdk_wallet(pw, account.address, bytes(account.key))
    _complete(pw, wallet)
    pw.redeem()
    redeemed = pw.redeemed(account.address)
    assert redeemed > 0
    pw.node.stop()
    pw.node.env["OPENLEDGER_NODE_DATA_DIR"] = str(pw.root / "node-new")
    pw.node.start().wait_ready()
    fresh = _sdk_wallet(pw, account.address, bytes(account.key))
    with pytest.raises(InflatedQuoteError):  # the node's floor is the chain: nothing to show
        _complete(pw, fresh)
    _complete(pw, wallet)  # the wallet that remembers its voucher signs above the floor
    latest = wallet.latest(pw.world.roles.node, pw.model_id)
    assert latest is not None and latest.voucher.cumulative_amount > redeemed
