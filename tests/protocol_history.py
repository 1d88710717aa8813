"""A scripted protocol history on a local anvil, for the indexer and API tests: every contract
emits its main events (Datanets, reviews, versions, a model, a staked node, a payment channel
with its deposit and a session key, a voucher redemption with its usage proof, attribution
epochs, a challenge, a claim, withdrawals)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from web3 import Web3

from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.devnet.anvil import TEST_MNEMONIC
from backend.protocol.eip712 import Domain, Voucher, sign_voucher
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.web3_protocol import Web3Protocol, deploy
from backend.storage.base import ContentStore
from backend.storage.unixfs import compute_cid

OPEN = 10**18
VERSION_TYPES = ("uint256", "address", "string")
CLAIM_TYPES = ("uint256", "address", "uint256")
Account.enable_unaudited_hdwallet_features()


def private_key(index: int) -> bytes:
    """The private key of anvil's test account ``index``."""
    return bytes(Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key)


@dataclass(frozen=True)
class Roles:
    governance: str
    treasury: str
    developer: str
    node: str
    payer: str
    alice: str  # contributor
    bob: str  # contributor
    curator: str
    challenger: str

    @classmethod
    def of(cls, w3: Web3) -> Roles:
        return cls(*w3.eth.accounts[:9])


@dataclass
class History:
    protocol: Web3Protocol
    roles: Roles
    metadata: DatanetMetadata
    metadata_cid: str
    files: dict[str, bytes] = field(default_factory=dict)  # CID -> contribution bytes
    contributions: list[tuple[int, str, str]] = field(default_factory=list)  # (id, who, cid)
    report: dict[str, Any] = field(default_factory=dict)  # epoch 1's attribution report
    report_cid: str = ""


def _put(store: ContentStore | None, data: bytes) -> str:
    return store.put(data) if store is not None else compute_cid(data)


def instruction_file(tag: str, lines: int = 3) -> bytes:
    rows = [
        {"prompt": f"{tag} question {i}?", "response": f"{tag} answer {i}."} for i in range(lines)
    ]
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


def contribute(h: History, who: str, tags: list[str], store: ContentStore | None = None) -> None:
    """``who`` contributes one instruction file per tag (one batch transaction)."""
    p = h.protocol
    files = [instruction_file(tag) for tag in tags]
    cids = [_put(store, f) for f in files]
    first = p["DatanetRegistry"].functions.contributionCount().call() + 1
    p.transact(
        who, p["DatanetRegistry"].functions.contributeBatch(1, cids, [len(f) for f in files])
    )
    for i, (cid, data) in enumerate(zip(cids, files, strict=True)):
        h.files[cid] = data
        h.contributions.append((first + i, who, cid))


def publish(h: History, store: ContentStore | None = None) -> bytes:
    """The curator publishes a version of every approved contribution; returns its root."""
    p = h.protocol
    registry = p["DatanetRegistry"].functions
    approved = [c for c in h.contributions if registry.contribution(c[0]).call()[5] == 2]
    tree = StandardMerkleTree.of(approved, VERSION_TYPES)
    manifest = json.dumps([list(c) for c in approved]).encode()
    p.transact(
        h.roles.curator, registry.publishVersion(1, tree.root, _put(store, manifest), len(approved))
    )
    return tree.root


