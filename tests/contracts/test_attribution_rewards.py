"""AttributionRewards: pools, epochs, challenges and their resolution, Merkle claims, withdraw."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import ape
import pytest
from ape import chain
from ape.exceptions import ContractLogicError
from eth_abi import encode
from eth_utils import keccak

from backend.protocol.deployments import ProtocolParams
from backend.protocol.eip712 import Voucher, sign_voucher
from backend.protocol.merkle import StandardMerkleTree

OPEN = 10**18
PARAMS = ProtocolParams()  # as deployed by the conftest
POOL = 10_000 * OPEN  # funded into the model's pool by the setup
CLAIM_TYPES = ["uint256", "address", "uint256"]  # (index, account, amount)
ROOT = b"\x42" * 32
SPLIT = (4_000, 2_000, 3_500, 500)  # developer, contributors, node, protocol (bps)


class Status(IntEnum):
    """IAttributionRewards.EpochStatus."""

    NONE = 0
    POSTED = 1
    CHALLENGED = 2
    REJECTED = 3
    EXPIRED = 4


@dataclass(frozen=True)
class Setup:
    model_id: int
    datanet_id: int
    datanet_version: int


@pytest.fixture(scope="module", autouse=True)
def setup(
    protocol,
    token,
    datanets,
    models,
    nodes,
    rewards,
    payments,
    governance,
    developer,
    contributor,
    curator,
    node,
    challenger,
    other,
    payer,
):
    """A published Datanet version, a model whose attributor is `node` (staked), a funded pool.

    Every session fixture is requested here, before the module's snapshot, so that ape's
    isolation never has to rebase.
    """
    bond = OPEN
    datanets.createDatanet("bafy-meta", bond, 1, curator, sender=curator)
    datanet_id = datanets.datanetCount()  # tx.return_value: the call replayed after the tx
    token.approve(datanets, bond, sender=contributor)
    cid = "bafy-contribution"
    datanets.contribute(datanet_id, cid, 1_024, sender=contributor)
    contribution_id = datanets.contributionCount()
    datanets.review(datanet_id, [contribution_id], [True], sender=curator)
    version_tree = StandardMerkleTree.of(
        [[contribution_id, contributor.address, cid]], ["uint256", "address", "string"]
    )
    datanets.publishVersion(
        datanet_id,
        version_tree.root,
        "bafy-manifest",
        datanets.datanet(datanet_id).approvedCount,
        sender=curator,
    )
    version = datanets.datanet(datanet_id).versionCount
    spec = (
        "bafy-model",
        "bafy-base",
        "bafy-adapter",
        "bafy-train",
        datanet_id,
        version,
        (1, 1),
        SPLIT,
        node.address,
    )
    models.registerModel(spec, sender=developer)
    model_id = models.modelCount()
    token.approve(nodes, PARAMS.min_stake, sender=node)
    nodes.stake(PARAMS.min_stake, sender=node)
    token.approve(rewards, POOL, sender=developer)
    rewards.fundPool(model_id, POOL, sender=developer)
    token.approve(rewards, 10 * PARAMS.challenge_bond, sender=challenger)
    return Setup(model_id=model_id, datanet_id=datanet_id, datanet_version=version)


@pytest.fixture
def allocation(contributor, other, curator) -> list[tuple[int, str, int]]:
    """An epoch's claims: (index, account, amount) rows, 1,000 OPEN in total."""
    return [
        (0, contributor.address, 600 * OPEN),
        (1, other.address, 300 * OPEN),
        (2, curator.address, 100 * OPEN),
    ]


def _total(rows: list[tuple[int, str, int]]) -> int:
    return sum(row[2] for row in rows)


def _post(
    rewards: Any, setup: Setup, poster: Any, rows: list[tuple[int, str, int]], total: int = 0
) -> tuple[int, StandardMerkleTree]:
    """Posts an epoch over `rows` (total: the rows' sum unless given); returns its id and tree."""
    tree = StandardMerkleTree.of(rows, CLAIM_TYPES)
    tx = rewards.postEpoch(
        setup.model_id, tree.root, total or _total(rows), "bafy-report", sender=poster
    )
    return _posted(rewards, tx), tree


def _posted(rewards: Any, tx: Any) -> int:
    """The id of the epoch that `tx` posted."""
    return tx.events.filter(rewards.EpochPosted)[0].epochId


@contextmanager
def _reverts_raw(signature: str, *args: Any) -> Iterator[None]:
    """Expects the custom error `signature` with `args` from a contract the call goes through.

    ape decodes only the errors of the contract called (and then `ape.reverts` cannot check
    another contract's error), so the revert data is compared byte for byte.
    """
    types = signature[signature.index("(") + 1 : -1].split(",") if "()" not in signature else []
    expected = keccak(text=signature)[:4] + encode(types, list(args))
    with pytest.raises(ContractLogicError) as info:
        yield
    assert info.value.revert_message == "0x" + expected.hex()


def _pass_window() -> None:
    chain.pending_timestamp += PARAMS.challenge_window


# ---------------------------------------------------------------- deployment and setters


def test_deployment_sets_parameters(rewards, token, models, nodes, governance):
    assert rewards.token() == token.address
    assert rewards.models() == models.address
    assert rewards.nodes() == nodes.address
    assert rewards.owner() == governance.address
    assert rewards.challengeWindow() == PARAMS.challenge_window
    assert rewards.challengeBond() == PARAMS.challenge_bond
    assert rewards.slashAmount() == PARAMS.slash_amount
    assert rewards.claimPeriod() == PARAMS.claim_period
    assert rewards.epochCount() == 0
    assert nodes.slasher() == rewards.address


