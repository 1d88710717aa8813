"""NodeRegistry: stake, endpoints, unbonding across the delay, activity, slasher, governance.

The deployed registry's slasher is the AttributionRewards contract (its successful slashes are
tested through the dispute path); the slashing arithmetic is tested on a fresh_nodes registry whose
slasher is an ordinary account.
"""

from __future__ import annotations

import ape
import pytest
from ape import chain

from backend.protocol.contracts import project

OPEN = 10**18
MIN_STAKE = 1_000 * OPEN
UNBONDING_DELAY = 7 * 86_400  # seconds
ZERO = "0x0000000000000000000000000000000000000000"


@pytest.fixture(scope="module", autouse=True)
def nodes_allowances(token, nodes, node, second_node) -> None:
    """`node` and `second_node` let the registry take their stake."""
    token.approve(nodes, 2**256 - 1, sender=node)
    token.approve(nodes, 2**256 - 1, sender=second_node)


# stake -----------------------------------------------------------------------------------


def test_stake_bonds_tokens_and_emits(nodes, token, node):
    balance = token.balanceOf(node)
    tx = nodes.stake(MIN_STAKE, sender=node)
    assert tx.events.filter(nodes.Staked) == [
        nodes.Staked(node=node.address, amount=MIN_STAKE, bonded=MIN_STAKE)
    ]
    assert tx.events.filter(token.Transfer) == [
        token.Transfer(node.address, nodes.address, MIN_STAKE)
    ]
    assert token.balanceOf(node) == balance - MIN_STAKE
    info = nodes.nodeInfo(node)
    assert (info.bonded, info.unbonding, info.unbondingUnlockAt) == (MIN_STAKE, 0, 0)


