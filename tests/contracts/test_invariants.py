"""Stateful property tests of the deployed protocol: OPEN is conserved, nobody is paid more than
they were credited, epochs stay within their pools, and a node is paid in full for every voucher
it accepted, whatever the order of the operations and whatever the payer does afterwards.

Hypothesis state machines drive payment channels (deposits, withdrawal requests that unlock and
lapse, cancellations, withdrawals, session keys with allowances, revocations and signed
authorizations, governance's withdrawal delay, scheduled split changes), vouchers a node
accepts and redeems in batches mixed with vouchers that must be skipped and, in the protocol
machine, staking, attribution epochs (posting, challenges and their resolution, claims) and
Datanet contributions, while a Python model of the protocol predicts every outcome: each call
either does what the model says, with the events the model expects, or reverts with the error
the model expects. After each step the OPEN each contract holds must equal what the model says
it owes, and what the node accepted must still be backed; at the end of each example the nodes
redeem everything they hold and every balance and accounting entry on chain must equal the
model's.

The node accepts a voucher as ``inference_node.payments.verify`` does: signed by the payer or
by a session key of the channel live for at least ``KEY_MARGIN``, deadline at least
``DEADLINE_MARGIN`` ahead, and ``cumulative - redeemed`` of every pair of the channel covered by
the channel's balance less a withdrawal request still usable, and by the allowance left to the
key for the pairs it signed. Such a voucher must then be paid in full by any redemption until
its ``redeem_by``: its deadline, its key's ``validUntil`` (as revocations leave it), and the
unlock of any withdrawal requested after it was accepted (the node redeems before a withdrawal
it could not count on bites: the channel's delay is its time to do so). The payments machine
aims the payer's moves at the channels and keys behind what the node accepted.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from itertools import product
from random import Random
from typing import Any

import ape
import pytest
from ape import chain
from eth_account import Account as EthAccount
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from backend.protocol.deployments import ProtocolParams
from backend.protocol.eip712 import (
    SessionKeyAuthorization,
    Signature,
    SignedVoucher,
    Voucher,
    sign_session_key,
    sign_voucher,
)
from backend.protocol.merkle import StandardMerkleTree

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

OPEN = 10**18
PARAMS = ProtocolParams()  # as deployed by the conftest
BPS = 10_000
DAY = 86_400
WITHDRAWAL_WINDOW = DAY  # InferencePayments: an unlocked withdrawal lapses this long after
SPLIT_CHANGE_DELAY = DAY  # ModelRegistry: a split change takes effect this long after
MIN_DELAY, MAX_DELAY = 60, 30 * DAY  # bounds of the withdrawal delay
SPLITS = (
    (4_000, 2_000, 3_500, 500),
    (1_000, 3_333, 5_167, 500),
    (2_500, 2_000, 5_000, 500),
)  # dev, contributors, node, protocol; the models start with the first two
NO_SPLIT = ((0, 0, 0, 0), 0)  # ModelRegistry.pendingSplit of a model without a change
DATANET_BOND = OPEN
CLAIM_TYPES = ["uint256", "address", "uint256"]
POSTED, CHALLENGED, REJECTED, SWEPT = 1, 2, 3, 4  # IAttributionRewards.EpochStatus (SWEPT: Expired)
PENDING, APPROVED, DN_REJECTED, WITHDRAWN = 1, 2, 3, 4  # IDatanetRegistry.ContributionStatus
REVIEW_TIMEOUT = 30 * DAY  # DatanetRegistry: a pending contribution may be withdrawn after
# Slash amounts governance switches between: the deployed one, one above every stake (posting
# then needs more stake than the poster holds), and the minimum.
SLASH_AMOUNTS = (PARAMS.slash_amount, 10 * PARAMS.min_stake, OPEN)
UINT256_MAX = 2**256 - 1
UINT96_MAX = 2**96 - 1
FAR = 2**64  # "never" for a payer's own signature
SEED = 1_000 * OPEN  # each seeded channel's deposit and each pool's funds before the machine starts
# IInferencePayments.SkipReason (PAID: not skipped)
PAID, EXPIRED, INVALID_SIGNER, KEY_NOT_LIVE, NOT_ABOVE_REDEEMED = 0, 1, 2, 3, 4
# The node's acceptance policy (inference_node.payments.verify.VerifyPolicy).
DEADLINE_MARGIN = 3_600
MAX_DEADLINE = 7 * DAY
KEY_MARGIN = 3_600
# Session keys (they sign, never send) and a key no channel ever authorized.
SESSION_KEYS: tuple[LocalAccount, ...] = tuple(
    EthAccount.from_key(bytes([0x5A + i]) * 32) for i in range(3)
)
STRANGER: LocalAccount = EthAccount.from_key(bytes([0x77]) * 32)
# Vouchers a redemption must skip, each built to fail for one reason.
JUNK = ("expired", "stale", "stranger", "other_payer", "other_node", "garbage", "dead_key")

amounts = st.integers(min_value=1, max_value=300 * OPEN)
percents = st.integers(min_value=1, max_value=100)
# A payer's or a node's share of what it could take: mostly all of it, or most.
greedy_percents = st.sampled_from([100, 60, 95, 30, 1])
picks = st.integers(min_value=0, max_value=2**16)  # an index into whatever list is current
# An epoch's leaves: (claimant pick, weight of its share of the total).
leaf_lists = st.lists(st.tuples(picks, st.integers(0, 100)), min_size=1, max_size=5)
key_picks = st.integers(min_value=0, max_value=len(SESSION_KEYS) - 1)
key_lifetimes = st.sampled_from([10 * DAY, DAY, 3 * DAY, 2 * 3_600, 600, 0])
allowances = st.sampled_from([200 * OPEN, 20 * OPEN, 2_000 * OPEN, OPEN, 0])
# Vouchers offered to a node: (payer, node, model, signer, percent of the room, lifetime).
offer_lists = st.lists(
    st.tuples(
        picks,
        picks,
        picks,
        picks,
        greedy_percents,
        st.sampled_from([3 * DAY, DAY, 6 * 3_600, DEADLINE_MARGIN, MAX_DEADLINE]),
    ),
    min_size=1,
    max_size=3,
)


@dataclass(frozen=True)
class World:
    """The deployed protocol and who plays which part in it."""

    protocol: Any
    token: Any
    datanets: Any
    models: Any
    nodes: Any
    rewards: Any
    payments: Any
    governance: Any
    treasury: Any
    developer: Any  # develops both models; funds pools
    challenger: Any
    curator: Any  # owns the Datanet and is its treasury
    payers: tuple[Any, ...]
    operators: tuple[Any, ...]  # nodes; operators[i] is the attributor of model_ids[i]
    claimants: tuple[Any, ...]  # accounts attribution epochs pay
    contributors: tuple[Any, ...]
    model_ids: tuple[int, ...]
    datanet_id: int
    everyone: tuple[Any, ...]


@dataclass
class Epoch:
    """The model's view of one attribution epoch."""

    model: int  # index into World.model_ids
    poster: str
    rows: list[tuple[int, str, int]]
    tree: StandardMerkleTree
    total: int
    ends_at: int
    claim_ends_at: int  # from then on anyone may sweep the unclaimed rest back to the pool
    claimed: int = 0
    status: int = POSTED
    challenger: str = ""
    bond: int = 0
    claimed_leaves: set[int] = field(default_factory=set)


@dataclass
class Channel:
    """The model's view of ``IInferencePayments.Channel``."""

    balance: int = 0
    pending: int = 0
    unlock_at: int = 0
    delay: int = 0  # fixed when the channel opens (0: never opened)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.balance, self.pending, self.unlock_at, self.delay)

    def usable_request(self, now: int) -> int:
        """The pending withdrawal while it can still be paid (until WITHDRAWAL_WINDOW after its
        unlock), else 0: what the node cannot count on."""
        if self.pending and now <= self.unlock_at + WITHDRAWAL_WINDOW:
            return self.pending
        return 0


@dataclass
class SessionKey:
    """The model's view of ``IInferencePayments.SessionKey``."""

    valid_until: int = 0
    allowance: int = 0
    spent: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.valid_until, self.allowance, self.spent)


@dataclass
class Promise:
    """A voucher the node accepted (the latest of its pair) and has not been paid in full."""

    signed: SignedVoucher
    signer: str  # the payer or a session key
    accepted_at: int
    key_end: int  # validUntil of the signing key while it stayed live since (FAR: the payer)
    bite: int = FAR  # last second before a withdrawal requested after acceptance unlocks
    forfeited: bool = False  # the node redeemed a voucher it had not accepted on the channel

    @property
    def voucher(self) -> Voucher:
        return self.signed.voucher

    @property
    def channel(self) -> tuple[str, str]:
        return (self.voucher.payer, self.voucher.node)

    @property
    def redeem_by(self) -> int:
        """Until when the voucher must be paid in full."""
        return min(self.voucher.deadline, self.key_end, self.bite)

    def guaranteed(self, now: int) -> bool:
        return not self.forfeited and now <= self.redeem_by