def test_set_challenge_window_sets_and_emits(rewards, governance):
    tx = rewards.setChallengeWindow(3_600, sender=governance)
    assert tx.events.filter(rewards.ChallengeWindowSet) == [rewards.ChallengeWindowSet(3_600)]
    assert rewards.challengeWindow() == 3_600


@pytest.mark.parametrize("window", [0, 59, 30 * 86_400 + 1, 2**40, 2**256 - 1])
def test_set_challenge_window_out_of_bounds_reverts(rewards, governance, window):
    """Issue 13, point 6: a zero window let fraud be claimed at once; 2^40 froze every claim."""
    with ape.reverts(rewards.ChallengeWindowOutOfBounds, window=window, min=60, max=30 * 86_400):
        rewards.setChallengeWindow(window, sender=governance)
    rewards.setChallengeWindow(60, sender=governance)
    rewards.setChallengeWindow(30 * 86_400, sender=governance)


def test_set_challenge_bond_sets_and_emits(rewards, governance):
    tx = rewards.setChallengeBond(7 * OPEN, sender=governance)
    assert tx.events.filter(rewards.ChallengeBondSet) == [rewards.ChallengeBondSet(7 * OPEN)]
    assert rewards.challengeBond() == 7 * OPEN


def test_set_slash_amount_sets_and_emits(rewards, governance):
    tx = rewards.setSlashAmount(42 * OPEN, sender=governance)
    assert tx.events.filter(rewards.SlashAmountSet) == [rewards.SlashAmountSet(42 * OPEN)]
    assert rewards.slashAmount() == 42 * OPEN


@pytest.mark.parametrize("bond", [100_000 * OPEN + 1, 2**96, 2**256 - 1])
def test_set_challenge_bond_above_bound_reverts(rewards, governance, bond):
    """Issue 13, point 6: a bond nobody can afford makes fraud unchallengeable."""
    with ape.reverts(rewards.ChallengeBondOutOfBounds, bond=bond, max=100_000 * OPEN):
        rewards.setChallengeBond(bond, sender=governance)
    rewards.setChallengeBond(100_000 * OPEN, sender=governance)
    rewards.setChallengeBond(0, sender=governance)


@pytest.mark.parametrize("amount", [0, OPEN - 1, 1_000_000 * OPEN + 1, 2**256 - 1])
def test_set_slash_amount_out_of_bounds_reverts(rewards, governance, amount):
    """Issue 13, point 6: a zero slash makes fraud free; an unbounded one lets one ruling take
    any stake."""
    with ape.reverts(rewards.SlashAmountOutOfBounds, amount=amount, min=OPEN, max=1_000_000 * OPEN):
        rewards.setSlashAmount(amount, sender=governance)
    assert rewards.slashAmount() == PARAMS.slash_amount


def test_set_claim_period_sets_and_emits(rewards, governance):
    tx = rewards.setClaimPeriod(7 * 86_400, sender=governance)
    assert tx.events.filter(rewards.ClaimPeriodSet) == [rewards.ClaimPeriodSet(7 * 86_400)]
    assert rewards.claimPeriod() == 7 * 86_400


@pytest.mark.parametrize("period", [0, 7 * 86_400 - 1, 5 * 365 * 86_400 + 1, 2**32, 2**256 - 1])
def test_set_claim_period_out_of_bounds_reverts(rewards, governance, period):
    with ape.reverts(
        rewards.ClaimPeriodOutOfBounds, period=period, min=7 * 86_400, max=5 * 365 * 86_400
    ):
        rewards.setClaimPeriod(period, sender=governance)
    rewards.setClaimPeriod(5 * 365 * 86_400, sender=governance)


@pytest.mark.parametrize(
    ("setter", "value"),
    [
        ("setChallengeWindow", 60),
        ("setChallengeBond", 1),
        ("setSlashAmount", OPEN),
        ("setClaimPeriod", 7 * 86_400),
        ("pause", None),
    ],
)
def test_governance_setters_only_owner(rewards, other, setter, value):
    args = () if value is None else (value,)
    with ape.reverts(rewards.OwnableUnauthorizedAccount, account=other.address):
        getattr(rewards, setter)(*args, sender=other)


def test_unpause_only_owner(rewards, governance, other):
    rewards.pause(sender=governance)
    with ape.reverts(rewards.OwnableUnauthorizedAccount, account=other.address):
        rewards.unpause(sender=other)
    rewards.unpause(sender=governance)
    assert not rewards.paused()


# ---------------------------------------------------------------- fundPool


def test_fund_pool_adds_to_the_pool_and_emits(setup, rewards, token, other):
    token.approve(rewards, 5 * OPEN, sender=other)
    before = token.balanceOf(rewards)
    tx = rewards.fundPool(setup.model_id, 5 * OPEN, sender=other)
    assert tx.events.filter(rewards.PoolFunded) == [
        rewards.PoolFunded(setup.model_id, other.address, 5 * OPEN)
    ]
    assert rewards.pool(setup.model_id) == (POOL + 5 * OPEN, POOL + 5 * OPEN)
    assert token.balanceOf(rewards) == before + 5 * OPEN


def test_fund_pool_unknown_model_reverts(setup, rewards, token, models, other):
    token.approve(rewards, OPEN, sender=other)
    unknown = setup.model_id + 1
    with _reverts_raw("UnknownModel(uint256)", unknown):
        rewards.fundPool(unknown, OPEN, sender=other)


def test_fund_pool_zero_amount_reverts(setup, rewards, other):
    with ape.reverts(rewards.RewardsZeroAmount):
        rewards.fundPool(setup.model_id, 0, sender=other)


