"""The node is killed (SIGKILL) under load and restarted; afterwards every answered request's
voucher is redeemed exactly once, and no payer is charged for an unanswered request.

One real node process (``python -m inference_node serve``) on its own anvil chain, paid by six
client threads, each with its own payer, VoucherWallet and OpenAI client (one signs with a
session key; every third request streams). Under load the node is asked to redeem with mining
paused, and SIGKILLed once the redemption is recorded ``pending`` and its transaction sent, with
requests in flight. It restarts on the same data directory and port while that transaction is
still in the mempool (it must wait for it, not send the vouchers again); the transaction is
mined; the wallets keep going, though the ledger now knows lower vouchers than they signed.
A second redemption then reconciles the first from its event and pays the rest, once. Checked
against the ledger, the receipts logs in the content store and the chain.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port
from backend.protocol.deployments import DeploymentStore
from backend.protocol.inference_client import VoucherWallet, openai_client
from backend.protocol.receipts import read_usage_log
from backend.storage.local import DirectoryStore
from inference_node.payments import Ledger, receipts_tree
from tests.node.conftest import OPEN, PRICING, World, _build_world, funded_payer
from tests.node.node_process import NodeProcess, node_env
from tests.node.server_fixtures import make_checkpoint, register_served_model

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

log = logging.getLogger(__name__)

THREADS = 6  # client threads, one payer each
DEPOSIT = 50 * OPEN  # OPEN wei, each extra payer's deposit
MAX_TOKENS = (4, 6, 8)  # cycled per request
ANSWERED_BEFORE_KILL = 3  # per thread
ANSWERED_AFTER_RESTART = 2  # per thread
UINT256_MAX = 2**256 - 1


# ---------------------------------------------------------------- the world


@dataclass(frozen=True)
class Payer:
    address: str
    signing_key: bytes  # the payer's key, or a session key it authorized


@dataclass(frozen=True)
class CrashWorld:
    world: World
    payers: list[Payer]
    model_id: int
    store: DirectoryStore
    env: dict[str, str]  # the node's OPENLEDGER_NODE_* settings
    root: Path


def _fund_payer(world: World, deposit: int) -> Payer:
    """A fresh payer with ``deposit`` OPEN wei in its channel with the node."""
    account = funded_payer(world, deposit)
    return Payer(account.address, bytes(account.key))


@pytest.fixture(scope="module")
def crash_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashWorld]:
    root = tmp_path_factory.mktemp("crash")
    with Anvil(port=free_port()) as anvil:
        world = _build_world(Web3(Web3.HTTPProvider(anvil.url)))
        payers = [Payer(world.roles.payer, world.session_key)]  # the session key pays
        payers += [_fund_payer(world, DEPOSIT) for _ in range(THREADS - 1)]
        checkpoint = make_checkpoint(root / "checkpoint")
        store = DirectoryStore(root / "store")
        model_id = register_served_model(world, store, checkpoint)
        deployments = root / "deployments.json"
        DeploymentStore(deployments).save(world.protocol.deployment)
        env = node_env(anvil.url, deployments, world.roles.node, root, checkpoint.base, model_id)
        yield CrashWorld(world, payers, model_id, store, env, root)


# ---------------------------------------------------------------- the load


@dataclass(frozen=True)
class Outcome:
    """One request as its client saw it."""

    payer: str
    start: int  # which start of the node it was sent to (NodeProcess.starts)
    streamed: bool
    failure: str | None  # None: answered; "refused" (node down), "dropped" (killed mid-way)
    receipt_id: int | None = None
    request_hash: str | None = None
    price: int | None = None  # OPEN wei, actual
    quoted: int | None = None  # OPEN wei, price quoted up front (from max_tokens)


def _failure(exc: BaseException) -> str | None:
    """Says "refused" or "dropped" for a connection that failed or broke; None for anything else."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, httpx.ConnectError) for e in chain):
        return "refused"
    if any(isinstance(e, httpx.TransportError | openai.APIConnectionError) for e in chain):
        return "dropped"
    return None