@dataclass(frozen=True)
class Entry:
    """A voucher of a redemption batch."""

    signed: SignedVoucher
    signer: str  # who the contract recovers ("": nobody the channel knows)
    promise: Promise | None = None  # the node accepted it
    intended: int | None = None  # the skip reason a junk voucher is built for


KEY_ADDRESSES: tuple[str, ...] = tuple(k.address for k in SESSION_KEYS)


@pytest.fixture(scope="module", autouse=True)
def world(
    protocol,
    token,
    datanets,
    models,
    nodes,
    rewards,
    payments,
    governance,
    treasury,
    developer,
    node,
    second_node,
    payer,
    contributor,
    curator,
    challenger,
    other,
) -> World:
    """A published Datanet version, two models (attributors `node` and `second_node`, both
    staked) with funded pools, two payers with seeded channels ((payer, node), (payer,
    second_node), (other, node); (other, second_node) is left for the machine to open), and
    every approval the machine needs."""
    datanets.createDatanet("bafy-meta", DATANET_BOND, 1, curator, sender=curator)
    datanet_id = datanets.datanetCount()  # tx.return_value: the call replayed after the tx
    token.approve(datanets, UINT256_MAX, sender=contributor)
    token.approve(datanets, UINT256_MAX, sender=other)
    datanets.contribute(datanet_id, "bafy-seed", 1_024, sender=contributor)
    seed_id = datanets.contributionCount()
    datanets.review(datanet_id, [seed_id], [True], sender=curator)
    version_tree = StandardMerkleTree.of(
        [[seed_id, contributor.address, "bafy-seed"]], ["uint256", "address", "string"]
    )
    datanets.publishVersion(
        datanet_id,
        version_tree.root,
        "bafy-manifest",
        datanets.datanet(datanet_id).approvedCount,
        sender=curator,
    )
    version = datanets.datanet(datanet_id).versionCount
    model_ids = []
    for split, attributor in zip(SPLITS[:2], (node, second_node), strict=True):
        spec = (
            "bafy-m",
            "bafy-base",
            "bafy-a",
            "bafy-t",
            datanet_id,
            version,
            (1, 1),
            split,
            attributor,
        )
        models.registerModel(spec, sender=developer)
        model_ids.append(models.modelCount())
    for operator in (node, second_node):
        token.approve(nodes, UINT256_MAX, sender=operator)
        nodes.stake(3 * PARAMS.min_stake, sender=operator)  # active through some unbonding
    for account in (payer, other):
        token.approve(payments, UINT256_MAX, sender=account)
    for account, operator in ((payer, node), (payer, second_node), (other, node)):
        payments.deposit(operator, SEED, sender=account)
    token.approve(rewards, UINT256_MAX, sender=developer)
    for model_id in model_ids:
        rewards.fundPool(model_id, SEED, sender=developer)
    token.approve(rewards, UINT256_MAX, sender=challenger)
    return World(
        protocol=protocol,
        token=token,
        datanets=datanets,
        models=models,
        nodes=nodes,
        rewards=rewards,
        payments=payments,
        governance=governance,
        treasury=treasury,
        developer=developer,
        challenger=challenger,
        curator=curator,
        payers=(payer, other),
        operators=(node, second_node),
        claimants=(contributor, curator, developer, payer),
        contributors=(contributor, other),
        model_ids=tuple(model_ids),
        datanet_id=datanet_id,
        everyone=(
            governance,
            treasury,
            developer,
            node,
            payer,
            contributor,
            curator,
            challenger,
            other,
            second_node,
        ),
    )


def _event(tx: Any, event_type: Any) -> Any:
    (event_,) = tx.events.filter(event_type)
    return event_


def _channels(w: World) -> list[tuple[str, str]]:
    return [(p.address, o.address) for p, o in product(w.payers, w.operators)]


def _read_chain(w: World, epoch_ids: range) -> dict[str, Any]:
    """Every balance and accounting entry the machine follows, as the chain has them."""
    holders = (*w.everyone, w.payments, w.rewards, w.nodes, w.datanets)
    channels = _channels(w)
    return {
        "tokens": {a.address: w.token.balanceOf(a) for a in holders},
        "supply": w.token.totalSupply(),
        "channels": {c: tuple(w.payments.channel(*c)) for c in channels},
        "keys": {
            (*c, k): tuple(w.payments.sessionKey(*c, k))
            for c, k in product(channels, KEY_ADDRESSES)
        },
        "nonces": {p.address: w.payments.nonces(p) for p in w.payers},
        "withdrawal_delay": w.payments.withdrawalDelay(),
        "usage_proofs": w.payments.usageProofCount(),
        "scheduled_splits": [_pending_split(w.models.pendingSplit(m)) for m in w.model_ids],
        "earnings": {a: w.payments.earnings(a) for a in _earners(w)},
        "stakes": {o.address: tuple(w.nodes.nodeInfo(o))[:5] for o in w.operators},
        "slash_amount": w.rewards.slashAmount(),
        "pools": [tuple(w.rewards.pool(m)) for m in w.model_ids],
        "epoch_count": w.rewards.epochCount(),
        "epochs": [_epoch_view(w.rewards.epoch(k)) for k in epoch_ids],
        "rewards_withdrawable": {a: w.rewards.withdrawable(a) for a in _bond_holders(w)},
        "datanet_withdrawable": {a: w.datanets.withdrawable(a) for a in _datanet_payees(w)},
    }


def _pending_split(result: Any) -> tuple[tuple[int, ...], int]:
    split, effective_at = result
    return (tuple(split), effective_at)


def _epoch_view(e: Any) -> tuple[int, int, int, int]:
    return (e.total, e.claimed, e.status, e.challengeBond)


def _earners(w: World) -> tuple[str, ...]:
    return (*(o.address for o in w.operators), w.developer.address, w.treasury.address)


def _bond_holders(w: World) -> tuple[str, ...]:
    return (w.challenger.address, *(o.address for o in w.operators))


def _datanet_payees(w: World) -> tuple[str, ...]:
    return (*(c.address for c in w.contributors), w.curator.address)