def test_fund_pool_without_allowance_reverts(setup, rewards, token, other):
    with _reverts_raw(
        "ERC20InsufficientAllowance(address,uint256,uint256)", rewards.address, 0, OPEN
    ):
        rewards.fundPool(setup.model_id, OPEN, sender=other)


def test_fund_pool_while_paused_still_funds(setup, rewards, token, governance, other):
    rewards.pause(sender=governance)
    token.approve(rewards, OPEN, sender=other)
    rewards.fundPool(setup.model_id, OPEN, sender=other)
    assert rewards.pool(setup.model_id).unallocated == POOL + OPEN


def test_pool_of_unfunded_model_is_empty(setup, rewards):
    assert rewards.pool(setup.model_id + 1) == (0, 0)


# ---------------------------------------------------------------- postEpoch


def test_post_epoch_allocates_from_the_pool_and_emits(setup, rewards, node, allocation):
    tree = StandardMerkleTree.of(allocation, CLAIM_TYPES)
    total = _total(allocation)
    tx = rewards.postEpoch(setup.model_id, tree.root, total, "bafy-report", sender=node)
    ends_at = chain.blocks.head.timestamp + PARAMS.challenge_window
    assert tx.events.filter(rewards.EpochPosted) == [
        rewards.EpochPosted(
            1, setup.model_id, node.address, tree.root, total, "bafy-report", ends_at
        )
    ]
    assert rewards.epochCount() == 1
    assert rewards.epoch(1) == (
        tree.root,
        total,
        0,
        ends_at,
        Status.POSTED,
        node.address,
        setup.model_id,
        PARAMS.claim_period,
        ape.utils.ZERO_ADDRESS,
        0,
    )
    assert rewards.pool(setup.model_id) == (POOL - total, POOL)


def test_post_epoch_may_allocate_the_whole_pool(setup, rewards, node):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, POOL, "bafy", sender=node))
    assert rewards.epoch(epoch_id).total == POOL
    assert rewards.pool(setup.model_id).unallocated == 0


def test_post_epoch_numbers_epochs_consecutively(setup, rewards, node):
    ids = [
        _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
        for _ in range(3)
    ]
    assert ids == [1, 2, 3]
    assert rewards.epochCount() == 3
    assert rewards.pool(setup.model_id).unallocated == POOL - 3 * OPEN


def test_post_epoch_not_attributor_reverts(setup, rewards, nodes, token, other, node):
    token.approve(nodes, PARAMS.min_stake, sender=other)
    nodes.stake(PARAMS.min_stake, sender=other)  # staked, but not the model's attributor
    with ape.reverts(
        rewards.NotAttributor, modelId=setup.model_id, caller=other.address, attributor=node.address
    ):
        rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=other)


def test_post_epoch_attributor_not_staked_reverts(setup, rewards, nodes, node):
    nodes.requestUnbonding(1, sender=node)  # bonded now below the minimum stake
    with ape.reverts(rewards.AttributorNotStaked, attributor=node.address):
        rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node)


def test_post_epoch_unknown_model_reverts(setup, rewards, models, node):
    with _reverts_raw("UnknownModel(uint256)", setup.model_id + 1):
        rewards.postEpoch(setup.model_id + 1, ROOT, OPEN, "bafy", sender=node)


def test_post_epoch_zero_root_reverts(setup, rewards, node):
    with ape.reverts(rewards.RewardsZeroMerkleRoot):
        rewards.postEpoch(setup.model_id, b"\x00" * 32, OPEN, "bafy", sender=node)


def test_post_epoch_zero_total_reverts(setup, rewards, node):
    with ape.reverts(rewards.RewardsZeroAmount):
        rewards.postEpoch(setup.model_id, ROOT, 0, "bafy", sender=node)


def test_post_epoch_total_above_pool_reverts(setup, rewards, node):
    with ape.reverts(
        rewards.EpochTotalExceedsPool, modelId=setup.model_id, total=POOL + 1, unallocated=POOL
    ):
        rewards.postEpoch(setup.model_id, ROOT, POOL + 1, "bafy", sender=node)


def test_post_epoch_total_above_what_is_left_unallocated_reverts(setup, rewards, node):
    rewards.postEpoch(setup.model_id, ROOT, POOL - OPEN, "bafy", sender=node)
    with ape.reverts(
        rewards.EpochTotalExceedsPool, modelId=setup.model_id, total=2 * OPEN, unallocated=OPEN
    ):
        rewards.postEpoch(setup.model_id, ROOT, 2 * OPEN, "bafy", sender=node)


def test_post_epoch_while_paused_reverts(setup, rewards, governance, node):
    rewards.pause(sender=governance)
    with ape.reverts(rewards.EnforcedPause):
        rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node)


def test_post_epoch_uses_the_current_challenge_window(setup, rewards, governance, node):
    rewards.setChallengeWindow(3_600, sender=governance)
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    assert rewards.epoch(epoch_id).challengeEndsAt == chain.blocks.head.timestamp + 3_600


# ---------------------------------------------------------------- challenge


def test_challenge_takes_the_bond_and_emits(setup, rewards, token, node, challenger, allocation):
    epoch_id, _ = _post(rewards, setup, node, allocation)
    before = token.balanceOf(challenger)
    tx = rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    assert tx.events.filter(rewards.EpochChallenged) == [
        rewards.EpochChallenged(epoch_id, challenger.address, PARAMS.challenge_bond, "bafy-reason")
    ]
    assert token.balanceOf(challenger) == before - PARAMS.challenge_bond
    epoch = rewards.epoch(epoch_id)
    assert epoch.status == Status.CHALLENGED
    assert epoch.challenger == challenger.address
    assert epoch.challengeBond == PARAMS.challenge_bond