@dataclass
class Client:
    """One payer's wallet and OpenAI client, sending chat completions one at a time."""

    payer: Payer
    node: NodeProcess
    node_address: str
    model_id: int
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)  # anything but a dead node
    busy: bool = False

    def __post_init__(self) -> None:
        self.wallet = VoucherWallet(
            self.payer.address, self.payer.signing_key, node=self.node_address
        )
        self.client = openai_client(
            f"{self.node.url}/v1",
            self.wallet,
            max_retries=0,
            timeout=httpx.Timeout(60.0, connect=2.0),
        )

    def answered(self, start: int | None = None) -> list[Outcome]:
        return [
            o for o in self.outcomes if o.failure is None and (start is None or o.start == start)
        ]

    def request(self, n: int) -> Outcome:
        streamed, max_tokens = n % 3 == 2, MAX_TOKENS[n % len(MAX_TOKENS)]
        kwargs: dict[str, Any] = {
            "model": str(self.model_id),
            "messages": [{"role": "user", "content": f"what is {n} plus {n % 7}?"}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        start = self.node.starts
        self.busy = True
        try:
            if streamed:
                chunks = list(
                    self.client.chat.completions.create(
                        **kwargs, stream=True, stream_options={"include_usage": True}
                    )
                )
                final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
                extension, prompt_tokens = final.model_extra["openledger"], chunks[-1].usage
            else:
                answer = self.client.chat.completions.create(**kwargs)
                extension, prompt_tokens = answer.model_extra["openledger"], answer.usage
        except Exception as exc:  # a dead node, or an error to report
            failure = _failure(exc)
            if failure is None:
                self.errors.append(exc)
                failure = f"error: {exc!r}"
            outcome = Outcome(self.payer.address, start, streamed, failure)
        else:
            outcome = Outcome(
                self.payer.address, start, streamed, None,
                receipt_id=int(extension["receipt_id"]),
                request_hash=extension["request_hash"],
                price=int(extension["price"]),
                quoted=PRICING.price(prompt_tokens.prompt_tokens, max_tokens),
            )  # fmt: skip
        finally:
            self.busy = False
        self.outcomes.append(outcome)
        return outcome

    def loop(self, stop: threading.Event) -> None:
        n = len(self.outcomes)
        while not stop.is_set():
            if self.request(n).failure is not None:
                time.sleep(0.5)  # the node is down: leave it the CPU to restart
            n += 1


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------- ledger and chain


def _ledger_rows(path: Path, sql: str) -> list[sqlite3.Row]:
    """Rows of the node's ledger, read-only (the node may be writing it)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _rpc(w3: Web3, method: str, *params: object) -> Any:
    answer = w3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer["result"]


# ---------------------------------------------------------------- the checks


@dataclass(frozen=True)
class _LedgerFacts:
    """The stopped node's ledger: receipts by request hash, redemptions by id."""

    receipts: dict[str, sqlite3.Row]  # "0x" request hash -> row
    redemptions: dict[int, sqlite3.Row]

    @classmethod
    def read(cls, path: Path) -> _LedgerFacts:
        receipts = {
            "0x" + r["request_hash"]: r for r in _ledger_rows(path, "SELECT * FROM receipts")
        }
        redemptions = {r["id"]: r for r in _ledger_rows(path, "SELECT * FROM redemptions")}
        return cls(receipts, redemptions)


def _check_answers_have_receipts(
    outcomes: list[Outcome], facts: _LedgerFacts, busy_at_kill: int
) -> list[sqlite3.Row]:
    """Every answered request has its receipt, with the id and price its client was told; the
    receipts without an answer (returned) are requests in flight at the kill, one per payer."""
    answered = {o.request_hash: o for o in outcomes if o.failure is None}
    assert len(answered) == sum(o.failure is None for o in outcomes)  # request hashes unique
    for request_hash, o in answered.items():
        row = facts.receipts[request_hash]
        assert (row["id"], int(row["price"]), row["payer"]) == (o.receipt_id, o.price, o.payer)
    unanswered = [r for h, r in facts.receipts.items() if h not in answered]
    dropped = Counter(o.payer for o in outcomes if o.failure == "dropped" and o.start == 1)
    per_payer = Counter(r["payer"] for r in unanswered)
    assert all(n <= min(1, dropped[p]) for p, n in per_payer.items()), (per_payer, dropped)
    assert len(unanswered) <= busy_at_kill
    return unanswered


def _check_usage_proofs(cw: CrashWorld, facts: _LedgerFacts) -> int:
    """Every receipt is in exactly one confirmed usage proof, whose log is in the store and
    whose Merkle root the chain holds; returns what the usage proofs paid in all."""
    payments = cw.world.payments.functions
    node_address = cw.world.roles.node
    proofs = int(payments.usageProofCount().call())
    assert proofs == len(facts.redemptions) == 2
    logged: Counter[bytes] = Counter()
    paid_total = 0
    for redemption in facts.redemptions.values():
        proof_log = read_usage_log(cw.store.get, redemption["receipts_cid"]).receipts
        root, node_of, count, _, amount = payments.usageRecord(redemption["proof_id"]).call()
        assert (bytes(root), node_of, count) == (
            receipts_tree(proof_log).root,
            node_address,
            len(proof_log),
        )
        assert bytes(root).hex() == redemption["receipts_root"]
        assert amount == int(redemption["paid"])
        logged.update(r.request_hash for r in proof_log)
        paid_total += amount
    assert set(logged.values()) == {1}
    assert {"0x" + h.hex() for h in logged} == set(facts.receipts)
    assert all(r["redemption_id"] in facts.redemptions for r in facts.receipts.values())
    return paid_total


def _check_payers(
    cw: CrashWorld,
    clients: list[Client],
    ledger_path: Path,
    facts: _LedgerFacts,
    unanswered: list[sqlite3.Row],
    deposits: dict[str, int],
) -> int:
    """Per payer: redeemed on-chain == the ledger's accepted == its highest voucher == its
    wallet's latest == its deposit's decrease; consumed == the prices of its answered requests
    (plus one in flight at the kill, if its receipt was written); returns the total redeemed."""
    payments = cw.world.payments.functions
    node_address = cw.world.roles.node
    with Ledger(ledger_path, node_address) as ledger:
        channels = {p.address: ledger.channel(p.address, cw.model_id) for p in cw.payers}
    redeemed_total = 0
    for client in clients:
        payer = client.payer.address
        channel = channels[payer]
        mine = [r for r in facts.receipts.values() if r["payer"] == payer]
        redeemed = payments.redeemed(payer, node_address, cw.model_id).call()
        assert redeemed == channel.accepted == max(int(r["voucher_cumulative"]) for r in mine)
        assert client.wallet.latest(node_address, cw.model_id).voucher.cumulative_amount == redeemed
        assert deposits[payer] - payments.channel(payer, cw.world.roles.node).call()[0] == redeemed
        # charged: the receipts' prices (answered, plus at most the one in flight at the kill)
        # and less than one request's unused quote as credit left on the channel
        assert channel.consumed == sum(int(r["price"]) for r in mine)
        answered_prices = sum(o.price for o in client.answered())
        assert channel.consumed - answered_prices == sum(
            int(r["price"]) for r in unanswered if r["payer"] == payer
        )
        assert 0 <= channel.accepted - channel.consumed < max(o.quoted for o in client.answered())
        redeemed_total += redeemed
    return redeemed_total


# ---------------------------------------------------------------- the test


def _redeem_in_background(url: str) -> threading.Thread:
    """POST /node/redeem from a thread (the node is killed before it answers)."""

    def post() -> None:
        with contextlib.suppress(httpx.TransportError):  # killed mid-way, as intended
            httpx.post(f"{url}/node/redeem", timeout=120)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_sigkill_under_load_then_restart_redeems_every_answer_exactly_once(
    crash_world: CrashWorld,
) -> None:
    cw = crash_world
    w3, world = cw.world.w3, cw.world
    node_address = world.roles.node
    payments = world.payments.functions
    deposits = {
        p.address: payments.channel(p.address, cw.world.roles.node).call()[0] for p in cw.payers
    }
    ledger_path = Path(cw.env["OPENLEDGER_NODE_DATA_DIR"]) / "ledger.sqlite"
    node = NodeProcess(cw.env, int(cw.env["OPENLEDGER_NODE_PORT"]), cw.root / "node.log")
    clients = [Client(p, node, node_address, cw.model_id) for p in cw.payers]
    stop = threading.Event()
    threads = [threading.Thread(target=c.loop, args=(stop,), daemon=True) for c in clients]
    try:
        # 1. serve under load; redeem with mining paused, and SIGKILL the node once the
        #    redemption is recorded and its transaction sent, while requests are in flight
        node.start().wait_ready()
        for thread in threads:
            thread.start()
        _wait(
            lambda: all(len(c.answered()) >= ANSWERED_BEFORE_KILL for c in clients),
            60,
            f"{ANSWERED_BEFORE_KILL} answers per client",
        )
        _rpc(w3, "evm_setAutomine", False)
        try:
            redeem = _redeem_in_background(node.url)
            sent = "SELECT * FROM redemptions WHERE tx_hash IS NOT NULL"
            _wait(lambda: bool(_ledger_rows(ledger_path, sent)), 30, "the redemption's tx")
            busy_at_kill = sum(c.busy for c in clients)
            node.kill()
            redeem.join(timeout=30)
            [cut] = _ledger_rows(ledger_path, "SELECT * FROM redemptions")
            known = {
                r["payer"]: int(r["accepted"])
                for r in _ledger_rows(ledger_path, "SELECT * FROM channels")
            }
            # wallets that signed more than the dead node's ledger knows (for requests in
            # flight at the kill): their next quotes build on a lower lastAccepted
            ahead = sum(
                c.wallet.latest(node_address, cw.model_id).voucher.cumulative_amount
                > known[c.payer.address]
                for c in clients
            )
            assert (cut["status"], cut["proof_id"]) == ("pending", None)
            assert w3.eth.get_transaction(cut["tx_hash"])["blockNumber"] is None  # mempool

            # 2. restart on the same data directory and port while the transaction is still
            #    in flight: the node must wait for it, not send the vouchers again
            restart_seconds = node.start().wait_ready()
            [waiting] = _ledger_rows(ledger_path, "SELECT * FROM redemptions")
            assert waiting["status"] == "pending"
            assert int(_rpc(w3, "eth_getTransactionCount", node_address, "pending"), 16) == (
                int(_rpc(w3, "eth_getTransactionCount", node_address, "latest"), 16) + 1
            )
        finally:
            _rpc(w3, "evm_setAutomine", True)  # mines the redemption
        # anvil mines the pending block once automine is back on, not necessarily before the
        # call returns: wait for it (an immediate lookup raced under a loaded machine)
        assert w3.eth.wait_for_transaction_receipt(cut["tx_hash"], timeout=30)["status"] == 1

        # 3. the clients keep going on the restarted node
        _wait(
            lambda: all(len(c.answered(start=2)) >= ANSWERED_AFTER_RESTART for c in clients),
            60,
            f"{ANSWERED_AFTER_RESTART} answers per client after the restart",
        )
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(c.errors for c in clients), [c.errors for c in clients]

        # 4. redeem again: the landed redemption is reconciled, the rest redeemed once
        second = httpx.post(f"{node.url}/node/redeem", timeout=60).json()
        assert second["redeemed"] is True and second["usage_proof_id"] == 2, second
        again = httpx.post(f"{node.url}/node/redeem", timeout=60).json()
        assert again == {"redeemed": False, "redemptions": []}  # nothing left: nothing paid twice
    finally:
        stop.set()
        exit_status = node.stop()
    assert exit_status in (0, -signal.SIGTERM), node.tail()  # a clean shutdown after SIGTERM

    # ---------------------------------------------------------------- what it left behind
    ledger_facts = _LedgerFacts.read(ledger_path)
    assert [(r["status"], r["proof_id"]) for r in ledger_facts.redemptions.values()] == [
        ("confirmed", 1),
        ("confirmed", 2),
    ]
    assert ledger_facts.redemptions[1]["tx_hash"] == cut["tx_hash"]  # reconciled, not resent
    outcomes = [o for c in clients for o in c.outcomes]
    unanswered = _check_answers_have_receipts(outcomes, ledger_facts, busy_at_kill)
    paid_total = _check_usage_proofs(cw, ledger_facts)
    redeemed_total = _check_payers(cw, clients, ledger_path, ledger_facts, unanswered, deposits)
    assert paid_total == redeemed_total  # nothing was redeemed twice

    log.info(  # the numbers of this run (pytest --log-cli-level=INFO shows them)
        "answered %d (%d streamed), refused while down %d, dropped at the kill %d, busy at the "
        "kill %d, wallets ahead of the ledger %d, receipts %d (%d unanswered), usage proofs of "
        "%d and %d receipts, redeemed %.4f OPEN, restart %.1f s",
        sum(o.failure is None for o in outcomes),
        sum(o.streamed and o.failure is None for o in outcomes),
        sum(o.failure == "refused" for o in outcomes),
        sum(o.failure == "dropped" and o.start == 1 for o in outcomes), busy_at_kill, ahead,
        len(ledger_facts.receipts), len(unanswered), ledger_facts.redemptions[1]["receipt_count"],
        ledger_facts.redemptions[2]["receipt_count"], redeemed_total / OPEN, restart_seconds,
    )  # fmt: skip