def make_history(w3: Web3, store: ContentStore | None = None) -> History:
    """Deploys the protocol and runs the scripted history (content put in ``store`` if any)."""
    r = Roles.of(w3)
    p = deploy(w3, r.governance, treasury=r.treasury)
    token = p["OpenToken"].functions
    metadata = DatanetMetadata(
        name="Tide tables", description="Questions and answers about tides", license="CC-BY-4.0",
        format=DataFormat.INSTRUCTION, max_file_bytes=4_096,
    )  # fmt: skip
    h = History(p, r, metadata, _put(store, metadata.to_json_bytes()))
    for who in (r.developer, r.node, r.payer, r.alice, r.bob, r.curator, r.challenger):
        p.transact(r.treasury, token.transfer(who, 10_000 * OPEN))
    datanets = p["DatanetRegistry"]
    for who in (r.alice, r.bob):
        p.transact(who, token.approve(datanets.address, 2**256 - 1))

    # Datanet 1: five contributions, four approved, version 1; one more, version 2.
    p.transact(r.curator, datanets.functions.createDatanet(h.metadata_cid, OPEN, 2, r.treasury))
    p.transact(r.curator, datanets.functions.addCurator(1, r.governance))
    contribute(h, r.alice, ["tide-a", "tide-b", "tide-c"], store)
    contribute(h, r.bob, ["moon-a"], store)
    contribute(h, r.bob, ["bad"], store)
    p.transact(r.curator, datanets.functions.review(1, [1, 2, 4, 5], [True, True, True, False]))
    p.transact(r.governance, datanets.functions.review(1, [3], [True]))
    publish(h, store)
    contribute(h, r.alice, ["tide-d"], store)
    p.transact(r.curator, datanets.functions.review(1, [6], [True]))
    publish(h, store)

    # A model trained on version 1, served by a staked node that is also its attributor.
    nodes, models = p["NodeRegistry"], p["ModelRegistry"]
    p.transact(r.node, token.approve(nodes.address, 2**256 - 1))
    p.transact(r.node, nodes.functions.stake(2_000 * OPEN))
    p.transact(r.node, nodes.functions.setEndpoint("http://127.0.0.1:9000"))
    spec = (
        _put(store, b'{"name":"tide-lora"}'), "bafkbase", "bafkadapter", "bafkmanifest", 1, 1,
        (OPEN // 10, 0), (6_000, 2_000, 1_500, 500), r.node,
    )  # fmt: skip
    p.transact(r.developer, models.functions.registerModel(spec))
    p.transact(
        r.developer, models.functions.publishVersion(1, "bafkadapter2", "bafkmanifest2", 1, 2)
    )

    # The payer deposits into its channel with the node and lets a session key sign on it (up
    # to 50 OPEN), signs a voucher; the node redeems it with a usage proof.
    payments = p["InferencePayments"]
    p.transact(r.payer, token.approve(payments.address, 2**256 - 1))
    p.transact(r.payer, payments.functions.deposit(r.node, 100 * OPEN))
    p.transact(
        r.payer, payments.functions.authorizeSessionKey(r.node, r.challenger, 2**40, 50 * OPEN)
    )
    domain = Domain(w3.eth.chain_id, payments.address)
    deadline = w3.eth.get_block("latest")["timestamp"] + 10 * 86_400
    voucher = sign_voucher(private_key(4), domain, Voucher(r.payer, r.node, 1, 10 * OPEN, deadline))
    proof = (b"\x11" * 32, 3, _put(store, b"receipts"))
    p.transact(r.node, payments.functions.redeem([voucher.redemption_tuple()], proof))
    p.transact(r.payer, payments.functions.requestWithdrawal(r.node, 5 * OPEN))

    # Epoch 1: a report paying Alice and Bob out of the pool (2 OPEN from the redemption).
    leaves = [(0, r.alice, 3 * OPEN // 2), (1, r.bob, OPEN // 2)]
    tree = StandardMerkleTree.of(leaves, CLAIM_TYPES)
    h.report = {"modelId": 1, "leaves": [[i, a, str(amount)] for i, a, amount in leaves]}
    h.report_cid = _put(store, json.dumps(h.report).encode())
    rewards = p["AttributionRewards"]
    p.transact(r.node, rewards.functions.postEpoch(1, tree.root, 2 * OPEN, h.report_cid))
    p.transact(r.challenger, token.approve(rewards.address, 2**256 - 1))
    p.transact(r.node, nodes.functions.requestUnbonding(100 * OPEN))
    # Past the epoch's challenge window and the withdrawal's delay (1 day each), within the
    # withdrawal's window (it lapses a day after it unlocks).
    w3.provider.make_request("evm_increaseTime", [3 * 86_400 // 2])
    w3.provider.make_request("evm_mine", [])
    p.transact(r.payer, payments.functions.withdraw(r.node))
    claim = rewards.functions.claim(1, 0, r.alice, 3 * OPEN // 2, tree.proof(0))
    p.transact(r.alice, claim)
    challenge_epoch(h)
    return h


def challenge_epoch(h: History) -> None:
    """Funds the pool, posts epoch 2 and has it challenged and upheld (the node is slashed)."""
    p, r = h.protocol, h.roles
    rewards = p["AttributionRewards"]
    p.transact(r.developer, p["OpenToken"].functions.approve(rewards.address, 2**256 - 1))
    p.transact(r.developer, rewards.functions.fundPool(1, OPEN))
    tree = StandardMerkleTree.of([(0, r.bob, OPEN)], CLAIM_TYPES)
    p.transact(r.node, rewards.functions.postEpoch(1, tree.root, OPEN, "bafkreport2"))
    p.transact(r.challenger, rewards.functions.challenge(2, "bafkreason"))
    p.transact(r.governance, rewards.functions.resolveChallenge(2, True))