def test_challenge_with_zero_bond_takes_nothing(setup, rewards, token, governance, node, other):
    rewards.setChallengeBond(0, sender=governance)
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    before = token.balanceOf(other)
    tx = rewards.challenge(epoch_id, "bafy-reason", sender=other)  # `other` approved nothing
    assert tx.events.filter(rewards.EpochChallenged) == [
        rewards.EpochChallenged(epoch_id, other.address, 0, "bafy-reason")
    ]
    assert token.balanceOf(other) == before
    assert rewards.epoch(epoch_id).status == Status.CHALLENGED


def test_challenge_without_allowance_reverts(setup, rewards, token, node, other):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    with _reverts_raw(
        "ERC20InsufficientAllowance(address,uint256,uint256)",
        rewards.address,
        0,
        PARAMS.challenge_bond,
    ):
        rewards.challenge(epoch_id, "bafy-reason", sender=other)


def test_challenge_window_closed_reverts(setup, rewards, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    ends_at = rewards.epoch(epoch_id).challengeEndsAt
    chain.pending_timestamp = ends_at  # the window is [postedAt, challengeEndsAt)
    with ape.reverts(rewards.ChallengeWindowClosed, epochId=epoch_id, challengeEndsAt=ends_at):
        rewards.challenge(epoch_id, "bafy-reason", sender=challenger)


def test_challenge_in_the_last_second_of_the_window(setup, rewards, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    chain.pending_timestamp = rewards.epoch(epoch_id).challengeEndsAt - 1
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    assert rewards.epoch(epoch_id).status == Status.CHALLENGED


def test_challenge_already_challenged_reverts(setup, rewards, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.CHALLENGED):
        rewards.challenge(epoch_id, "bafy-reason", sender=challenger)


def test_challenge_rejected_epoch_reverts(setup, rewards, governance, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.REJECTED):
        rewards.challenge(epoch_id, "bafy-reason", sender=challenger)


def test_challenge_unknown_epoch_reverts(setup, rewards, challenger):
    with ape.reverts(rewards.UnknownEpoch, epochId=1):
        rewards.challenge(1, "bafy-reason", sender=challenger)


def test_challenge_works_while_paused(setup, rewards, governance, node, challenger):
    """Issue 13, point 1: pause() used to stop challenges while the window and claims ran on,
    so a fraudulent epoch posted before an emergency was claimed after it, unchallenged."""
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.pause(sender=governance)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    assert rewards.epoch(epoch_id).status == Status.CHALLENGED


def test_challenge_bond_change_does_not_touch_a_held_bond(
    setup, rewards, governance, node, challenger
):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.setChallengeBond(1, sender=governance)
    rewards.resolveChallenge(epoch_id, False, sender=governance)
    assert rewards.withdrawable(node) == PARAMS.challenge_bond


# ---------------------------------------------------------------- resolveChallenge


def test_resolve_challenge_upheld_rejects_returns_total_and_slashes(
    setup, rewards, nodes, token, governance, node, challenger, allocation
):
    epoch_id, _ = _post(rewards, setup, node, allocation)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards_before = token.balanceOf(rewards)
    nodes_before = token.balanceOf(nodes)
    tx = rewards.resolveChallenge(epoch_id, True, sender=governance)
    assert tx.events.filter(rewards.ChallengeResolved) == [
        rewards.ChallengeResolved(epoch_id, True, PARAMS.slash_amount)
    ]
    assert tx.events.filter(nodes.Slashed) == [
        nodes.Slashed(node.address, PARAMS.slash_amount, rewards.address)
    ]
    epoch = rewards.epoch(epoch_id)
    assert epoch.status == Status.REJECTED
    assert epoch.challengeBond == 0
    assert rewards.pool(setup.model_id) == (POOL, POOL)
    assert nodes.nodeInfo(node).bonded == PARAMS.min_stake - PARAMS.slash_amount
    assert rewards.withdrawable(challenger) == PARAMS.challenge_bond + PARAMS.slash_amount
    assert rewards.withdrawable(node) == 0
    assert token.balanceOf(rewards) == rewards_before + PARAMS.slash_amount
    assert token.balanceOf(nodes) == nodes_before - PARAMS.slash_amount


def test_resolve_challenge_upheld_slashes_unbonding_stake_too(
    setup, rewards, nodes, governance, node, challenger
):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    nodes.requestUnbonding(PARAMS.min_stake - 200 * OPEN, sender=node)  # 200 bonded, 800 unbonding
    tx = rewards.resolveChallenge(epoch_id, True, sender=governance)
    assert tx.events.filter(rewards.ChallengeResolved) == [
        rewards.ChallengeResolved(epoch_id, True, PARAMS.slash_amount)
    ]
    info = nodes.nodeInfo(node)
    assert info.bonded == 0
    assert info.unbonding == PARAMS.min_stake - PARAMS.slash_amount  # 800 - 300
    assert rewards.withdrawable(challenger) == PARAMS.challenge_bond + PARAMS.slash_amount


def test_resolve_challenge_upheld_slashes_at_most_what_the_poster_holds(
    setup, rewards, nodes, governance, node, challenger
):
    """Two epochs posted on one stake: the second upheld dispute takes what the first left."""
    rewards.setSlashAmount(600 * OPEN, sender=governance)
    first = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    second = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(first, "bafy-reason", sender=challenger)
    rewards.challenge(second, "bafy-reason", sender=challenger)
    nodes.requestUnbonding(400 * OPEN, sender=node)  # 600 bonded, 400 unbonding
    rewards.resolveChallenge(first, True, sender=governance)
    tx = rewards.resolveChallenge(second, True, sender=governance)
    assert tx.events.filter(rewards.ChallengeResolved) == [
        rewards.ChallengeResolved(second, True, PARAMS.min_stake - 600 * OPEN)
    ]
    assert nodes.nodeInfo(node)[:2] == (0, 0)
    assert rewards.withdrawable(challenger) == 2 * PARAMS.challenge_bond + PARAMS.min_stake


def test_post_epoch_needs_stake_covering_the_slash_amount(setup, rewards, nodes, governance, node):
    """Issue 13, point 2: an upheld dispute must find at least `slashAmount` to take."""
    rewards.setSlashAmount(PARAMS.min_stake + 1, sender=governance)
    with ape.reverts(
        rewards.PosterStakeBelowSlashAmount,
        poster=node.address,
        stake=PARAMS.min_stake,
        slashAmount=PARAMS.min_stake + 1,
    ):
        rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node)
    assert rewards.epochCount() == 0
    assert nodes.nodeInfo(node).heldUntil == 0


def test_post_epoch_holds_the_poster_stake_until_the_window_ends(setup, rewards, nodes, node):
    tx = rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node)
    ends_at = rewards.epoch(_posted(rewards, tx)).challengeEndsAt
    assert tx.events.filter(nodes.StakeHeldUntil) == [nodes.StakeHeldUntil(node.address, ends_at)]
    assert nodes.nodeInfo(node).heldUntil == ends_at


