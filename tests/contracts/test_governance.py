"""Governed: the two-step transferable owner of every registry and its pause switch."""

from __future__ import annotations

import ape
import pytest

GOVERNED = ("datanets", "models", "nodes", "rewards", "payments")
ZERO = "0x0000000000000000000000000000000000000000"


@pytest.fixture(params=GOVERNED)
def governed(request, protocol):
    """Each contract inheriting Governed, in turn."""
    return getattr(protocol, request.param)


def test_renouncing_ownership_is_impossible(governed, governance):
    """Issue 13, point 6: renounceOwnership left challenged epochs unresolvable forever."""
    with ape.reverts(governed.RenounceDisabled):
        governed.renounceOwnership(sender=governance)
    assert governed.owner() == governance.address


def test_owner_is_governance_at_deployment(governed, governance):
    assert governed.owner() == governance.address
    assert governed.pendingOwner() == ZERO
    assert governed.paused() is False


def test_pause_emits_paused_and_sets_paused(governed, governance):
    tx = governed.pause(sender=governance)
    assert tx.events == [governed.Paused(account=governance.address)]
    assert governed.paused() is True


def test_unpause_emits_unpaused_and_clears_paused(governed, governance):
    governed.pause(sender=governance)
    tx = governed.unpause(sender=governance)
    assert tx.events == [governed.Unpaused(account=governance.address)]
    assert governed.paused() is False


def test_pause_when_paused_reverts_enforced_pause(governed, governance):
    governed.pause(sender=governance)
    with ape.reverts(governed.EnforcedPause):
        governed.pause(sender=governance)


def test_unpause_when_not_paused_reverts_expected_pause(governed, governance):
    with ape.reverts(governed.ExpectedPause):
        governed.unpause(sender=governance)


def test_pause_by_non_owner_reverts_unauthorized(governed, other):
    with ape.reverts(governed.OwnableUnauthorizedAccount, account=other.address):
        governed.pause(sender=other)


def test_unpause_by_non_owner_reverts_unauthorized(governed, governance, other):
    governed.pause(sender=governance)
    with ape.reverts(governed.OwnableUnauthorizedAccount, account=other.address):
        governed.unpause(sender=other)
    assert governed.paused() is True


def test_transfer_ownership_sets_pending_owner_only(datanets, governance, other):
    tx = datanets.transferOwnership(other, sender=governance)
    assert tx.events == [
        datanets.OwnershipTransferStarted(previousOwner=governance.address, newOwner=other.address)
    ]
    assert datanets.pendingOwner() == other.address
    assert datanets.owner() == governance.address
    # Until accepted, the offered owner has no power.
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=other.address):
        datanets.pause(sender=other)


def test_accept_ownership_by_pending_owner_transfers(datanets, governance, other):
    datanets.transferOwnership(other, sender=governance)
    tx = datanets.acceptOwnership(sender=other)
    assert tx.events == [
        datanets.OwnershipTransferred(previousOwner=governance.address, newOwner=other.address)
    ]
    assert datanets.owner() == other.address
    assert datanets.pendingOwner() == ZERO
    datanets.pause(sender=other)
    assert datanets.paused() is True
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=governance.address):
        datanets.unpause(sender=governance)


def test_accept_ownership_by_other_reverts_unauthorized(datanets, governance, other, curator):
    datanets.transferOwnership(other, sender=governance)
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=curator.address):
        datanets.acceptOwnership(sender=curator)
    assert datanets.owner() == governance.address


def test_accept_ownership_without_offer_reverts_unauthorized(datanets, other):
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=other.address):
        datanets.acceptOwnership(sender=other)


def test_transfer_ownership_again_replaces_pending_owner(datanets, governance, other, curator):
    datanets.transferOwnership(other, sender=governance)
    datanets.transferOwnership(curator, sender=governance)
    assert datanets.pendingOwner() == curator.address
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=other.address):
        datanets.acceptOwnership(sender=other)


def test_transfer_ownership_by_non_owner_reverts_unauthorized(datanets, other):
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=other.address):
        datanets.transferOwnership(other, sender=other)
    assert datanets.pendingOwner() == ZERO


def test_renounce_ownership_by_non_owner_reverts_unauthorized(datanets, governance, other):
    with ape.reverts(datanets.OwnableUnauthorizedAccount, account=other.address):
        datanets.renounceOwnership(sender=other)
    assert datanets.owner() == governance.address
