"""Payments fixtures: one anvil per module with the protocol deployed, a Datanet version, a
priced model served by a staked node and a payer's deposit; every test runs in a snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.devnet.anvil import Anvil, free_port
from backend.protocol.web3_protocol import Web3Protocol, deploy
from backend.storage.local import DirectoryStore
from inference_node.payments import (
    Ledger,
    PaymentsChain,
    Pricing,
    Redeemer,
    RedeemPolicy,
    VerifyPolicy,
    VoucherVerifier,
    Web3Sender,
)
from tests.protocol_history import OPEN, History, Roles, contribute, private_key, publish

PRICING = Pricing(per_request=OPEN // 100, per_token=OPEN // 1_000)  # OPEN wei
DEPOSIT = 100 * OPEN  # into the payer's channel with the node
SESSION_ALLOWANCE = 50 * OPEN  # what the session key may draw from the channel
MODEL_ID = 1


@dataclass(frozen=True)
class World:
    w3: Web3
    protocol: Web3Protocol
    roles: Roles
    payer_key: bytes
    session_key: bytes  # authorized on the payer's channel with the node, far into the future

    @property
    def payments(self):
        return self.protocol["InferencePayments"]

    def transact(self, sender: str, call) -> dict:
        return self.protocol.transact(sender, call)

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])


def _build_world(w3: Web3) -> World:
    r = Roles.of(w3)
    p = deploy(w3, r.governance, treasury=r.treasury)
    token = p["OpenToken"].functions
    for who in (r.developer, r.node, r.payer, r.alice, r.bob, r.curator):
        p.transact(r.treasury, token.transfer(who, 10_000 * OPEN))
    datanets = p["DatanetRegistry"]
    for who in (r.alice, r.bob):
        p.transact(who, token.approve(datanets.address, 2**256 - 1))
    metadata = DatanetMetadata(
        name="Tides", description="Tide questions", license="CC-BY-4.0",
        format=DataFormat.INSTRUCTION, max_file_bytes=4_096,
    )  # fmt: skip
    h = History(p, r, metadata, "bafkmetadata")
    p.transact(r.curator, datanets.functions.createDatanet(h.metadata_cid, OPEN, 2, r.treasury))
    contribute(h, r.alice, ["tide-a", "tide-b"])
    contribute(h, r.bob, ["moon-a"])
    p.transact(r.curator, datanets.functions.review(1, [1, 2, 3], [True, True, True]))
    publish(h)

    nodes, models = p["NodeRegistry"], p["ModelRegistry"]
    p.transact(r.node, token.approve(nodes.address, 2**256 - 1))
    p.transact(r.node, nodes.functions.stake(2_000 * OPEN))
    spec = (
        "bafkmeta", "bafkbase", "bafkadapter", "bafkmanifest", 1, 1,
        (PRICING.per_request, PRICING.per_token), (6_000, 2_000, 1_500, 500), r.node,
    )  # fmt: skip
    p.transact(r.developer, models.functions.registerModel(spec))

    payments = p["InferencePayments"]
    session = Account.create()
    p.transact(r.payer, token.approve(payments.address, 2**256 - 1))
    p.transact(r.payer, payments.functions.deposit(r.node, DEPOSIT))
    p.transact(
        r.payer,
        payments.functions.authorizeSessionKey(r.node, session.address, 2**40, SESSION_ALLOWANCE),
    )
    return World(w3, p, r, private_key(4), bytes(session.key))


def funded_payer(world: World, deposit: int) -> LocalAccount:
    """A fresh payer (its key known here, its transactions sent through anvil impersonation)
    with ``deposit`` OPEN wei in its channel with the world's node."""
    account = Account.create()
    w3, p, r = world.w3, world.protocol, world.roles
    w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    w3.provider.make_request("anvil_impersonateAccount", [account.address])
    token, payments = p["OpenToken"].functions, world.payments
    p.transact(r.treasury, token.transfer(account.address, deposit))
    p.transact(account.address, token.approve(payments.address, 2**256 - 1))
    p.transact(account.address, payments.functions.deposit(r.node, deposit))
    return account


@pytest.fixture(scope="module")
def world_once() -> Iterator[World]:
    with Anvil(port=free_port()) as anvil:
        yield _build_world(Web3(Web3.HTTPProvider(anvil.url)))


@pytest.fixture
def world(world_once: World) -> Iterator[World]:
    """The world, reverted to its initial state after the test."""
    snapshot = world_once.w3.provider.make_request("evm_snapshot", [])["result"]
    yield world_once
    world_once.w3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture
def chain(world: World) -> PaymentsChain:
    p = world.protocol
    return PaymentsChain(world.w3, p["InferencePayments"], p["ModelRegistry"], world.roles.node)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path, world: World) -> Iterator[Ledger]:
    with Ledger(ledger_path, world.roles.node) as ledger:
        yield ledger


@pytest.fixture
def verifier(chain: PaymentsChain, ledger: Ledger) -> VoucherVerifier:
    return VoucherVerifier(chain, ledger, VerifyPolicy())


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


@pytest.fixture
def sender(world: World) -> Web3Sender:
    return Web3Sender(world.w3, world.payments, world.roles.node)


@pytest.fixture
def redeemer(
    chain: PaymentsChain, ledger: Ledger, store: DirectoryStore, sender: Web3Sender
) -> Redeemer:
    return Redeemer(chain, ledger, store, sender, RedeemPolicy(interval=600, threshold=OPEN))