def test_poster_cannot_unbond_out_of_an_open_window(setup, rewards, nodes, governance, node):
    """Issue 13, point 2: with a delay shorter than the window, a poster used to unbond in the
    block it posted and withdraw before anyone could challenge."""
    nodes.setUnbondingDelay(60, sender=governance)
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    ends_at = rewards.epoch(epoch_id).challengeEndsAt
    nodes.requestUnbonding(PARAMS.min_stake, sender=node)
    chain.pending_timestamp += 60
    with ape.reverts(nodes.StakeHeld, node=node.address, heldUntil=ends_at, openDisputes=0):
        nodes.withdrawUnbonded(sender=node)
    chain.pending_timestamp = ends_at  # the window closed unchallenged: the stake is free
    nodes.withdrawUnbonded(sender=node)
    assert nodes.nodeInfo(node)[:2] == (0, 0)


def test_upheld_dispute_resolved_after_the_unbonding_delay_still_slashes(
    setup, rewards, nodes, token, governance, node, challenger
):
    """Issue 13, point 2: the poster unbonded in the block it posted; governance ruled after
    the unbonding delay, when the stake used to be gone and the slash took nothing."""
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    nodes.requestUnbonding(PARAMS.min_stake, sender=node)
    tx = rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    assert tx.events.filter(nodes.DisputeOpened) == [nodes.DisputeOpened(node.address, 1)]
    chain.pending_timestamp += PARAMS.unbonding_delay + PARAMS.challenge_window
    with ape.reverts(nodes.StakeHeld):
        nodes.withdrawUnbonded(sender=node)
    tx = rewards.resolveChallenge(epoch_id, True, sender=governance)
    assert tx.events.filter(rewards.ChallengeResolved) == [
        rewards.ChallengeResolved(epoch_id, True, PARAMS.slash_amount)
    ]
    assert tx.events.filter(nodes.DisputeClosed) == [nodes.DisputeClosed(node.address, 0)]
    assert rewards.withdrawable(challenger) == PARAMS.challenge_bond + PARAMS.slash_amount
    before = token.balanceOf(node)
    nodes.withdrawUnbonded(sender=node)  # the ruling released what is left
    assert token.balanceOf(node) == before + PARAMS.min_stake - PARAMS.slash_amount


def test_dismissed_dispute_releases_the_stake(setup, rewards, nodes, governance, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    nodes.requestUnbonding(PARAMS.min_stake, sender=node)
    chain.pending_timestamp += PARAMS.unbonding_delay
    with ape.reverts(nodes.StakeHeld, openDisputes=1):
        nodes.withdrawUnbonded(sender=node)
    rewards.resolveChallenge(epoch_id, False, sender=governance)
    assert nodes.nodeInfo(node).openDisputes == 0
    nodes.withdrawUnbonded(sender=node)
    assert nodes.nodeInfo(node)[:2] == (0, 0)


def test_one_open_dispute_of_two_keeps_the_stake_held(
    setup, rewards, nodes, governance, node, challenger
):
    first = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    second = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(first, "bafy-reason", sender=challenger)
    rewards.challenge(second, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(first, False, sender=governance)
    nodes.requestUnbonding(PARAMS.min_stake, sender=node)
    chain.pending_timestamp += PARAMS.unbonding_delay
    with ape.reverts(nodes.StakeHeld, openDisputes=1):
        nodes.withdrawUnbonded(sender=node)
    rewards.resolveChallenge(second, False, sender=governance)
    nodes.withdrawUnbonded(sender=node)


def test_resolve_challenge_dismissed_pays_the_bond_to_the_poster(
    setup, rewards, nodes, token, governance, node, challenger, allocation
):
    epoch_id, _ = _post(rewards, setup, node, allocation)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards_before = token.balanceOf(rewards)
    tx = rewards.resolveChallenge(epoch_id, False, sender=governance)
    assert tx.events.filter(rewards.ChallengeResolved) == [
        rewards.ChallengeResolved(epoch_id, False, 0)
    ]
    assert not tx.events.filter(nodes.Slashed)
    epoch = rewards.epoch(epoch_id)
    assert epoch.status == Status.POSTED
    assert epoch.challengeBond == 0
    assert rewards.withdrawable(node) == PARAMS.challenge_bond
    assert rewards.withdrawable(challenger) == 0
    assert nodes.nodeInfo(node).bonded == PARAMS.min_stake
    assert rewards.pool(setup.model_id).unallocated == POOL - _total(allocation)
    assert token.balanceOf(rewards) == rewards_before


def test_resolve_challenge_dismissed_epoch_is_claimable_after_the_window(
    setup, rewards, token, governance, node, challenger, contributor, allocation
):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    _pass_window()
    rewards.resolveChallenge(epoch_id, False, sender=governance)
    before = token.balanceOf(contributor)
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    assert token.balanceOf(contributor) == before + allocation[0][2]


def test_resolve_challenge_dismissed_within_the_window_can_be_challenged_again(
    setup, rewards, governance, node, challenger
):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, False, sender=governance)
    rewards.challenge(epoch_id, "bafy-other-reason", sender=challenger)
    assert rewards.epoch(epoch_id).status == Status.CHALLENGED


def test_resolve_challenge_only_governance(setup, rewards, node, challenger, other):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    with ape.reverts(rewards.OwnableUnauthorizedAccount, account=other.address):
        rewards.resolveChallenge(epoch_id, True, sender=other)


def test_resolve_challenge_not_challenged_reverts(setup, rewards, governance, node):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.POSTED):
        rewards.resolveChallenge(epoch_id, True, sender=governance)