def test_stake_again_adds_to_bonded(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    tx = nodes.stake(5 * OPEN, sender=node)
    assert tx.events.filter(nodes.Staked) == [
        nodes.Staked(node=node.address, amount=5 * OPEN, bonded=MIN_STAKE + 5 * OPEN)
    ]
    assert nodes.nodeInfo(node).bonded == MIN_STAKE + 5 * OPEN


def test_stake_zero_reverts(nodes, node):
    with ape.reverts(nodes.NodeRegistryZeroAmount):
        nodes.stake(0, sender=node)


def test_stake_without_allowance_reverts(nodes, token, other):
    with ape.reverts(
        token.ERC20InsufficientAllowance, spender=nodes.address, allowance=0, needed=OPEN
    ):
        nodes.stake(OPEN, sender=other)


def test_stake_when_paused_reverts(nodes, governance, node):
    nodes.pause(sender=governance)
    with ape.reverts(nodes.EnforcedPause):
        nodes.stake(MIN_STAKE, sender=node)


def test_constructor_zero_token_reverts(governance):
    with ape.reverts(project().NodeRegistry.NodeRegistryZeroAddress):
        governance.deploy(project().NodeRegistry, ZERO, governance, MIN_STAKE, UNBONDING_DELAY)


# setEndpoint -----------------------------------------------------------------------------


def test_set_endpoint_stores_and_emits(nodes, node):
    url = "https://node.example.org/v1"
    tx = nodes.setEndpoint(url, sender=node)
    assert tx.events == [nodes.EndpointSet(node=node.address, endpoint=url)]
    assert nodes.nodeInfo(node).endpoint == url


def test_set_endpoint_at_max_length_succeeds(nodes, node):
    url = "https://" + "a" * 248
    nodes.setEndpoint(url, sender=node)
    assert nodes.nodeInfo(node).endpoint == url


def test_set_endpoint_too_long_reverts(nodes, node):
    with ape.reverts(nodes.EndpointTooLong, length=257, maxLength=256):
        nodes.setEndpoint("https://" + "a" * 249, sender=node)


def test_set_endpoint_when_paused_succeeds(nodes, governance, node):
    nodes.pause(sender=governance)
    nodes.setEndpoint("https://n", sender=node)
    assert nodes.nodeInfo(node).endpoint == "https://n"


# requestUnbonding / withdrawUnbonded ------------------------------------------------------


def test_request_unbonding_moves_stake_and_emits(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    now = chain.pending_timestamp
    chain.pending_timestamp = now
    tx = nodes.requestUnbonding(400 * OPEN, sender=node)
    unlock_at = now + UNBONDING_DELAY
    assert tx.events == [
        nodes.UnbondingRequested(node=node.address, amount=400 * OPEN, unlockAt=unlock_at)
    ]
    info = nodes.nodeInfo(node)
    assert (info.bonded, info.unbonding, info.unbondingUnlockAt) == (
        600 * OPEN,
        400 * OPEN,
        unlock_at,
    )


def test_request_unbonding_again_restarts_delay(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.requestUnbonding(100 * OPEN, sender=node)
    chain.pending_timestamp += 3 * 86_400
    later = chain.pending_timestamp
    chain.pending_timestamp = later
    nodes.requestUnbonding(200 * OPEN, sender=node)
    info = nodes.nodeInfo(node)
    assert info.unbonding == 300 * OPEN
    assert info.unbondingUnlockAt == later + UNBONDING_DELAY


def test_request_unbonding_zero_reverts(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    with ape.reverts(nodes.NodeRegistryZeroAmount):
        nodes.requestUnbonding(0, sender=node)


def test_request_unbonding_above_bonded_reverts(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    with ape.reverts(
        nodes.UnbondExceedsStake, node=node.address, bonded=MIN_STAKE, amount=MIN_STAKE + 1
    ):
        nodes.requestUnbonding(MIN_STAKE + 1, sender=node)


def test_withdraw_unbonded_before_delay_reverts(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.requestUnbonding(MIN_STAKE, sender=node)
    unlock_at = nodes.nodeInfo(node).unbondingUnlockAt
    attempt = unlock_at - 1
    chain.pending_timestamp = attempt
    with ape.reverts(
        nodes.UnbondingLocked, node=node.address, unlockAt=unlock_at, nowTimestamp=attempt
    ):
        nodes.withdrawUnbonded(sender=node)


def test_withdraw_unbonded_after_delay_pays_and_emits(nodes, token, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.requestUnbonding(300 * OPEN, sender=node)
    chain.pending_timestamp = nodes.nodeInfo(node).unbondingUnlockAt
    balance = token.balanceOf(node)
    tx = nodes.withdrawUnbonded(sender=node)
    assert tx.events.filter(nodes.Unbonded) == [
        nodes.Unbonded(node=node.address, amount=300 * OPEN)
    ]
    assert tx.events.filter(token.Transfer) == [
        token.Transfer(nodes.address, node.address, 300 * OPEN)
    ]
    assert token.balanceOf(node) == balance + 300 * OPEN
    info = nodes.nodeInfo(node)
    assert (info.bonded, info.unbonding, info.unbondingUnlockAt) == (700 * OPEN, 0, 0)


def test_withdraw_unbonded_nothing_reverts(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    with ape.reverts(nodes.NothingUnbonding, node=node.address):
        nodes.withdrawUnbonded(sender=node)


def test_withdraw_unbonded_twice_reverts(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.requestUnbonding(MIN_STAKE, sender=node)
    chain.pending_timestamp += UNBONDING_DELAY
    nodes.withdrawUnbonded(sender=node)
    with ape.reverts(nodes.NothingUnbonding, node=node.address):
        nodes.withdrawUnbonded(sender=node)


def test_withdraw_unbonded_when_paused_succeeds(nodes, token, governance, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.requestUnbonding(MIN_STAKE, sender=node)
    nodes.pause(sender=governance)
    chain.pending_timestamp += UNBONDING_DELAY
    balance = token.balanceOf(node)
    nodes.withdrawUnbonded(sender=node)
    assert token.balanceOf(node) == balance + MIN_STAKE


def test_request_unbonding_when_paused_succeeds(nodes, governance, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.pause(sender=governance)
    nodes.requestUnbonding(MIN_STAKE, sender=node)
    assert nodes.nodeInfo(node).unbonding == MIN_STAKE


# isActive --------------------------------------------------------------------------------


def test_is_active_false_without_stake(nodes, node):
    assert nodes.isActive(node) is False


def test_is_active_true_at_min_stake(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    assert nodes.isActive(node) is True


def test_is_active_false_below_min_stake(nodes, node):
    nodes.stake(MIN_STAKE - 1, sender=node)
    assert nodes.isActive(node) is False


def test_is_active_false_after_unbonding_below_min_stake(nodes, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.requestUnbonding(1, sender=node)
    assert nodes.isActive(node) is False


def test_is_active_follows_min_stake_changes(nodes, governance, node):
    nodes.stake(MIN_STAKE, sender=node)
    nodes.setMinStake(MIN_STAKE + 1, sender=governance)
    assert nodes.isActive(node) is False
    nodes.setMinStake(MIN_STAKE, sender=governance)
    assert nodes.isActive(node) is True


def test_is_active_false_with_zero_stake_and_zero_minimum(nodes, governance, node):
    nodes.setMinStake(0, sender=governance)
    assert nodes.isActive(node) is False
    nodes.stake(1, sender=node)
    assert nodes.isActive(node) is True


# slash and slasher -----------------------------------------------------------------------


def test_slasher_is_attribution_rewards_set_at_deployment(nodes, rewards, protocol):
    assert nodes.slasher() == rewards.address
    height = chain.blocks.height
    logs = list(nodes.SlasherSet.range(protocol.deployment.block, height + 1))
    assert [log.slasher for log in logs] == [rewards.address]


@pytest.mark.parametrize("caller", ["governance", "node", "other"])
def test_slash_by_non_slasher_reverts(request, nodes, node, second_node, caller):
    account = request.getfixturevalue(caller)
    nodes.stake(MIN_STAKE, sender=second_node)
    with ape.reverts(nodes.NotSlasher, caller=account.address):
        nodes.slash(second_node, MIN_STAKE, sender=account)
    assert nodes.nodeInfo(second_node).bonded == MIN_STAKE


def test_set_slasher_again_reverts_already_set(nodes, governance, rewards, other):
    with ape.reverts(nodes.SlasherAlreadySet, slasher=rewards.address):
        nodes.setSlasher(other, sender=governance)
    assert nodes.slasher() == rewards.address


def test_set_slasher_zero_reverts(nodes, governance):
    with ape.reverts(nodes.NodeRegistryZeroAddress):
        nodes.setSlasher(ZERO, sender=governance)


def test_set_slasher_by_non_owner_reverts(nodes, other):
    with ape.reverts(nodes.OwnableUnauthorizedAccount, account=other.address):
        nodes.setSlasher(other, sender=other)


def test_set_slasher_on_fresh_registry_sets_once(governance, token, other, node):
    fresh_nodes = governance.deploy(project().NodeRegistry, token, governance, MIN_STAKE, 60)
    assert fresh_nodes.slasher() == ZERO
    # Before a slasher is set nobody can slash, not even governance.
    with ape.reverts(fresh_nodes.NotSlasher, caller=governance.address):
        fresh_nodes.slash(node, 1, sender=governance)
    tx = fresh_nodes.setSlasher(other, sender=governance)
    assert tx.events == [fresh_nodes.SlasherSet(slasher=other.address)]
    assert fresh_nodes.slasher() == other.address
    with ape.reverts(fresh_nodes.SlasherAlreadySet, slasher=other.address):
        fresh_nodes.setSlasher(node, sender=governance)


# governance setters ----------------------------------------------------------------------


def test_parameters_set_at_deployment(nodes, protocol):
    assert nodes.minStake() == MIN_STAKE
    assert nodes.unbondingDelay() == UNBONDING_DELAY
    height = chain.blocks.height
    start = protocol.deployment.block
    assert [log.minStake for log in nodes.MinStakeSet.range(start, height + 1)] == [MIN_STAKE]
    assert [log.unbondingDelay for log in nodes.UnbondingDelaySet.range(start, height + 1)] == [
        UNBONDING_DELAY
    ]


def test_set_min_stake_stores_and_emits(nodes, governance):
    tx = nodes.setMinStake(5 * OPEN, sender=governance)
    assert tx.events == [nodes.MinStakeSet(minStake=5 * OPEN)]
    assert nodes.minStake() == 5 * OPEN


def test_set_min_stake_by_non_owner_reverts(nodes, node):
    with ape.reverts(nodes.OwnableUnauthorizedAccount, account=node.address):
        nodes.setMinStake(0, sender=node)
    assert nodes.minStake() == MIN_STAKE


def test_set_unbonding_delay_stores_and_emits(nodes, governance, node):
    tx = nodes.setUnbondingDelay(60, sender=governance)
    assert tx.events == [nodes.UnbondingDelaySet(unbondingDelay=60)]
    assert nodes.unbondingDelay() == 60
    nodes.stake(MIN_STAKE, sender=node)
    now = chain.pending_timestamp
    chain.pending_timestamp = now
    nodes.requestUnbonding(MIN_STAKE, sender=node)
    assert nodes.nodeInfo(node).unbondingUnlockAt == now + 60


@pytest.mark.parametrize("delay", [0, 59, 90 * 86_400 + 1, 2**64])
def test_set_unbonding_delay_out_of_bounds_reverts(nodes, governance, delay):
    """Issue 13, point 6: a zero delay let a poster unbond before a dispute; 2^64 locked every
    stake."""
    with ape.reverts(nodes.UnbondingDelayOutOfBounds, delay=delay, min=60, max=90 * 86_400):
        nodes.setUnbondingDelay(delay, sender=governance)
    assert nodes.unbondingDelay() == UNBONDING_DELAY


def test_set_unbonding_delay_by_non_owner_reverts(nodes, node):
    with ape.reverts(nodes.OwnableUnauthorizedAccount, account=node.address):
        nodes.setUnbondingDelay(0, sender=node)
    assert nodes.unbondingDelay() == UNBONDING_DELAY


@pytest.fixture
def fresh_nodes(governance, token, other, node):
    """A NodeRegistry whose slasher is the account `other`; `node` staked 1,000 and is
    unbonding 400 of it."""
    registry = governance.deploy(project().NodeRegistry, token, governance, MIN_STAKE, 60)
    registry.setSlasher(other, sender=governance)
    token.approve(registry, 2**256 - 1, sender=node)
    registry.stake(MIN_STAKE, sender=node)
    registry.requestUnbonding(400 * OPEN, sender=node)
    return registry


def test_slash_takes_bonded_first_and_pays_slasher(fresh_nodes, token, node, other):
    balance = token.balanceOf(other)
    tx = fresh_nodes.slash(node, 500 * OPEN, sender=other)
    assert tx.events.filter(fresh_nodes.Slashed) == [
        fresh_nodes.Slashed(node=node.address, amount=500 * OPEN, slasher=other.address)
    ]
    assert tx.events.filter(token.Transfer) == [
        token.Transfer(fresh_nodes.address, other.address, 500 * OPEN)
    ]
    assert token.balanceOf(other) == balance + 500 * OPEN
    info = fresh_nodes.nodeInfo(node)
    assert (info.bonded, info.unbonding) == (100 * OPEN, 400 * OPEN)


def test_slash_reaches_unbonding_stake(fresh_nodes, node, other):
    fresh_nodes.slash(node, 800 * OPEN, sender=other)
    info = fresh_nodes.nodeInfo(node)
    assert (info.bonded, info.unbonding) == (0, 200 * OPEN)


def test_slash_is_capped_at_what_the_node_holds(fresh_nodes, token, node, other):
    balance = token.balanceOf(other)
    tx = fresh_nodes.slash(node, 5 * MIN_STAKE, sender=other)
    assert tx.events.filter(fresh_nodes.Slashed) == [
        fresh_nodes.Slashed(node=node.address, amount=MIN_STAKE, slasher=other.address)
    ]
    assert token.balanceOf(other) == balance + MIN_STAKE
    info = fresh_nodes.nodeInfo(node)
    assert (info.bonded, info.unbonding) == (0, 0)
    assert fresh_nodes.isActive(node) is False


def test_slash_node_without_stake_moves_nothing(fresh_nodes, token, other, second_node):
    tx = fresh_nodes.slash(second_node, OPEN, sender=other)
    assert tx.events == [
        fresh_nodes.Slashed(node=second_node.address, amount=0, slasher=other.address)
    ]


# stake holds and disputes (issue 13, point 2) -----------------------------------------------


@pytest.mark.parametrize("caller", ["governance", "node", "other"])
def test_hold_and_disputes_by_non_slasher_revert(request, nodes, node, caller):
    account = request.getfixturevalue(caller)
    for call in (
        lambda: nodes.holdStake(node, 2**40, sender=account),
        lambda: nodes.openDispute(node, sender=account),
        lambda: nodes.closeDispute(node, sender=account),
    ):
        with ape.reverts(nodes.NotSlasher, caller=account.address):
            call()
    assert nodes.nodeInfo(node).heldUntil == 0


def test_hold_stake_only_extends_and_returns_the_slashable_stake(fresh_nodes, node, other):
    tx = fresh_nodes.holdStake(node, 5_000, sender=other)
    assert tx.return_value == MIN_STAKE  # 600 bonded + 400 unbonding
    assert tx.events == [fresh_nodes.StakeHeldUntil(node=node.address, heldUntil=5_000)]
    tx = fresh_nodes.holdStake(node, 4_000, sender=other)  # an earlier end never shortens it
    assert tx.events == [fresh_nodes.StakeHeldUntil(node=node.address, heldUntil=5_000)]
    assert fresh_nodes.nodeInfo(node).heldUntil == 5_000


def test_held_stake_cannot_be_withdrawn_until_the_hold_ends(fresh_nodes, token, node, other):
    until = chain.pending_timestamp + 3_600
    fresh_nodes.holdStake(node, until, sender=other)
    chain.pending_timestamp += 60  # the 60 s unbonding delay has passed
    with ape.reverts(fresh_nodes.StakeHeld, node=node.address, heldUntil=until, openDisputes=0):
        fresh_nodes.withdrawUnbonded(sender=node)
    chain.pending_timestamp = until
    before = token.balanceOf(node)
    fresh_nodes.withdrawUnbonded(sender=node)
    assert token.balanceOf(node) == before + 400 * OPEN


def test_open_disputes_count_and_hold_the_stake(fresh_nodes, node, other):
    assert fresh_nodes.openDispute(node, sender=other).events == [
        fresh_nodes.DisputeOpened(node=node.address, openDisputes=1)
    ]
    fresh_nodes.openDispute(node, sender=other)
    chain.pending_timestamp += 3_600
    assert fresh_nodes.closeDispute(node, sender=other).events == [
        fresh_nodes.DisputeClosed(node=node.address, openDisputes=1)
    ]
    with ape.reverts(fresh_nodes.StakeHeld, node=node.address, heldUntil=0, openDisputes=1):
        fresh_nodes.withdrawUnbonded(sender=node)
    fresh_nodes.closeDispute(node, sender=other)
    fresh_nodes.withdrawUnbonded(sender=node)


def test_close_dispute_without_one_reverts(fresh_nodes, node, other):
    with ape.reverts(fresh_nodes.NoOpenDispute, node=node.address):
        fresh_nodes.closeDispute(node, sender=other)


@pytest.mark.parametrize("min_stake", [1_000_000 * OPEN + 1, 2**128, 2**256 - 1])
def test_set_min_stake_above_bound_reverts(nodes, governance, min_stake):
    """Issue 13, point 6: a huge minimum deactivates every node and stops every redemption."""
    with ape.reverts(nodes.MinStakeOutOfBounds, minStake=min_stake, max=1_000_000 * OPEN):
        nodes.setMinStake(min_stake, sender=governance)
    nodes.setMinStake(1_000_000 * OPEN, sender=governance)
    assert nodes.minStake() == 1_000_000 * OPEN


def test_constructor_min_stake_above_bound_reverts(governance, token):
    with ape.reverts(project().NodeRegistry.MinStakeOutOfBounds):
        governance.deploy(project().NodeRegistry, token, governance, 2**200, 60)
