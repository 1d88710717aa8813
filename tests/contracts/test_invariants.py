"""Stateful property tests of the deployed protocol: OPEN is conserved, nobody is paid more than
they were credited, and epochs stay within their pools, whatever the order of the operations.

A hypothesis state machine drives deposits, withdrawals, voucher redemptions, attribution epochs
(posting, challenges and their resolution, claims), staking and Datanet contributions, while a
Python model of the protocol predicts every outcome: each call either does what the model says,
with the events the model expects, or reverts with the error the model expects. After each step
the OPEN each contract holds must equal what the model says it owes; at the end of each example
every balance and every accounting entry on chain must equal the model's.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import ape
import pytest
from ape import chain
from hypothesis import HealthCheck, settings
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
from backend.protocol.eip712 import Voucher, sign_voucher
from backend.protocol.merkle import StandardMerkleTree

OPEN = 10**18
PARAMS = ProtocolParams()  # as deployed by the conftest
BPS = 10_000
SPLITS = (
    (4_000, 2_000, 3_500, 500),
    (1_000, 3_333, 5_167, 500),
)  # dev, contributors, node, protocol
DATANET_BOND = OPEN
CLAIM_TYPES = ["uint256", "address", "uint256"]
POSTED, CHALLENGED, REJECTED = 1, 2, 3
UINT256_MAX = 2**256 - 1
SEED = 1_000 * OPEN  # each payer's deposit and each pool's funds before the machine starts

amounts = st.integers(min_value=1, max_value=300 * OPEN)
percents = st.integers(min_value=1, max_value=100)
picks = st.integers(min_value=0, max_value=2**16)  # an index into whatever list is current
# An epoch's leaves: (claimant pick, weight of its share of the total).
leaf_lists = st.lists(st.tuples(picks, st.integers(0, 100)), min_size=1, max_size=5)


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
    claimed: int = 0
    status: int = POSTED
    challenger: str = ""
    bond: int = 0
    claimed_leaves: set[int] = field(default_factory=set)


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
    staked) with funded pools, two payers with deposits, and every approval the machine needs."""
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
    for split, attributor in zip(SPLITS, (node, second_node), strict=True):
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
        nodes.stake(PARAMS.min_stake, sender=operator)
    for account in (payer, other):
        token.approve(payments, UINT256_MAX, sender=account)
        payments.deposit(SEED, sender=account)
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
    (event,) = tx.events.filter(event_type)
    return event


def _read_chain(w: World, epoch_ids: range) -> dict[str, Any]:
    """Every balance and accounting entry the machine follows, as the chain has them."""
    holders = (*w.everyone, w.payments, w.rewards, w.nodes, w.datanets)
    return {
        "tokens": {a.address: w.token.balanceOf(a) for a in holders},
        "supply": w.token.totalSupply(),
        "accounts": {p.address: tuple(w.payments.accountOf(p)) for p in w.payers},
        "earnings": {a: w.payments.earnings(a) for a in _earners(w)},
        "stakes": {o.address: tuple(w.nodes.nodeInfo(o))[:3] for o in w.operators},
        "pools": [tuple(w.rewards.pool(m)) for m in w.model_ids],
        "epoch_count": w.rewards.epochCount(),
        "epochs": [_epoch_view(w.rewards.epoch(k)) for k in epoch_ids],
        "rewards_withdrawable": {a: w.rewards.withdrawable(a) for a in _bond_holders(w)},
        "datanet_withdrawable": {a: w.datanets.withdrawable(a) for a in _datanet_payees(w)},
    }


def _epoch_view(e: Any) -> tuple[int, int, int, int]:
    return (e.total, e.claimed, e.status, e.challengeBond)


def _earners(w: World) -> tuple[str, ...]:
    return (*(o.address for o in w.operators), w.developer.address, w.treasury.address)


def _bond_holders(w: World) -> tuple[str, ...]:
    return (w.challenger.address, *(o.address for o in w.operators))


def _datanet_payees(w: World) -> tuple[str, ...]:
    return (*(c.address for c in w.contributors), w.curator.address)