def test_resolve_challenge_twice_reverts(setup, rewards, governance, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.REJECTED):
        rewards.resolveChallenge(epoch_id, False, sender=governance)


def test_resolve_challenge_unknown_epoch_reverts(setup, rewards, governance):
    with ape.reverts(rewards.UnknownEpoch, epochId=9):
        rewards.resolveChallenge(9, True, sender=governance)


def test_resolve_challenge_works_while_paused(setup, rewards, governance, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.pause(sender=governance)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    assert rewards.epoch(epoch_id).status == Status.REJECTED


# ---------------------------------------------------------------- claim


def test_claim_pays_each_leaf_and_emits(setup, rewards, token, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    claimed = 0
    for i, (index, account, amount) in enumerate(allocation):
        before = token.balanceOf(account)
        tx = rewards.claim(epoch_id, index, account, amount, tree.proof(i), sender=contributor)
        assert tx.events.filter(rewards.Claimed) == [
            rewards.Claimed(epoch_id, index, account, amount)
        ]
        assert token.balanceOf(account) == before + amount
        assert rewards.isClaimed(epoch_id, index)
        claimed += amount
        assert rewards.epoch(epoch_id).claimed == claimed
    assert claimed == rewards.epoch(epoch_id).total


def test_claim_by_anyone_pays_the_account(
    setup, rewards, token, node, other, contributor, allocation
):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    index, account, amount = allocation[0]
    assert account == contributor.address
    contributor_before, relayer_before = token.balanceOf(contributor), token.balanceOf(other)
    rewards.claim(epoch_id, index, account, amount, tree.proof(0), sender=other)
    assert token.balanceOf(contributor) == contributor_before + amount
    assert token.balanceOf(other) == relayer_before


def test_claim_leaves_others_unclaimed(setup, rewards, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    assert rewards.isClaimed(epoch_id, 0)
    assert not rewards.isClaimed(epoch_id, 1)
    assert not rewards.isClaimed(epoch_id, 2)


def test_claim_before_the_window_closes_reverts(setup, rewards, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    ends_at = rewards.epoch(epoch_id).challengeEndsAt
    chain.pending_timestamp = ends_at - 1
    with ape.reverts(
        rewards.ChallengeWindowOpen,
        epochId=epoch_id,
        challengeEndsAt=ends_at,
        nowTimestamp=ends_at - 1,
    ):
        rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)


def test_claim_at_the_window_end(setup, rewards, token, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    chain.pending_timestamp = rewards.epoch(epoch_id).challengeEndsAt
    before = token.balanceOf(contributor)
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    assert token.balanceOf(contributor) == before + allocation[0][2]


def test_claim_challenged_epoch_reverts(setup, rewards, node, challenger, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    _pass_window()
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.CHALLENGED):
        rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)


def test_claim_rejected_epoch_reverts(
    setup, rewards, governance, node, challenger, contributor, allocation
):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    _pass_window()
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.REJECTED):
        rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)


def test_claim_unknown_epoch_reverts(setup, rewards, contributor):
    with ape.reverts(rewards.UnknownEpoch, epochId=5):
        rewards.claim(5, 0, contributor, OPEN, [], sender=contributor)


def test_claim_twice_reverts(setup, rewards, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    with ape.reverts(rewards.AlreadyClaimed, epochId=epoch_id, index=0):
        rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)


def test_claim_wrong_amount_reverts(setup, rewards, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    index, account, amount = allocation[0]
    with ape.reverts(
        rewards.InvalidClaimProof, epochId=epoch_id, index=index, account=account, amount=amount + 1
    ):
        rewards.claim(epoch_id, index, account, amount + 1, tree.proof(0), sender=contributor)


def test_claim_wrong_account_reverts(setup, rewards, node, other, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    index, _, amount = allocation[0]
    with ape.reverts(
        rewards.InvalidClaimProof,
        epochId=epoch_id,
        index=index,
        account=other.address,
        amount=amount,
    ):
        rewards.claim(epoch_id, index, other, amount, tree.proof(0), sender=other)


def test_claim_wrong_index_reverts(setup, rewards, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    _, account, amount = allocation[0]
    with ape.reverts(
        rewards.InvalidClaimProof, epochId=epoch_id, index=1, account=account, amount=amount
    ):
        rewards.claim(epoch_id, 1, account, amount, tree.proof(0), sender=contributor)


@pytest.mark.parametrize("tamper", ["other_leaf", "empty", "flipped"])
def test_claim_wrong_proof_reverts(setup, rewards, node, contributor, allocation, tamper):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    proof = tree.proof(0)
    wrong = {
        "other_leaf": tree.proof(1),
        "empty": [],
        "flipped": [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]],
    }[tamper]
    index, account, amount = allocation[0]
    with ape.reverts(
        rewards.InvalidClaimProof, epochId=epoch_id, index=index, account=account, amount=amount
    ):
        rewards.claim(epoch_id, index, account, amount, wrong, sender=contributor)


def test_claim_proof_of_another_epoch_reverts(setup, rewards, node, contributor, allocation):
    first, tree = _post(rewards, setup, node, allocation)
    other_rows = [(0, row[1], row[2] + 1) for row in allocation[:2]]
    second, _ = _post(rewards, setup, node, other_rows)
    _pass_window()
    index, account, amount = allocation[0]
    with ape.reverts(
        rewards.InvalidClaimProof, epochId=second, index=index, account=account, amount=amount
    ):
        rewards.claim(second, index, account, amount, tree.proof(0), sender=contributor)
    rewards.claim(first, index, account, amount, tree.proof(0), sender=contributor)


def test_claim_above_the_epoch_total_reverts(
    setup, rewards, token, node, contributor, other, curator
):
    """A malicious tree promising more than its total can pay out no more than the total."""
    rows = [
        (0, contributor.address, 600 * OPEN),
        (1, other.address, 600 * OPEN),
        (2, curator.address, 1),
    ]
    total = 1_000 * OPEN
    epoch_id, tree = _post(rewards, setup, node, rows, total=total)
    _pass_window()
    rewards.claim(epoch_id, *rows[0], tree.proof(0), sender=contributor)
    with ape.reverts(
        rewards.ClaimExceedsEpochTotal,
        epochId=epoch_id,
        claimed=600 * OPEN,
        amount=600 * OPEN,
        total=total,
    ):
        rewards.claim(epoch_id, *rows[1], tree.proof(1), sender=other)
    assert not rewards.isClaimed(epoch_id, 1)
    rewards.claim(epoch_id, *rows[2], tree.proof(2), sender=curator)
    assert rewards.epoch(epoch_id).claimed == 600 * OPEN + 1
    # The other epochs' money and the pool stay whole.
    assert token.balanceOf(rewards) == POOL - 600 * OPEN - 1


def test_claim_works_while_paused(setup, rewards, token, governance, node, contributor, allocation):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    rewards.pause(sender=governance)
    before = token.balanceOf(contributor)
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    assert token.balanceOf(contributor) == before + allocation[0][2]


def test_claim_single_leaf_epoch_with_empty_proof(setup, rewards, token, node, contributor):
    rows = [(0, contributor.address, 5 * OPEN)]
    epoch_id, tree = _post(rewards, setup, node, rows)
    assert tree.proof(0) == []
    _pass_window()
    before = token.balanceOf(contributor)
    rewards.claim(epoch_id, *rows[0], [], sender=contributor)
    assert token.balanceOf(contributor) == before + 5 * OPEN


# ---------------------------------------------------------------- sweepExpired


def _pass_claim_period(rewards: Any, epoch_id: int) -> int:
    """Moves the chain to the first second the epoch can be swept; returns that time."""
    e = rewards.epoch(epoch_id)
    chain.pending_timestamp = e.challengeEndsAt + e.claimPeriod
    return e.challengeEndsAt + e.claimPeriod


def test_sweep_returns_the_unclaimed_rest_to_the_pool(
    setup, rewards, token, other, node, contributor, allocation
):
    """Issue 13, point 5: what nobody claimed used to be locked forever."""
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_window()
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    _pass_claim_period(rewards, epoch_id)
    held = token.balanceOf(rewards)
    rest = _total(allocation) - allocation[0][2]
    tx = rewards.sweepExpired(epoch_id, sender=other)  # anyone may sweep
    assert tx.events.filter(rewards.EpochExpired) == [
        rewards.EpochExpired(epoch_id, setup.model_id, rest)
    ]
    assert rewards.epoch(epoch_id).status == Status.EXPIRED
    assert rewards.pool(setup.model_id) == (POOL - allocation[0][2], POOL)
    assert token.balanceOf(rewards) == held  # nothing leaves the contract
    # The swept rest funds the next epoch; the expired one pays nobody any more.
    _post(rewards, setup, node, [(0, other.address, POOL - allocation[0][2])])
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.EXPIRED):
        rewards.claim(epoch_id, *allocation[1], tree.proof(1), sender=other)


def test_sweep_before_the_claim_period_ends_reverts(setup, rewards, node, other, allocation):
    epoch_id, _ = _post(rewards, setup, node, allocation)
    e = rewards.epoch(epoch_id)
    ends_at = e.challengeEndsAt + PARAMS.claim_period
    chain.pending_timestamp = ends_at - 1
    with ape.reverts(rewards.ClaimPeriodOpen, epochId=epoch_id, claimEndsAt=ends_at):
        rewards.sweepExpired(epoch_id, sender=other)
    assert rewards.epoch(epoch_id).status == Status.POSTED


def test_late_claim_before_the_sweep_still_pays(
    setup, rewards, token, node, contributor, allocation
):
    epoch_id, tree = _post(rewards, setup, node, allocation)
    _pass_claim_period(rewards, epoch_id)
    before = token.balanceOf(contributor)
    rewards.claim(epoch_id, *allocation[0], tree.proof(0), sender=contributor)
    assert token.balanceOf(contributor) == before + allocation[0][2]


def test_sweep_fully_claimed_epoch_returns_nothing(setup, rewards, node, contributor):
    rows = [(0, contributor.address, 5 * OPEN)]
    epoch_id, _ = _post(rewards, setup, node, rows)
    _pass_window()
    rewards.claim(epoch_id, *rows[0], [], sender=contributor)
    _pass_claim_period(rewards, epoch_id)
    tx = rewards.sweepExpired(epoch_id, sender=contributor)
    assert tx.events.filter(rewards.EpochExpired) == [
        rewards.EpochExpired(epoch_id, setup.model_id, 0)
    ]
    assert rewards.pool(setup.model_id).unallocated == POOL - 5 * OPEN


def test_sweep_twice_reverts(setup, rewards, node, other, allocation):
    epoch_id, _ = _post(rewards, setup, node, allocation)
    _pass_claim_period(rewards, epoch_id)
    rewards.sweepExpired(epoch_id, sender=other)
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.EXPIRED):
        rewards.sweepExpired(epoch_id, sender=other)
    assert rewards.pool(setup.model_id).unallocated == POOL


def test_sweep_challenged_epoch_reverts(setup, rewards, node, challenger, other, allocation):
    """A challenged epoch waits for its ruling: a sweep must not pre-empt governance."""
    epoch_id, _ = _post(rewards, setup, node, allocation)
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    _pass_claim_period(rewards, epoch_id)
    with ape.reverts(rewards.WrongEpochStatus, epochId=epoch_id, status=Status.CHALLENGED):
        rewards.sweepExpired(epoch_id, sender=other)


def test_sweep_unknown_epoch_reverts(rewards, other):
    with ape.reverts(rewards.UnknownEpoch, epochId=1):
        rewards.sweepExpired(1, sender=other)


def test_sweep_works_while_paused(setup, rewards, governance, node, other, allocation):
    epoch_id, _ = _post(rewards, setup, node, allocation)
    rewards.pause(sender=governance)
    _pass_claim_period(rewards, epoch_id)
    rewards.sweepExpired(epoch_id, sender=other)
    assert rewards.epoch(epoch_id).status == Status.EXPIRED


def test_claim_period_change_does_not_shorten_a_posted_epoch(
    setup, rewards, governance, node, other, allocation
):
    """Governance cannot sweep an epoch early by shortening the period after it was posted."""
    epoch_id, _ = _post(rewards, setup, node, allocation)
    rewards.setClaimPeriod(7 * 86_400, sender=governance)
    chain.pending_timestamp = rewards.epoch(epoch_id).challengeEndsAt + 7 * 86_400
    with ape.reverts(rewards.ClaimPeriodOpen):
        rewards.sweepExpired(epoch_id, sender=other)
    assert rewards.epoch(epoch_id).claimPeriod == PARAMS.claim_period


def test_is_claimed_unknown_epoch_is_false(rewards):
    assert not rewards.isClaimed(1, 0)


def test_epoch_unknown_reverts(rewards):
    with ape.reverts(rewards.UnknownEpoch, epochId=1):
        rewards.epoch(1)


# ---------------------------------------------------------------- withdraw


def test_withdraw_pays_the_challenger_after_an_upheld_dispute(
    setup, rewards, token, governance, node, challenger
):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    expected = PARAMS.challenge_bond + PARAMS.slash_amount
    before = token.balanceOf(challenger)
    tx = rewards.withdraw(sender=challenger)
    assert tx.events.filter(rewards.Withdrawn) == [rewards.Withdrawn(challenger.address, expected)]
    assert token.balanceOf(challenger) == before + expected
    assert rewards.withdrawable(challenger) == 0


def test_withdraw_pays_the_poster_after_a_dismissed_dispute(
    setup, rewards, token, governance, node, challenger
):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, False, sender=governance)
    before = token.balanceOf(node)
    tx = rewards.withdraw(sender=node)
    assert tx.events.filter(rewards.Withdrawn) == [
        rewards.Withdrawn(node.address, PARAMS.challenge_bond)
    ]
    assert token.balanceOf(node) == before + PARAMS.challenge_bond