def _shares(amount: int, split: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(node, developer, contributors, protocol) shares of `amount`, as InferencePayments
    splits it (the contributors take the rounding dust)."""
    developer_bps, _, node_bps, protocol_bps = split
    node_share = amount * node_bps // BPS
    protocol_share = amount * protocol_bps // BPS
    developer_share = amount * developer_bps // BPS
    contributors_share = amount - node_share - protocol_share - developer_share
    return node_share, developer_share, contributors_share, protocol_share


class PaymentsMachine(RuleBasedStateMachine):
    """The protocol and a Python model of it, driven by the same random operations: payment
    channels, session keys, vouchers and redemptions, split changes, governance's withdrawal
    delay and earnings.
    A payer's moves mostly aim at the channels where the node holds vouchers it was promised;
    the model follows the whole protocol (the subclass adds its other operations)."""

    def __init__(self, world: World, baseline: dict[str, Any]) -> None:
        super().__init__()
        self.w = w = world
        self.snapshot = chain.snapshot()  # every example starts from the fixture's state
        self.signers = {a.address: a for a in w.everyone}
        self.contracts = tuple(c.address for c in (w.payments, w.rewards, w.nodes, w.datanets))
        self.domain = w.protocol.domain
        # OPEN of every actor and contract, from the Transfer events of the machine's own
        # transactions (checked against balanceOf at the end of each example) ...
        self.held = dict(baseline["tokens"])
        # ... and what the model says each actor should hold.
        self.tokens = {a: self.held[a] for a in self.signers}
        self.supply = baseline["supply"]
        # InferencePayments
        self.channels = {c: Channel(*v) for c, v in baseline["channels"].items()}
        self.keys = {k: SessionKey(*v) for k, v in baseline["keys"].items()}
        self.nonces = dict(baseline["nonces"])
        self.delay = baseline["withdrawal_delay"]  # of channels opened from now on
        self.usage_proofs = baseline["usage_proofs"]
        self.earners = _earners(w)
        self.earnings = dict(baseline["earnings"])
        self.redeemed: dict[tuple[str, str, int], int] = {}
        self.promises: dict[tuple[str, str, int], Promise] = {}  # (payer, node, model id)
        # ModelRegistry: the split each model has and the change it has scheduled.
        self.splits = list(SPLITS[: len(w.model_ids)])
        self.scheduled = list(baseline["scheduled_splits"])
        # NodeRegistry
        stakes = baseline["stakes"]
        self.bonded = {a: s[0] for a, s in stakes.items()}
        self.unbonding = {a: s[1] for a, s in stakes.items()}
        self.unbond_at = {a: s[2] for a, s in stakes.items()}
        self.held_until = {a: s[3] for a, s in stakes.items()}  # an open challenge window
        self.disputes = {a: s[4] for a, s in stakes.items()}  # challenged, unresolved epochs
        self.slash_amount = baseline["slash_amount"]
        # AttributionRewards
        self.unallocated = [p[0] for p in baseline["pools"]]
        self.funded = [p[1] for p in baseline["pools"]]
        self.epochs: list[Epoch] = []
        self.first_epoch = baseline["epoch_count"] + 1
        self.bond_holders = _bond_holders(w)
        self.rewards_withdrawable = dict(baseline["rewards_withdrawable"])
        # DatanetRegistry
        self.pending_contributions: dict[int, str] = {}  # contribution id -> contributor
        self.created_at: dict[int, int] = {}  # contribution id -> registration time
        self.cid_holder: dict[str, tuple[int, int]] = {}  # CID -> (latest id, its status)
        self.dn_accounts = _datanet_payees(w)
        self.dn_withdrawable = dict(baseline["datanet_withdrawable"])
        self.cids = 0

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # a failed step already reports its own error
                self._redeem_everything()
                self.open_is_conserved()
                self._check_everything()
        finally:
            chain.restore(self.snapshot)

    # ------------------------------------------------------------ helpers

    def _now(self) -> int:
        """The timestamp of the next transaction (each block is one second after the last)."""
        return chain.pending_timestamp

    def _active(self, operator: str) -> bool:
        return self.bonded[operator] >= PARAMS.min_stake and self.bonded[operator] > 0

    def _paid_out(self, account: str, amount: int) -> None:
        """The model credits `amount` OPEN paid out to `account`."""
        self.tokens[account] += amount

    def _send(self, method: Any, *args: Any, sender: Any) -> Any:
        """Sends a transaction and follows the OPEN it moves."""
        tx = method(*args, sender=sender)
        for t in tx.events.filter(self.w.token.Transfer):
            self.held[t["from"]] = self.held.get(t["from"], 0) - t.value
            self.held[t.to] = self.held.get(t.to, 0) + t.value
        return tx

    def _pick(self, who: int, operator: int) -> tuple[Any, Any, tuple[str, str]]:
        payer = self.w.payers[who % len(self.w.payers)]
        node = self.w.operators[operator % len(self.w.operators)]
        return payer, node, (payer.address, node.address)

    def _stake(self, node: Any, amount: int) -> None:
        tx = self._send(self.w.nodes.stake, amount, sender=node)
        self.bonded[node.address] += amount
        self.tokens[node.address] -= amount
        assert _event(tx, self.w.nodes.Staked).bonded == self.bonded[node.address]

    def _target(
        self, who: int, operator: int, requested: bool = False
    ) -> tuple[Any, Any, tuple[str, str]]:
        """A channel for a payer's move: three times in four one where the node holds vouchers
        it must be paid for (the payer plays against them) and, when `requested`, that has a
        withdrawal pending; else any."""
        promised = {p.channel for p in self.promises.values() if not p.forfeited}
        if requested:
            pending = {c for c, ch in self.channels.items() if ch.pending}
            promised = (promised & pending) or pending
        if promised and who % 4:
            channel = sorted(promised)[operator % len(promised)]
            return self.signers[channel[0]], self.signers[channel[1]], channel
        return self._pick(who, operator)

    def _split_at(self, model: int, timestamp: int) -> tuple[int, ...]:
        """ModelRegistry.paymentTerms at `timestamp`: the scheduled split once in effect."""
        split, effective_at = self.scheduled[model]
        return split if effective_at and effective_at <= timestamp else self.splits[model]

    def _owed(self, promise: Promise) -> int:
        v = promise.voucher
        return max(0, v.cumulative_amount - self.redeemed.get((v.payer, v.node, v.model_id), 0))

    def _promises_of(self, channel: tuple[str, str]) -> list[Promise]:
        return [p for p in self.promises.values() if p.channel == channel]

    def _check_everything(self) -> None:
        """Every balance and accounting entry on chain equals the model's."""
        on_chain = _read_chain(self.w, range(self.first_epoch, self.first_epoch + len(self.epochs)))
        model = {
            "tokens": {a: self.held[a] for a in on_chain["tokens"]},
            "supply": self.supply,
            "channels": {c: ch.as_tuple() for c, ch in self.channels.items()},
            "keys": {k: key.as_tuple() for k, key in self.keys.items()},
            "nonces": self.nonces,
            "withdrawal_delay": self.delay,
            "usage_proofs": self.usage_proofs,
            "scheduled_splits": self.scheduled,
            "earnings": self.earnings,
            "stakes": {
                a: (
                    self.bonded[a],
                    self.unbonding[a],
                    self.unbond_at[a],
                    self.held_until[a],
                    self.disputes[a],
                )
                for a in self.bonded
            },
            "slash_amount": self.slash_amount,
            "pools": list(zip(self.unallocated, self.funded, strict=True)),
            "epoch_count": self.first_epoch - 1 + len(self.epochs),
            "epochs": [
                (e.total, e.claimed, e.status, e.bond if e.status == CHALLENGED else 0)
                for e in self.epochs
            ],
            "rewards_withdrawable": self.rewards_withdrawable,
            "datanet_withdrawable": self.dn_withdrawable,
        }
        assert on_chain == model
        for (payer, node, model_id), redeemed in self.redeemed.items():
            assert self.w.payments.redeemed(payer, node, model_id) == redeemed

    # ------------------------------------------------------------ invariants

    @invariant()
    def open_is_conserved(self) -> None:
        """Each contract holds exactly what its accounting owes, and every actor exactly what
        the model credited it: nobody withdraws or claims more than they were owed."""
        held = self.held
        in_epochs = sum(
            e.total - e.claimed + (e.bond if e.status == CHALLENGED else 0)
            for e in self.epochs
            if e.status in (POSTED, CHALLENGED)
        )
        payments, rewards, nodes, datanets = self.contracts
        balances = sum(ch.balance for ch in self.channels.values())
        assert held[payments] == balances + sum(self.earnings.values())
        assert held[rewards] == (
            sum(self.unallocated) + in_epochs + sum(self.rewards_withdrawable.values())
        )
        assert held[nodes] == sum(self.bonded.values()) + sum(self.unbonding.values())
        assert held[datanets] == (
            DATANET_BOND * len(self.pending_contributions) + sum(self.dn_withdrawable.values())
        )
        assert {a: held[a] for a in self.tokens} == self.tokens
        # No OPEN went anywhere else, nor was minted or burnt (from or to the zero address).
        assert set(held) == set(self.tokens) | set(self.contracts)

    @invariant()
    def accepted_vouchers_stay_backed(self) -> None:
        """Whatever the payer did since, every voucher the node accepted and must still be paid
        in full is covered now: by its channel's balance (all of that channel's such vouchers
        together; the model's balance is the chain's, as every event and the end of each
        example check), and, signed by a session key, by the key's allowance left for all the
        vouchers it signed, with the key live."""
        now = self._now()
        live = [p for p in self.promises.values() if p.guaranteed(now)]
        for channel in {p.channel for p in live}:
            owed = sum(self._owed(p) for p in live if p.channel == channel)
            balance = self.channels[channel].balance
            assert owed <= balance, f"{channel}: {owed} accepted, {balance} there"
        for signer in {(*p.channel, p.signer) for p in live if p.signer != p.voucher.payer}:
            key = self.keys[signer]
            owed = sum(self._owed(p) for p in live if (*p.channel, p.signer) == signer)
            assert key.valid_until >= now
            assert owed <= key.allowance - key.spent, f"{signer}: {owed} accepted, {key}"

    @invariant()
    def epochs_stay_within_their_pools(self) -> None:
        """claimed <= total for every epoch, and a pool's funds are either unallocated, in a
        live (posted or challenged) epoch or claimed: a rejected epoch returned its total, an
        expired one its unclaimed rest."""
        for i in range(len(self.w.model_ids)):
            mine = [e for e in self.epochs if e.model == i]
            live = [e for e in mine if e.status in (POSTED, CHALLENGED)]
            expired = [e for e in mine if e.status == SWEPT]
            assert all(0 <= e.claimed <= e.total for e in mine)
            assert not any(e.claimed for e in mine if e.status == REJECTED)
            allocated = sum(e.total for e in live) + sum(e.claimed for e in expired)
            assert self.unallocated[i] + allocated == self.funded[i]

    # ------------------------------------------------------------ time and governance

    @rule(seconds=st.sampled_from([3_600, 60, DAY, 7 * DAY]))
    def advance_time(self, seconds: int) -> None:
        chain.pending_timestamp += seconds

    @rule(delay=st.sampled_from([DAY, MIN_DELAY, 3_600, 3 * DAY, MIN_DELAY - 1, MAX_DELAY + 1]))
    def set_withdrawal_delay(self, delay: int) -> None:
        """Governance sets the delay of channels opened from now on; open channels keep theirs."""
        payments = self.w.payments
        if not MIN_DELAY <= delay <= MAX_DELAY:
            with ape.reverts(
                payments.WithdrawalDelayOutOfBounds, delay=delay, min=MIN_DELAY, max=MAX_DELAY
            ):
                payments.setWithdrawalDelay(delay, sender=self.w.governance)
            return
        tx = self._send(payments.setWithdrawalDelay, delay, sender=self.w.governance)
        assert _event(tx, payments.WithdrawalDelaySet).withdrawalDelay == delay
        self.delay = delay

    @rule(model=picks, choice=st.integers(0, len(SPLITS) - 1))
    def set_split(self, model: int, choice: int) -> None:
        """The developer schedules a split change: it takes effect SPLIT_CHANGE_DELAY later
        (replacing a change still scheduled); redemptions split by the split in effect."""
        w = self.w
        i = model % len(w.model_ids)
        split = SPLITS[choice]
        now = self._now()
        tx = self._send(w.models.setSplit, w.model_ids[i], split, sender=w.developer)
        scheduled = _event(tx, w.models.SplitScheduled)
        got = (scheduled.developer, scheduled.contributors, scheduled.node, scheduled.protocol)
        assert (got, scheduled.effectiveAt) == (split, now + SPLIT_CHANGE_DELAY)
        self.splits[i] = self._split_at(i, now)
        self.scheduled[i] = (split, now + SPLIT_CHANGE_DELAY)

    # ------------------------------------------------------------ payers

    @rule(who=picks, operator=picks, amount=amounts)
    def deposit(self, who: int, operator: int, amount: int) -> None:
        """Deposits into a channel (opening it with the current delay the first time); a
        deposit into another channel is no help to the nodes of the others."""
        payer, node, channel = self._target(who, operator)
        payments = self.w.payments
        ch = self.channels[channel]
        tx = self._send(payments.deposit, node, amount, sender=payer)
        opened = tx.events.filter(payments.ChannelOpened)
        if ch.delay == 0:
            ch.delay = self.delay
            assert [(e.payer, e.node, e.withdrawDelay) for e in opened] == [(*channel, ch.delay)]
        else:
            assert opened == []
        ch.balance += amount
        self.tokens[payer.address] -= amount
        deposited = _event(tx, payments.Deposited)
        assert (deposited.node, deposited.amount, deposited.balance) == (
            node.address,
            amount,
            ch.balance,
        )

    @rule(who=picks, operator=picks, percent=greedy_percents)
    def request_withdrawal(self, who: int, operator: int, percent: int) -> None:
        payer, node, channel = self._target(who, operator)
        payments = self.w.payments
        ch = self.channels[channel]
        if ch.balance == 0:
            with ape.reverts(
                payments.WithdrawalExceedsBalance,
                payer=payer.address,
                node=node.address,
                balance=0,
                amount=1,
            ):
                payments.requestWithdrawal(node, 1, sender=payer)
            return
        amount = max(1, ch.balance * percent // 100)
        now = self._now()
        tx = self._send(payments.requestWithdrawal, node, amount, sender=payer)
        requested = _event(tx, payments.WithdrawalRequested)
        assert (requested.amount, requested.unlockAt) == (amount, now + ch.delay)
        ch.pending, ch.unlock_at = amount, now + ch.delay
        # The node could not count on this request: it redeems what it accepted before the
        # request unlocks (the channel's delay is its time to do so).
        for promise in self._promises_of(channel):
            promise.bite = min(promise.bite, ch.unlock_at - 1)

    @rule(who=picks, operator=picks)
    def cancel_withdrawal(self, who: int, operator: int) -> None:
        payer, node, channel = self._target(who, operator, requested=True)
        payments = self.w.payments
        ch = self.channels[channel]
        if ch.pending == 0:
            with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
                payments.cancelWithdrawal(node, sender=payer)
            return
        tx = self._send(payments.cancelWithdrawal, node, sender=payer)
        assert _event(tx, payments.WithdrawalCancelled).node == node.address
        ch.pending = ch.unlock_at = 0

    @rule(who=picks, operator=picks, wait=st.sampled_from(["unlock", "no", "last", "lapsed"]))
    def withdraw_deposit(self, who: int, operator: int, wait: str) -> None:
        """Withdraws, first waiting (to the exact second) for the unlock, for the last second
        of the window, or for the first second after it, as `wait` says."""
        payer, node, channel = self._target(who, operator, requested=True)
        payments = self.w.payments
        ch = self.channels[channel]
        lapses_at = ch.unlock_at + WITHDRAWAL_WINDOW
        target = {"unlock": ch.unlock_at, "last": lapses_at, "lapsed": lapses_at + 1}.get(wait)
        if ch.pending and target and self._now() < target:
            chain.pending_timestamp = target
        now = self._now()
        if ch.pending == 0:
            with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
                payments.withdraw(node, sender=payer)
            return
        if now < ch.unlock_at:
            with ape.reverts(
                payments.WithdrawalLocked,
                payer=payer.address,
                node=node.address,
                unlockAt=ch.unlock_at,
            ):
                payments.withdraw(node, sender=payer)
            return
        if now > lapses_at:
            event("withdrawal lapsed")
            with ape.reverts(
                payments.WithdrawalLapsed,
                payer=payer.address,
                node=node.address,
                lapsedAt=lapses_at,
            ):
                payments.withdraw(node, sender=payer)
            return
        paid = min(ch.pending, ch.balance)  # redemptions may have spent some
        tx = self._send(payments.withdraw, node, sender=payer)
        withdrawn = _event(tx, payments.Withdrawn)
        assert (withdrawn.node, withdrawn.amount) == (node.address, paid)
        ch.balance -= paid
        ch.pending = ch.unlock_at = 0
        self._paid_out(payer.address, paid)

    def _authorization_error(
        self, key: SessionKey, expiry: int, allowance: int, now: int
    ) -> tuple[str, dict[str, int]] | None:
        """The error InferencePayments gives an authorization of `key`, if any."""
        if expiry <= now:
            return "SessionKeyExpiryInPast", {"expiry": expiry}
        if allowance > UINT96_MAX:
            return "SessionKeyAllowanceTooHigh", {"allowance": allowance}
        if key.valid_until >= now and (expiry < key.valid_until or allowance < key.allowance):
            # A live key may back vouchers the node accepted: it can only grow.
            return "SessionKeyReduction", {
                "validUntil": key.valid_until,
                "allowance": key.allowance,
            }
        return None

    @rule(
        who=picks,
        operator=picks,
        signer=key_picks,
        mode=st.sampled_from(["grow", "grow", "fresh", "too_high"]),
        lifetime=key_lifetimes,
        allowance=allowances,
        by_sig=st.sampled_from(["no", "no", "current", "stale"]),
    )
    def authorize_session_key(
        self,
        who: int,
        operator: int,
        signer: int,
        mode: str,
        lifetime: int,
        allowance: int,
        by_sig: str,
    ) -> None:
        """Authorizes (or extends) a session key of a channel, directly or by a signature the
        node submits: a "grow" keeps the key's expiry and allowance at least what they are; a
        "stale" signature uses a nonce a revocation (or an earlier authorization) used up."""
        payer, node, channel = self._target(who, operator)
        payments = self.w.payments
        session = KEY_ADDRESSES[signer]
        key = self.keys[(*channel, session)]
        now = self._now()
        if mode == "grow":
            expiry, allowance = max(key.valid_until, now) + lifetime, key.allowance + allowance
        else:
            expiry = now + lifetime
            allowance = UINT96_MAX + 1 if mode == "too_high" else allowance
        error = self._authorization_error(key, expiry, allowance, now)
        if by_sig == "no":
            call: tuple[Any, ...] = (payments.authorizeSessionKey, node, session, expiry, allowance)
            sender = payer
        else:
            nonce = self.nonces[payer.address]
            if by_sig == "stale":
                nonce = nonce - 1 if nonce else nonce + 1
                error = ("InvalidAuthorizationSignature", {"payer": payer.address})
            deadline = now + 3_600
            authorization = SessionKeyAuthorization(
                payer.address, node.address, session, expiry, allowance, nonce, deadline
            )
            sig = sign_session_key(payer.private_key, self.domain, authorization)
            call = (
                payments.authorizeSessionKeyWithSig,
                payer,
                node,
                session,
                expiry,
                allowance,
                deadline,
                sig.v,
                sig.r,
                sig.s,
            )
            sender = node  # anyone may submit it
        if error is not None:
            name, args = error
            event(f"authorization refused: {name}")
            with ape.reverts(getattr(payments, name), **args):
                call[0](*call[1:], sender=sender)
            return
        tx = self._send(*call, sender=sender)
        authorized = _event(tx, payments.SessionKeyAuthorized)
        assert (
            authorized.payer,
            authorized.node,
            authorized.signer,
            authorized.expiry,
            authorized.allowance,
        ) == (*channel, session, expiry, allowance)
        if by_sig != "no":
            self.nonces[payer.address] += 1
        live = key.valid_until >= now
        key.valid_until, key.allowance = expiry, allowance
        if not live:
            key.spent = 0  # a new key: what an expired one spent is forgotten
        for promise in self._promises_of(channel):
            if promise.signer == session and live and promise.key_end >= now:
                promise.key_end = expiry  # the key stayed live: its vouchers with it

    @rule(who=picks, operator=picks, signer=picks, wait=st.sampled_from(["past", "no", "last"]))
    def revoke_session_key(self, who: int, operator: int, signer: int, wait: str) -> None:
        """Revokes a key (mostly one that signed vouchers the node holds): it keeps its power
        for the channel's delay, then stops; the payer's nonce is used up. Then waits, as `wait`
        says, for the last second of the key's power or the first after it."""
        keyed = sorted({p.channel for p in self.promises.values() if p.signer in KEY_ADDRESSES})
        if keyed and who % 4:
            channel = keyed[operator % len(keyed)]
            payer, node = self.signers[channel[0]], self.signers[channel[1]]
        else:
            payer, node, channel = self._target(who, operator)
        payments = self.w.payments
        signing = sorted({p.signer for p in self._promises_of(channel)} & set(KEY_ADDRESSES))
        candidates = signing if signing and signer % 4 else KEY_ADDRESSES
        session = candidates[signer // 4 % len(candidates)]
        key = self.keys[(*channel, session)]
        now = self._now()
        tx = self._send(payments.revokeSessionKey, node, session, sender=payer)
        key.valid_until = min(key.valid_until, now + self.channels[channel].delay)
        revoked = _event(tx, payments.SessionKeyRevoked)
        assert (revoked.payer, revoked.node, revoked.signer, revoked.validUntil) == (
            *channel,
            session,
            key.valid_until,
        )
        self.nonces[payer.address] += 1
        for promise in self._promises_of(channel):
            if promise.signer == session:
                promise.key_end = min(promise.key_end, key.valid_until)
        target = {"last": key.valid_until, "past": key.valid_until + 1}.get(wait, 0)
        if self._now() < target:
            chain.pending_timestamp = target

    @initialize(
        lifetimes=st.tuples(key_lifetimes, key_lifetimes, key_lifetimes),
        allowances_=st.tuples(allowances, allowances, allowances),
        offers=offer_lists,
    )
    def open_keys_and_accept_vouchers(
        self,
        lifetimes: tuple[int, int, int],
        allowances_: tuple[int, int, int],
        offers: list[tuple[int, int, int, int, int, int]],
    ) -> None:
        """Every example starts with a session key on each seeded channel and vouchers the
        nodes accepted (whatever rules the example leaves out, redemptions meet promises)."""
        for (who, operator), lifetime, allowance in zip(
            ((0, 0), (0, 1), (1, 0)), lifetimes, allowances_, strict=True
        ):
            self.authorize_session_key(who, operator, 0, "fresh", lifetime, allowance, "no")
        self.accept_vouchers(offers)

    # ------------------------------------------------------------ nodes

    def _forget_dead_promises(self, now: int) -> None:
        """A voucher past its deadline can never be paid again: the node drops it."""
        for k in [k for k, p in self.promises.items() if p.voucher.deadline < now]:
            del self.promises[k]

    @rule(offers=offer_lists)
    def accept_vouchers(self, offers: list[tuple[int, int, int, int, int, int]]) -> None:
        """The node accepts vouchers as its verifier would (signer live for KEY_MARGIN, the
        deadline DEADLINE_MARGIN ahead or more, what every pair of the channel is owed covered
        by the balance less a usable withdrawal request and, for a key, by its allowance left),
        each for a percentage of the room left; off chain, nothing is sent. An offer is (payer,
        node, model, signer: the payer or a key of the channel, percent, lifetime)."""
        now = self._now()
        self._forget_dead_promises(now)
        for who, operator, model, signer, percent, lifetime in offers:
            payer, _, channel = self._pick(who, operator)
            model_id = self.w.model_ids[model % len(self.w.model_ids)]
            # The payer signs, or (half the time) a key the channel ever authorized, live or
            # not (the node checks).
            known = [k for k in SESSION_KEYS if self.keys[(*channel, k.address)].valid_until]
            signing = known[signer // 2 % len(known)] if known and signer % 2 else payer
            self._accept(channel, model_id, payer, signing, percent, now + lifetime, now)

    def _accept(
        self,
        channel: tuple[str, str],
        model_id: int,
        payer: Any,
        signing: Any,
        percent: int,
        deadline: int,
        now: int,
    ) -> None:
        """The node's verifier on one voucher of `signing` for `percent` of the room left."""
        ch = self.channels[channel]
        others = [p for p in self._promises_of(channel) if p.voucher.model_id != model_id]
        room = ch.balance - ch.usable_request(now) - sum(self._owed(p) for p in others)
        key_end = FAR
        by_key = signing.address != payer.address
        if by_key:
            key = self.keys[(*channel, signing.address)]
            if key.valid_until < now + KEY_MARGIN:
                event("node refuses a voucher: session key not live long enough")
                return
            drawn = sum(self._owed(p) for p in others if p.signer == signing.address)
            room = min(room, key.allowance - key.spent - drawn)
            key_end = key.valid_until
        current = self.promises.get((*channel, model_id))
        owed = self._owed(current) if current is not None else 0
        if room <= owed:
            event("node refuses a voucher: not covered")
            return
        due = owed + max(1, (room - owed) * percent // 100)
        redeemed = self.redeemed.get((*channel, model_id), 0)
        voucher = Voucher(*channel, model_id, redeemed + due, deadline)
        private_key = signing.key if by_key else payer.private_key
        signed = sign_voucher(private_key, self.domain, voucher)
        self.promises[(*channel, model_id)] = Promise(signed, signing.address, now, key_end)
        event("node accepts a voucher" + (" signed by a session key" if by_key else ""))

    def _junk(self, kind: str, who: int, model: int, node: Any, now: int) -> Entry:
        """A voucher for `node` that a redemption at `now` must skip, built for `kind`."""
        w = self.w
        payer = w.payers[who % len(w.payers)]
        model_id = w.model_ids[model % len(w.model_ids)]
        channel = (payer.address, node.address)
        redeemed = self.redeemed.get((*channel, model_id), 0)
        ahead = now + DAY

        def by(key: Any, voucher: Voucher) -> SignedVoucher:
            return sign_voucher(key, self.domain, voucher)

        fresh = Voucher(*channel, model_id, redeemed + OPEN, ahead)
        if kind == "expired":
            expired = Voucher(*channel, model_id, redeemed + OPEN, now - 1)
            return Entry(by(payer.private_key, expired), payer.address, intended=EXPIRED)
        if kind == "stale":
            stale = Voucher(*channel, model_id, redeemed, ahead)
            return Entry(by(payer.private_key, stale), payer.address, intended=NOT_ABOVE_REDEEMED)
        if kind == "other_payer":
            someone = w.payers[(who + 1) % len(w.payers)]
            return Entry(by(someone.private_key, fresh), someone.address, intended=INVALID_SIGNER)
        if kind == "other_node":  # signed for another node's channel: recovers to nobody
            elsewhere = next(o for o in w.operators if o.address != node.address)
            signed = by(payer.private_key, replace(fresh, node=elsewhere.address))
            return Entry(SignedVoucher(fresh, signed.signature), "", intended=INVALID_SIGNER)
        if kind == "garbage":
            r, s = keccak(text=f"r{now}{model}"), keccak(text=f"s{now}{who}")
            return Entry(SignedVoucher(fresh, Signature(27, r, s)), "", intended=INVALID_SIGNER)
        if kind == "dead_key":  # a key of this channel that expired or whose revocation bit
            keys = [(k, self.keys[(*channel, k.address)]) for k in SESSION_KEYS]
            dead = [k for k, state in keys if 0 < state.valid_until < now]
            if dead:
                event("redemption skips a voucher of a dead session key")
                return Entry(by(dead[0].key, fresh), dead[0].address, intended=KEY_NOT_LIVE)
            unknown = [k for k, state in keys if state.valid_until == 0]
            if unknown:
                return Entry(by(unknown[0].key, fresh), unknown[0].address, intended=INVALID_SIGNER)
        return Entry(by(STRANGER.key, fresh), STRANGER.address, intended=INVALID_SIGNER)

    def _skip_reason(self, node: str, entry: Entry, timestamp: int) -> int:
        """Why InferencePayments skips `entry` redeemed by `node` at `timestamp` (PAID: it
        does not), in the contract's order of checks."""
        v = entry.signed.voucher
        if v.deadline < timestamp:
            return EXPIRED
        if entry.signer != v.payer:
            key = self.keys.get((v.payer, node, entry.signer))
            if key is None or key.valid_until == 0:
                return INVALID_SIGNER
            if key.valid_until < timestamp:
                return KEY_NOT_LIVE
        if v.cumulative_amount <= self.redeemed.get((v.payer, node, v.model_id), 0):
            return NOT_ABOVE_REDEEMED
        return PAID

    @rule(
        operator=picks,
        chosen=st.lists(picks, min_size=1, max_size=4),
        junk=st.lists(st.tuples(st.sampled_from(JUNK), picks, picks), max_size=3),
        overdraw=st.none() | st.tuples(picks, picks),
        order=st.randoms(use_true_random=False),
    )
    def redeem(
        self,
        operator: int,
        chosen: list[int],
        junk: list[tuple[str, int, int]],
        overdraw: tuple[int, int] | None,
        order: Random,
    ) -> None:
        """The node redeems vouchers it accepted mixed with vouchers that must be skipped
        (expired, stale, signed by a stranger, by another payer, for another node, a garbage
        signature, by a dead session key), and maybe last a voucher it never accepted that asks
        for more than the channel holds. No voucher makes the batch revert: the valid ones are
        paid exactly what the model says (in full for every accepted voucher before its
        redeem_by), the others are skipped with their reason."""
        w = self.w
        node = w.operators[operator % len(w.operators)]
        now = self._now()
        mine = [p for p in self.promises.values() if p.voucher.node == node.address]
        picked = {c % len(mine): mine[c % len(mine)] for c in chosen} if mine else {}
        entries = [Entry(p.signed, p.signer, promise=p) for p in picked.values()]
        entries += [self._junk(kind, who, model, node, now) for kind, who, model in junk]
        order.shuffle(entries)
        if overdraw is not None:
            payer = w.payers[overdraw[0] % len(w.payers)]
            model_id = w.model_ids[overdraw[1] % len(w.model_ids)]
            channel = (payer.address, node.address)
            redeemed = self.redeemed.get((*channel, model_id), 0)
            cumulative = redeemed + self.channels[channel].balance + 1
            greedy = Voucher(*channel, model_id, cumulative, now + DAY)
            signed = sign_voucher(payer.private_key, self.domain, greedy)
            entries.append(Entry(signed, payer.address))
        self._redeem(node, entries, overdraw=overdraw is not None)

    def _redeem_everything(self) -> None:
        """At the end of an example each node (staking back up if it fell below the minimum)
        redeems every voucher it holds, with one voucher of each kind that must be skipped: the
        vouchers still before their redeem_by, whatever happened since they were accepted, are
        paid in full."""
        for node in self.w.operators:
            mine = [p for p in self.promises.values() if p.voucher.node == node.address]
            if not mine:
                continue
            if not self._active(node.address):
                self._stake(node, PARAMS.min_stake - self.bonded[node.address])
            now = self._now()
            entries = [Entry(p.signed, p.signer, promise=p) for p in mine]
            for i, kind in enumerate(JUNK):
                entries.insert(i % (len(entries) + 1), self._junk(kind, i, i, node, now))
            self._redeem(node, entries, overdraw=False)

    def _redeem(self, node: Any, entries: list[Entry], overdraw: bool) -> None:
        """Redeems `entries` as `node` (the last one asking for more than its channel holds if
        `overdraw`) and checks every voucher's outcome against the model."""
        w = self.w
        now = self._now()
        batch = [e.signed.redemption_tuple() for e in entries]
        proof = (b"\x01" * 32, len(batch), "bafy-receipts")
        if not batch:
            with ape.reverts(w.payments.EmptyRedemption):
                w.payments.redeem(batch, proof, sender=node)
            return
        if not self._active(node.address):
            event("redemption refused: node not active")
            with ape.reverts(w.payments.NodeNotActive, node=node.address):
                w.payments.redeem(batch, proof, sender=node)
            return
        tx = self._send(w.payments.redeem, batch, proof, sender=node)

        skipped, redeemed_events, runs = [], [], []  # runs: [model index, amount] paid in a row
        total = 0
        for index, entry in enumerate(entries):
            v = entry.signed.voucher
            pair = (v.payer, node.address, v.model_id)
            reason = self._skip_reason(node.address, entry, now)
            if entry.intended is not None:
                assert reason == entry.intended, (index, entry, reason)
            if entry.promise is not None and not entry.promise.guaranteed(now):
                event("accepted voucher redeemed after its redeem_by")
            if entry.promise is not None and entry.promise.guaranteed(now):
                assert reason == PAID, f"accepted voucher {v} skipped for {reason}"
            if reason != PAID:
                skipped.append((v.payer, v.model_id, index, reason))
                continue
            due = v.cumulative_amount - self.redeemed.get(pair, 0)
            ch = self.channels[(v.payer, node.address)]
            key = self.keys[(*pair[:2], entry.signer)] if entry.signer != v.payer else None
            left = key.allowance - key.spent if key is not None else ch.balance
            paid = min(due, ch.balance, left)
            if key is not None:
                key.spent += paid
            if entry.promise is not None and entry.promise.guaranteed(now):
                # The property: a voucher the node accepted is paid in full until redeem_by.
                assert paid == due, f"accepted voucher {v} paid {paid} of {due}"
                event("accepted voucher paid in full")
            ch.balance -= paid
            if paid:
                self.redeemed[pair] = self.redeemed.get(pair, 0) + paid
                total += paid
                model = w.model_ids.index(v.model_id)
                if runs and runs[-1][0] == model:
                    runs[-1][1] += paid
                else:
                    runs.append([model, paid])
            redeemed_events.append((v.payer, v.model_id, v.cumulative_amount, paid, due - paid))
        if skipped:
            event("redemption skips vouchers")
        got_skipped = [
            (e.payer, e.modelId, e.index, e.reason)
            for e in tx.events.filter(w.payments.VoucherSkipped)
        ]
        assert got_skipped == skipped
        assert all(e.node == node.address for e in tx.events.filter(w.payments.VoucherSkipped))
        got = [
            (e.payer, e.modelId, e.cumulativeAmount, e.paid, e.shortfall)
            for e in tx.events.filter(w.payments.VoucherRedeemed)
        ]
        assert got == redeemed_events

        expected_splits, expected_funding = [], []
        for model, amount in runs:
            split = self._split_at(model, now)
            node_share, developer_share, contributors_share, protocol_share = _shares(amount, split)
            expected_splits.append(
                (
                    w.model_ids[model],
                    amount,
                    node_share,
                    developer_share,
                    contributors_share,
                    protocol_share,
                )
            )
            self.earnings[node.address] += node_share
            self.earnings[w.treasury.address] += protocol_share
            self.earnings[w.developer.address] += developer_share
            if contributors_share:
                self.unallocated[model] += contributors_share
                self.funded[model] += contributors_share
                expected_funding.append(
                    (w.model_ids[model], w.payments.address, contributors_share)
                )
        got_splits = [
            (
                e.modelId,
                e.amount,
                e.nodeShare,
                e.developerShare,
                e.contributorsShare,
                e.protocolShare,
            )
            for e in tx.events.filter(w.payments.PaymentSplit)
        ]
        assert got_splits == expected_splits
        got_funding = [
            (e.modelId, e.funder, e.amount) for e in tx.events.filter(w.rewards.PoolFunded)
        ]
        assert got_funding == expected_funding
        self.usage_proofs += 1
        recorded = _event(tx, w.payments.UsageProofRecorded)
        assert (recorded.proofId, recorded.amount, recorded.receiptCount) == (
            self.usage_proofs,
            total,
            len(batch),
        )

        if overdraw:
            # The node took more than it accepted from this channel: its promises there may
            # now be short (and are still checked against the model, not the guarantee).
            for promise in self._promises_of((entries[-1].signed.voucher.payer, node.address)):
                promise.forfeited = True
        for k in [k for k, p in self.promises.items() if self._owed(p) == 0]:
            del self.promises[k]
        self._forget_dead_promises(now)

    @rule(who=picks)
    def withdraw_earnings(self, who: int) -> None:
        account = self.earners[who % len(self.earners)]
        signer = self.signers[account]
        amount = self.earnings[account]
        if amount == 0:
            with ape.reverts(self.w.payments.NoEarnings, account=account):
                self.w.payments.withdrawEarnings(sender=signer)
            return
        tx = self._send(self.w.payments.withdrawEarnings, sender=signer)
        assert _event(tx, self.w.payments.EarningsWithdrawn).amount == amount
        self.earnings[account] = 0
        self._paid_out(signer.address, amount)


class ProtocolMachine(PaymentsMachine):
    """The payments machine with the rest of the protocol: staking and unbonding (nodes may
    stop being active), attribution epochs (posting, challenges and their resolution, claims)
    and Datanet contributions."""

    # ------------------------------------------------------------ staking

    @rule(operator=picks, amount=st.integers(min_value=1, max_value=2 * PARAMS.min_stake))
    def stake(self, operator: int, amount: int) -> None:
        self._stake(self.w.operators[operator % len(self.w.operators)], amount)

    @rule(operator=picks, percent=percents)
    def request_unbonding(self, operator: int, percent: int) -> None:
        node = self.w.operators[operator % len(self.w.operators)]
        bonded = self.bonded[node.address]
        if bonded == 0:
            with ape.reverts(
                self.w.nodes.UnbondExceedsStake, node=node.address, bonded=0, amount=1
            ):
                self.w.nodes.requestUnbonding(1, sender=node)
            return
        amount = max(1, bonded * percent // 100)
        now = self._now()
        tx = self._send(self.w.nodes.requestUnbonding, amount, sender=node)
        assert _event(tx, self.w.nodes.UnbondingRequested).unlockAt == now + PARAMS.unbonding_delay
        self.bonded[node.address] -= amount
        self.unbonding[node.address] += amount
        self.unbond_at[node.address] = now + PARAMS.unbonding_delay

    @rule(operator=picks, wait=st.booleans())
    def withdraw_unbonded(self, operator: int, wait: bool) -> None:
        """Withdraws unbonded stake, first waiting (to the exact second) for it if `wait`."""
        node = self.w.operators[operator % len(self.w.operators)]
        amount = self.unbonding[node.address]
        if wait and amount:
            # to the unlock, and past any open challenge window of the node's epochs
            free_at = max(self.unbond_at[node.address], self.held_until[node.address])
            if self._now() < free_at:
                chain.pending_timestamp = free_at
        if amount == 0:
            with ape.reverts(self.w.nodes.NothingUnbonding, node=node.address):
                self.w.nodes.withdrawUnbonded(sender=node)
            return
        if self._now() < self.unbond_at[node.address]:
            with ape.reverts(self.w.nodes.UnbondingLocked, node=node.address):
                self.w.nodes.withdrawUnbonded(sender=node)
            return
        held_until, disputes = self.held_until[node.address], self.disputes[node.address]
        if self._now() < held_until or disputes:
            # an epoch of this node can still be challenged, or is: its stake stays slashable
            event("unbonded stake held: " + ("dispute open" if disputes else "window open"))
            with ape.reverts(
                self.w.nodes.StakeHeld,
                node=node.address,
                heldUntil=held_until,
                openDisputes=disputes,
            ):
                self.w.nodes.withdrawUnbonded(sender=node)
            return
        tx = self._send(self.w.nodes.withdrawUnbonded, sender=node)
        assert _event(tx, self.w.nodes.Unbonded).amount == amount
        self.unbonding[node.address] = 0
        self.unbond_at[node.address] = 0
        self._paid_out(node.address, amount)

    # ------------------------------------------------------------ attribution

    @rule(model=picks, amount=amounts)
    def fund_pool(self, model: int, amount: int) -> None:
        i = model % len(self.w.model_ids)
        self._send(self.w.rewards.fundPool, self.w.model_ids[i], amount, sender=self.w.developer)
        self.unallocated[i] += amount
        self.funded[i] += amount
        self.tokens[self.w.developer.address] -= amount

    @rule(
        model=picks,
        percent=percents,
        leaves=leaf_lists,
    )
    def post_epoch(self, model: int, percent: int, leaves: list[tuple[int, int]]) -> None:
        w = self.w
        i = model % len(w.model_ids)
        poster = w.operators[i]
        unallocated = self.unallocated[i]
        if not self._active(poster.address):
            with ape.reverts(w.rewards.AttributorNotStaked, attributor=poster.address):
                w.rewards.postEpoch(w.model_ids[i], b"\x01" * 32, 1, "bafy", sender=poster)
            return
        if unallocated == 0:
            with ape.reverts(w.rewards.EpochTotalExceedsPool, total=1, unallocated=0):
                w.rewards.postEpoch(w.model_ids[i], b"\x01" * 32, 1, "bafy", sender=poster)
            return
        stake = self.bonded[poster.address] + self.unbonding[poster.address]
        if stake < self.slash_amount:
            event("post refused: stake below the slash amount")
            with ape.reverts(
                w.rewards.PosterStakeBelowSlashAmount,
                poster=poster.address,
                stake=stake,
                slashAmount=self.slash_amount,
            ):
                w.rewards.postEpoch(w.model_ids[i], b"\x01" * 32, 1, "bafy", sender=poster)
            return
        total = max(1, unallocated * percent // 100)
        weights = [weight for _, weight in leaves]
        amounts_ = [total * weight // (sum(weights) or 1) for weight in weights]
        amounts_[0] += total - sum(amounts_)  # the rows sum to the total exactly
        rows = [
            (index, w.claimants[who % len(w.claimants)].address, amount)
            for index, ((who, _), amount) in enumerate(zip(leaves, amounts_, strict=True))
        ]
        tree = StandardMerkleTree.of(rows, CLAIM_TYPES)
        now = self._now()
        tx = self._send(
            w.rewards.postEpoch, w.model_ids[i], tree.root, total, "bafy", sender=poster
        )
        posted = _event(tx, w.rewards.EpochPosted)
        assert posted.epochId == self.first_epoch + len(self.epochs)
        assert (posted.total, posted.challengeEndsAt) == (total, now + PARAMS.challenge_window)
        self.unallocated[i] -= total
        ends_at = posted.challengeEndsAt
        self.held_until[poster.address] = max(self.held_until[poster.address], ends_at)
        self.epochs.append(
            Epoch(i, poster.address, rows, tree, total, ends_at, ends_at + PARAMS.claim_period)
        )

    @initialize(
        percents=st.tuples(percents, percents),
        leaves=st.tuples(leaf_lists, leaf_lists),
    )
    def post_first_epochs(self, percents: tuple[int, int], leaves: tuple[Any, Any]) -> None:
        """Every example starts with an epoch per model, so that claims and challenges run."""
        for model in range(len(self.w.model_ids)):
            self.post_epoch(model, percents[model], leaves[model])

    @precondition(lambda self: self.epochs)
    @rule(epoch=picks, leaf=picks, relayer=picks, wait=st.booleans())
    def claim(self, epoch: int, leaf: int, relayer: int, wait: bool) -> None:
        """Claims a leaf, first waiting (to the exact second) for the window to close if `wait`."""
        w = self.w
        k = epoch % len(self.epochs)
        e, epoch_id = self.epochs[k], self.first_epoch + k
        if wait and self._now() < e.ends_at:
            chain.pending_timestamp = e.ends_at
        index = leaf % len(e.rows)
        _, account, amount = e.rows[index]
        sender = w.everyone[relayer % len(w.everyone)]
        args = (epoch_id, index, account, amount, e.tree.proof(index))
        if e.status != POSTED:
            with ape.reverts(w.rewards.WrongEpochStatus, epochId=epoch_id, status=e.status):
                w.rewards.claim(*args, sender=sender)
            return
        if self._now() < e.ends_at:
            with ape.reverts(
                w.rewards.ChallengeWindowOpen, epochId=epoch_id, challengeEndsAt=e.ends_at
            ):
                w.rewards.claim(*args, sender=sender)
            return
        if index in e.claimed_leaves:
            with ape.reverts(w.rewards.AlreadyClaimed, epochId=epoch_id, index=index):
                w.rewards.claim(*args, sender=sender)
            return
        tx = self._send(w.rewards.claim, *args, sender=sender)
        assert tx.events.filter(w.rewards.Claimed) == [
            w.rewards.Claimed(epoch_id, index, account, amount)
        ]
        e.claimed += amount
        e.claimed_leaves.add(index)
        self._paid_out(account, amount)

    @precondition(lambda self: self.epochs)
    @rule(epoch=picks)
    def challenge(self, epoch: int) -> None:
        w = self.w
        k = epoch % len(self.epochs)
        e, epoch_id = self.epochs[k], self.first_epoch + k
        if e.status != POSTED:
            with ape.reverts(w.rewards.WrongEpochStatus, epochId=epoch_id, status=e.status):
                w.rewards.challenge(epoch_id, "bafy-reason", sender=w.challenger)
            return
        if self._now() >= e.ends_at:
            with ape.reverts(
                w.rewards.ChallengeWindowClosed, epochId=epoch_id, challengeEndsAt=e.ends_at
            ):
                w.rewards.challenge(epoch_id, "bafy-reason", sender=w.challenger)
            return
        self._send(w.rewards.challenge, epoch_id, "bafy-reason", sender=w.challenger)
        e.status, e.challenger, e.bond = CHALLENGED, w.challenger.address, PARAMS.challenge_bond
        self.disputes[e.poster] += 1
        self.tokens[w.challenger.address] -= PARAMS.challenge_bond

    @precondition(lambda self: any(e.status == CHALLENGED for e in self.epochs))
    @rule(epoch=picks, upheld=st.booleans())
    def resolve_challenge(self, epoch: int, upheld: bool) -> None:
        w = self.w
        challenged = [k for k, e in enumerate(self.epochs) if e.status == CHALLENGED]
        k = challenged[epoch % len(challenged)]
        e, epoch_id = self.epochs[k], self.first_epoch + k
        tx = self._send(w.rewards.resolveChallenge, epoch_id, upheld, sender=w.governance)
        slashed = 0
        self.disputes[e.poster] -= 1
        if upheld:
            from_bonded = min(self.slash_amount, self.bonded[e.poster])
            from_unbonding = min(self.slash_amount - from_bonded, self.unbonding[e.poster])
            self.bonded[e.poster] -= from_bonded
            self.unbonding[e.poster] -= from_unbonding
            slashed = from_bonded + from_unbonding
            e.status = REJECTED
            self.unallocated[e.model] += e.total
            self.rewards_withdrawable[e.challenger] += e.bond + slashed
        else:
            e.status = POSTED
            self.rewards_withdrawable[e.poster] += e.bond
        e.bond = 0
        assert tx.events.filter(w.rewards.ChallengeResolved) == [
            w.rewards.ChallengeResolved(epoch_id, upheld, slashed)
        ]

    @precondition(lambda self: self.epochs)
    @rule(epoch=picks, wait=st.booleans())
    def sweep_expired(self, epoch: int, wait: bool) -> None:
        """Sweeps an epoch's unclaimed rest, first waiting (to the exact second) for its claim
        period to end if `wait`."""
        w = self.w
        k = epoch % len(self.epochs)
        e, epoch_id = self.epochs[k], self.first_epoch + k
        if wait and self._now() < e.claim_ends_at:
            chain.pending_timestamp = e.claim_ends_at
        sweeper = w.everyone[epoch % len(w.everyone)]
        if e.status != POSTED:
            with ape.reverts(w.rewards.WrongEpochStatus, epochId=epoch_id, status=e.status):
                w.rewards.sweepExpired(epoch_id, sender=sweeper)
            return
        if self._now() < e.claim_ends_at:
            with ape.reverts(
                w.rewards.ClaimPeriodOpen, epochId=epoch_id, claimEndsAt=e.claim_ends_at
            ):
                w.rewards.sweepExpired(epoch_id, sender=sweeper)
            return
        tx = self._send(w.rewards.sweepExpired, epoch_id, sender=sweeper)
        rest = e.total - e.claimed
        assert tx.events.filter(w.rewards.EpochExpired) == [
            w.rewards.EpochExpired(epoch_id, w.model_ids[e.model], rest)
        ]
        e.status = SWEPT
        event("epoch swept" + (" after claims" if e.claimed else ""))
        self.unallocated[e.model] += rest
        self._forget_dead_promises(self._now())

    @rule(choice=st.integers(0, len(SLASH_AMOUNTS) - 1))
    def set_slash_amount(self, choice: int) -> None:
        """Governance changes the slash amount; above a poster's stake, it cannot post."""
        self._send(self.w.rewards.setSlashAmount, SLASH_AMOUNTS[choice], sender=self.w.governance)
        self.slash_amount = SLASH_AMOUNTS[choice]

    @rule(who=picks)
    def withdraw_rewards(self, who: int) -> None:
        account = self.bond_holders[who % len(self.bond_holders)]
        signer = self.signers[account]
        amount = self.rewards_withdrawable[account]
        if amount == 0:
            with ape.reverts(self.w.rewards.NothingToWithdraw, account=account):
                self.w.rewards.withdraw(sender=signer)
            return
        tx = self._send(self.w.rewards.withdraw, sender=signer)
        assert _event(tx, self.w.rewards.Withdrawn).amount == amount
        self.rewards_withdrawable[account] = 0
        self._paid_out(signer.address, amount)

    # ------------------------------------------------------------ Datanet

    @rule(who=picks, reuse=st.sampled_from(["new", "new", "released", "held"]))
    def contribute(self, who: int, reuse: str) -> None:
        """Contributes a new CID, or one registered before: a rejected or withdrawn one is
        free again (whoever squatted it), a pending or approved one is not."""
        contributor = self.w.contributors[who % len(self.w.contributors)]
        free = sorted(c for c, (_, st_) in self.cid_holder.items() if st_ in (3, 4))
        held = sorted(c for c, (_, st_) in self.cid_holder.items() if st_ in (1, 2))
        if reuse == "held" and held:
            cid = held[who % len(held)]
            with ape.reverts(
                self.w.datanets.DuplicateContribution,
                datanetId=self.w.datanet_id,
                cid=cid,
                contributionId=self.cid_holder[cid][0],
            ):
                self.w.datanets.contribute(self.w.datanet_id, cid, 1, sender=contributor)
            return
        if reuse == "released" and free:
            cid = free[who % len(free)]
            event("a rejected or withdrawn CID contributed again")
        else:
            self.cids += 1
            cid = f"bafy-inv-{self.cids}"
        now = self._now()
        tx = self._send(self.w.datanets.contribute, self.w.datanet_id, cid, 1, sender=contributor)
        contributed = _event(tx, self.w.datanets.Contributed)
        assert contributed.bond == DATANET_BOND
        contribution_id = contributed.contributionId
        assert self.w.datanets.contributionIdOf(self.w.datanet_id, cid) == contribution_id
        self.pending_contributions[contribution_id] = contributor.address
        self.created_at[contribution_id] = now
        self.cid_holder[cid] = (contribution_id, PENDING)
        self.tokens[contributor.address] -= DATANET_BOND

    def _set_status(self, contribution_id: int, status: int) -> None:
        for cid, (held_by, _) in self.cid_holder.items():
            if held_by == contribution_id:
                self.cid_holder[cid] = (held_by, status)

    @precondition(lambda self: self.pending_contributions)
    @rule(pick=picks, wait=st.booleans(), impostor=st.booleans())
    def withdraw_contribution(self, pick: int, wait: bool, impostor: bool) -> None:
        """A contributor takes back a contribution nobody reviewed (first waiting, to the exact
        second, for the review timeout if `wait`); or another contributor tries to."""
        w = self.w
        ids = sorted(self.pending_contributions)
        contribution_id = ids[pick % len(ids)]
        owner = self.pending_contributions[contribution_id]
        deadline = self.created_at[contribution_id] + REVIEW_TIMEOUT
        if wait and self._now() < deadline:
            chain.pending_timestamp = deadline
        if impostor:
            sender = next(c for c in w.contributors if c.address != owner)
            with ape.reverts(
                w.datanets.NotContributor, contributionId=contribution_id, caller=sender.address
            ):
                w.datanets.withdrawContribution(contribution_id, sender=sender)
            return
        if self._now() < deadline:
            with ape.reverts(
                w.datanets.ReviewTimeoutNotReached,
                contributionId=contribution_id,
                reviewDeadline=deadline,
            ):
                w.datanets.withdrawContribution(contribution_id, sender=self.signers[owner])
            return
        self._send(w.datanets.withdrawContribution, contribution_id, sender=self.signers[owner])
        event("unreviewed contribution withdrawn")
        del self.pending_contributions[contribution_id]
        self.dn_withdrawable[owner] += DATANET_BOND
        self._set_status(contribution_id, WITHDRAWN)
        self._forget_dead_promises(self._now())

    @precondition(lambda self: self.pending_contributions)
    @rule(approvals=st.lists(st.booleans(), min_size=1, max_size=4))
    def review(self, approvals: list[bool]) -> None:
        ids = sorted(self.pending_contributions)[: len(approvals)]
        approve = approvals[: len(ids)]
        self._send(self.w.datanets.review, self.w.datanet_id, ids, approve, sender=self.w.curator)
        for contribution_id, approved in zip(ids, approve, strict=True):
            contributor = self.pending_contributions.pop(contribution_id)
            credited = contributor if approved else self.w.curator.address  # curator: treasury
            self.dn_withdrawable[credited] += DATANET_BOND
            self._set_status(contribution_id, APPROVED if approved else DN_REJECTED)

    @rule(who=picks)
    def withdraw_datanet(self, who: int) -> None:
        account = self.dn_accounts[who % len(self.dn_accounts)]
        signer = self.signers[account]
        amount = self.dn_withdrawable[account]
        if amount == 0:
            with ape.reverts(self.w.datanets.NothingToWithdraw, account=account):
                self.w.datanets.withdraw(sender=signer)
            return
        self._send(self.w.datanets.withdraw, sender=signer)
        self.dn_withdrawable[account] = 0
        self._paid_out(signer.address, amount)


def _run(machine: type[PaymentsMachine], world: World, examples: int, steps: int) -> None:
    """Runs `machine` (``run_state_machine_as_test`` rather than ``Machine.TestCase``, so that
    it gets the module's fixtures); each example snapshots the chain and restores it at the
    end. ``INVARIANT_EXAMPLES`` and ``INVARIANT_STEPS`` scale both machines for a longer
    search (the numbers here are the defaults: 20 and 30)."""
    scale_examples = int(os.environ.get("INVARIANT_EXAMPLES", "20")) / 20
    scale_steps = int(os.environ.get("INVARIANT_STEPS", "30")) / 30
    baseline = _read_chain(world, range(0))  # the state every example starts from
    run_state_machine_as_test(
        lambda: machine(world, baseline),
        settings=settings(
            max_examples=max(1, round(examples * scale_examples)),
            stateful_step_count=max(1, round(steps * scale_steps)),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


def test_protocol_invariants_hold_under_random_operations(world: World) -> None:
    """Every operation of the protocol at random: OPEN is conserved, every outcome is the
    model's, and accepted vouchers are paid in full."""
    _run(ProtocolMachine, world, examples=20, steps=30)


def test_accepted_vouchers_are_paid_in_full_whatever_the_payer_does(world: World) -> None:
    """Payments only, the payer playing against what the node accepted: requests, withdrawals,
    revocations, authorizations, deposits into other channels, time passing, split changes."""
    _run(PaymentsMachine, world, examples=40, steps=40)