class ProtocolMachine(RuleBasedStateMachine):
    """The protocol and a Python model of it, driven by the same random operations."""

    def __init__(self, world: World, baseline: dict[str, Any]) -> None:
        super().__init__()
        self.w = w = world
        self.snapshot = chain.snapshot()  # every example starts from the fixture's state
        self.signers = {a.address: a for a in w.everyone}
        self.contracts = tuple(c.address for c in (w.payments, w.rewards, w.nodes, w.datanets))
        # OPEN of every actor and contract, from the Transfer events of the machine's own
        # transactions (checked against balanceOf at the end of each example) ...
        self.held = dict(baseline["tokens"])
        # ... and what the model says each actor should hold.
        self.tokens = {a: self.held[a] for a in self.signers}
        self.supply = baseline["supply"]
        # InferencePayments
        accounts = baseline["accounts"]
        self.balance = {a: acc[0] for a, acc in accounts.items()}
        self.pending = {a: (acc[1], acc[2]) for a, acc in accounts.items()}
        self.earners = _earners(w)
        self.earnings = dict(baseline["earnings"])
        self.redeemed: dict[tuple[str, str, int], int] = {}
        # NodeRegistry
        stakes = baseline["stakes"]
        self.bonded = {a: s[0] for a, s in stakes.items()}
        self.unbonding = {a: s[1] for a, s in stakes.items()}
        self.unbond_at = {a: s[2] for a, s in stakes.items()}
        # AttributionRewards
        self.unallocated = [p[0] for p in baseline["pools"]]
        self.funded = [p[1] for p in baseline["pools"]]
        self.epochs: list[Epoch] = []
        self.first_epoch = baseline["epoch_count"] + 1
        self.bond_holders = _bond_holders(w)
        self.rewards_withdrawable = dict(baseline["rewards_withdrawable"])
        # DatanetRegistry
        self.pending_contributions: dict[int, str] = {}  # contribution id -> contributor
        self.dn_accounts = _datanet_payees(w)
        self.dn_withdrawable = dict(baseline["datanet_withdrawable"])
        self.cids = 0

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # a failed step already reports its own error
                self._check_everything()
        finally:
            chain.restore(self.snapshot)

    # ------------------------------------------------------------ helpers

    def _now(self) -> int:
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

    def _check_everything(self) -> None:
        """Every balance and accounting entry on chain equals the model's."""
        on_chain = _read_chain(self.w, range(self.first_epoch, self.first_epoch + len(self.epochs)))
        model = {
            "tokens": {a: self.held[a] for a in on_chain["tokens"]},
            "supply": self.supply,
            "accounts": {a: (b, *self.pending[a]) for a, b in self.balance.items()},
            "earnings": self.earnings,
            "stakes": {
                a: (self.bonded[a], self.unbonding[a], self.unbond_at[a]) for a in self.bonded
            },
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
            if e.status != REJECTED
        )
        payments, rewards, nodes, datanets = self.contracts
        assert held[payments] == sum(self.balance.values()) + sum(self.earnings.values())
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
    def epochs_stay_within_their_pools(self) -> None:
        """claimed <= total for every epoch, and a pool's funds are either unallocated or in a
        live (not rejected) epoch: unallocated + sum of live totals == funded."""
        for i in range(len(self.w.model_ids)):
            live = [e for e in self.epochs if e.model == i and e.status != REJECTED]
            assert all(0 <= e.claimed <= e.total for e in live)
            assert self.unallocated[i] + sum(e.total for e in live) == self.funded[i]
            assert sum(e.claimed for e in live) <= self.funded[i]

    # ------------------------------------------------------------ time

    @rule(seconds=st.sampled_from([600, 3_600, 86_400, 7 * 86_400]))
    def advance_time(self, seconds: int) -> None:
        chain.pending_timestamp += seconds

    # ------------------------------------------------------------ payers

    @rule(who=picks, amount=amounts)
    def deposit(self, who: int, amount: int) -> None:
        payer = self.w.payers[who % len(self.w.payers)]
        tx = self._send(self.w.payments.deposit, amount, sender=payer)
        self.balance[payer.address] += amount
        self.tokens[payer.address] -= amount
        assert _event(tx, self.w.payments.Deposited).balance == self.balance[payer.address]

    @rule(who=picks, percent=percents)
    def request_withdrawal(self, who: int, percent: int) -> None:
        payer = self.w.payers[who % len(self.w.payers)]
        balance = self.balance[payer.address]
        if balance == 0:
            with ape.reverts(self.w.payments.WithdrawalExceedsBalance):
                self.w.payments.requestWithdrawal(1, sender=payer)
            return
        amount = max(1, balance * percent // 100)
        now = self._now()
        tx = self._send(self.w.payments.requestWithdrawal, amount, sender=payer)
        unlock_at = _event(tx, self.w.payments.WithdrawalRequested).unlockAt
        assert unlock_at == now + PARAMS.withdrawal_delay
        self.pending[payer.address] = (amount, unlock_at)

    @rule(who=picks, wait=st.booleans())
    def withdraw_deposit(self, who: int, wait: bool) -> None:
        """Withdraws, first waiting (to the exact second) for the unlock if `wait`."""
        payer = self.w.payers[who % len(self.w.payers)]
        amount, unlock_at = self.pending[payer.address]
        if wait and amount and self._now() < unlock_at:
            chain.pending_timestamp = unlock_at
        payments = self.w.payments
        if amount == 0:
            with ape.reverts(payments.NoWithdrawalPending, payer=payer.address):
                payments.withdraw(sender=payer)
            return
        if self._now() < unlock_at:
            with ape.reverts(payments.WithdrawalLocked, payer=payer.address, unlockAt=unlock_at):
                payments.withdraw(sender=payer)
            return
        paid = min(amount, self.balance[payer.address])  # redemptions may have spent some
        tx = self._send(payments.withdraw, sender=payer)
        assert _event(tx, payments.Withdrawn).amount == paid
        self.balance[payer.address] -= paid
        self.pending[payer.address] = (0, 0)
        self._paid_out(payer.address, paid)

    # ------------------------------------------------------------ nodes

    @rule(
        operator=picks,
        vouchers=st.lists(st.tuples(picks, picks, amounts), min_size=1, max_size=4),
    )
    def redeem(self, operator: int, vouchers: list[tuple[int, int, int]]) -> None:
        w = self.w
        node = w.operators[operator % len(w.operators)]
        now = self._now()
        signed, seen = [], set()
        for who, model, increment in vouchers:
            payer = w.payers[who % len(w.payers)]
            model_id = w.model_ids[model % len(w.model_ids)]
            if (payer.address, model_id) in seen:
                continue  # one voucher per channel and redemption
            seen.add((payer.address, model_id))
            channel = (payer.address, node.address, model_id)
            cumulative = self.redeemed.get(channel, 0) + increment
            voucher = Voucher(payer.address, node.address, model_id, cumulative, now + 3_600)
            signed.append(sign_voucher(payer.private_key, w.protocol.domain, voucher))
        proof = (b"\x01" * 32, len(signed), "bafy-receipts")
        if not self._active(node.address):
            with ape.reverts(w.payments.NodeNotActive, node=node.address):
                w.payments.redeem([s.redemption_tuple() for s in signed], proof, sender=node)
            return
        tx = self._send(
            w.payments.redeem, [s.redemption_tuple() for s in signed], proof, sender=node
        )

        expected_redeemed, runs = [], []  # runs: [model index, amount] of consecutive vouchers
        for s in signed:
            v = s.voucher
            channel = (v.payer, node.address, v.model_id)
            due = v.cumulative_amount - self.redeemed.get(channel, 0)
            paid = min(due, self.balance[v.payer])
            self.balance[v.payer] -= paid
            if paid:
                self.redeemed[channel] = self.redeemed.get(channel, 0) + paid
            expected_redeemed.append((v.payer, v.model_id, v.cumulative_amount, paid, due - paid))
            model = w.model_ids.index(v.model_id)
            if runs and runs[-1][0] == model:
                runs[-1][1] += paid
            else:
                runs.append([model, paid])
        got = [
            (e.payer, e.modelId, e.cumulativeAmount, e.paid, e.shortfall)
            for e in tx.events.filter(w.payments.VoucherRedeemed)
        ]
        assert got == expected_redeemed

        expected_splits, expected_funding = [], []
        for model, amount in runs:
            if amount == 0:
                continue
            developer_bps, _, node_bps, protocol_bps = SPLITS[model]
            node_share = amount * node_bps // BPS
            protocol_share = amount * protocol_bps // BPS
            developer_share = amount * developer_bps // BPS
            contributors_share = amount - node_share - protocol_share - developer_share
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

    @rule(operator=picks, amount=st.integers(min_value=1, max_value=2 * PARAMS.min_stake))
    def stake(self, operator: int, amount: int) -> None:
        node = self.w.operators[operator % len(self.w.operators)]
        tx = self._send(self.w.nodes.stake, amount, sender=node)
        self.bonded[node.address] += amount
        self.tokens[node.address] -= amount
        assert _event(tx, self.w.nodes.Staked).bonded == self.bonded[node.address]

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
        if wait and amount and self._now() < self.unbond_at[node.address]:
            chain.pending_timestamp = self.unbond_at[node.address]
        if amount == 0:
            with ape.reverts(self.w.nodes.NothingUnbonding, node=node.address):
                self.w.nodes.withdrawUnbonded(sender=node)
            return
        if self._now() < self.unbond_at[node.address]:
            with ape.reverts(self.w.nodes.UnbondingLocked, node=node.address):
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
        self.epochs.append(Epoch(i, poster.address, rows, tree, total, posted.challengeEndsAt))

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
        if upheld:
            from_bonded = min(PARAMS.slash_amount, self.bonded[e.poster])
            from_unbonding = min(PARAMS.slash_amount - from_bonded, self.unbonding[e.poster])
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

    @rule(who=picks)
    def contribute(self, who: int) -> None:
        contributor = self.w.contributors[who % len(self.w.contributors)]
        self.cids += 1
        cid = f"bafy-inv-{self.cids}"
        tx = self._send(self.w.datanets.contribute, self.w.datanet_id, cid, 1, sender=contributor)
        contributed = _event(tx, self.w.datanets.Contributed)
        assert contributed.bond == DATANET_BOND
        self.pending_contributions[contributed.contributionId] = contributor.address
        self.tokens[contributor.address] -= DATANET_BOND

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


def test_protocol_invariants_hold_under_random_operations(world: World) -> None:
    """Runs the machine (``run_state_machine_as_test`` rather than ``Machine.TestCase``, so that
    it gets the module's fixtures); each example snapshots the chain and restores it at the end.
    ``INVARIANT_EXAMPLES`` raises the number of examples for a longer search."""
    baseline = _read_chain(world, range(0))  # the state every example starts from
    run_state_machine_as_test(
        lambda: ProtocolMachine(world, baseline),
        settings=settings(
            max_examples=int(os.environ.get("INVARIANT_EXAMPLES", "20")),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