def test_withdraw_nothing_reverts(rewards, other):
    with ape.reverts(rewards.NothingToWithdraw, account=other.address):
        rewards.withdraw(sender=other)


def test_withdraw_twice_reverts(setup, rewards, governance, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    rewards.withdraw(sender=challenger)
    with ape.reverts(rewards.NothingToWithdraw, account=challenger.address):
        rewards.withdraw(sender=challenger)


def test_withdraw_works_while_paused(setup, rewards, token, governance, node, challenger):
    epoch_id = _posted(rewards, rewards.postEpoch(setup.model_id, ROOT, OPEN, "bafy", sender=node))
    rewards.challenge(epoch_id, "bafy-reason", sender=challenger)
    rewards.resolveChallenge(epoch_id, True, sender=governance)
    rewards.pause(sender=governance)
    before = token.balanceOf(challenger)
    rewards.withdraw(sender=challenger)
    assert token.balanceOf(challenger) == before + PARAMS.challenge_bond + PARAMS.slash_amount


# ---------------------------------------------------------------- redemptions fund the pool


def test_redemption_funds_the_pool_with_the_contributors_share(
    setup, rewards, payments, token, node, payer, protocol
):
    token.approve(payments, 100 * OPEN, sender=payer)
    payments.deposit(node, 100 * OPEN, sender=payer)
    voucher = Voucher(
        payer.address, node.address, setup.model_id, 100 * OPEN, chain.pending_timestamp + 3_600
    )
    signed = sign_voucher(payer.private_key, protocol.domain, voucher)
    tx = payments.redeem([signed.redemption_tuple()], (ROOT, 1, "bafy-receipts"), sender=node)
    share = 100 * OPEN * SPLIT[1] // 10_000
    assert tx.events.filter(rewards.PoolFunded) == [
        rewards.PoolFunded(setup.model_id, payments.address, share)
    ]
    assert rewards.pool(setup.model_id) == (POOL + share, POOL + share)
