"""The hardening projections (issue 13) against a real anvil: a contribution withdrawn after
the review timeout and its CID contributed again, a node's stake held by an epoch's challenge
window and by an open dispute, and an epoch swept back to its pool after its claim period."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from backend.protocol.merkle import StandardMerkleTree
from tests.indexing import new_indexer
from tests.protocol_history import CLAIM_TYPES, OPEN, History, contribute

DAY = 86_400


@dataclass(frozen=True)
class Hardening:
    withdrawn_id: int  # the contribution taken back after the review timeout
    recontributed_id: int  # the same CID contributed again, by another contributor
    held_epoch: int  # posted last: the node's stake is held until its window ends
    challenged_epoch: int  # challenged and left unresolved: one open dispute


def _advance(history: History, seconds: int) -> None:
    w3 = history.protocol.w3
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


@pytest.fixture(scope="module")
def hardening(chain) -> Hardening:
    """After the scripted history: Bob contributes a file nobody reviews and takes it back 30
    days later; Alice contributes the same file; epoch 1 (Bob never claimed his leaf) is swept
    after its 180-day claim period; the node posts two epochs, one of which is challenged."""
    _, h = chain
    p, r = h.protocol, h.roles
    datanets, rewards = p["DatanetRegistry"], p["AttributionRewards"]
    contribute(h, r.bob, ["orphan"])
    withdrawn = datanets.functions.contributionCount().call()
    _advance(h, 30 * DAY)
    p.transact(r.bob, datanets.functions.withdrawContribution(withdrawn))
    contribute(h, r.alice, ["orphan"])
    _advance(h, 180 * DAY)
    p.transact(r.payer, rewards.functions.sweepExpired(1))
    p.transact(r.developer, rewards.functions.fundPool(1, 2 * OPEN))
    tree = StandardMerkleTree.of([(0, r.alice, OPEN)], CLAIM_TYPES)
    p.transact(r.node, rewards.functions.postEpoch(1, tree.root, OPEN, "bafkreport3"))
    challenged = rewards.functions.epochCount().call()
    p.transact(r.challenger, rewards.functions.challenge(challenged, "bafkreason3"))
    p.transact(r.node, rewards.functions.postEpoch(1, tree.root, OPEN, "bafkreport4"))
    return Hardening(withdrawn, withdrawn + 1, challenged + 1, challenged)


@pytest.fixture(scope="module")
def indexed(chain, hardening, decoders, tmp_path_factory) -> Iterator[sqlite3.Connection]:
    anvil, history = chain
    indexer = new_indexer(
        tmp_path_factory.mktemp("hardening") / "index.db", anvil.url, history, decoders
    )
    indexer.sync_once()
    yield indexer.conn
    indexer.close()


def test_a_withdrawn_contribution_and_its_cid_contributed_again(chain, hardening, indexed):
    datanets = chain[1].protocol["DatanetRegistry"].functions
    rows = indexed.execute(
        "SELECT id, contributor, cid, status, withdrawn_at FROM contributions"
        " WHERE id IN (?, ?) ORDER BY id",
        (hardening.withdrawn_id, hardening.recontributed_id),
    ).fetchall()
    r = chain[1].roles
    (withdrawn, again) = [tuple(row) for row in rows]
    assert withdrawn[:4] == (hardening.withdrawn_id, r.bob, again[2], "withdrawn")
    assert withdrawn[4] is not None
    assert again[:4] == (hardening.recontributed_id, r.alice, withdrawn[2], "pending")
    assert datanets.contribution(hardening.withdrawn_id).call()[5] == 4  # Withdrawn


def test_the_swept_epoch_and_its_pool_match_the_chain(chain, hardening, indexed):
    rewards = chain[1].protocol["AttributionRewards"].functions
    status, swept, claim_ends_at, challenge_ends_at = indexed.execute(
        "SELECT status, swept, claim_ends_at, challenge_ends_at FROM epochs WHERE id = 1"
    ).fetchone()
    on_chain = rewards.epoch(1).call()
    assert status == "expired"
    assert int(swept) == on_chain[1] - on_chain[2] == OPEN // 2  # Bob's leaf, never claimed
    assert claim_ends_at == challenge_ends_at + rewards.claimPeriod().call()
    (unallocated,) = indexed.execute("SELECT unallocated FROM pools WHERE model_id = 1").fetchone()
    assert int(unallocated) == rewards.pool(1).call()[0]


def test_the_node_stake_hold_and_open_disputes_match_the_chain(chain, hardening, indexed):
    nodes = chain[1].protocol["NodeRegistry"].functions
    r = chain[1].roles
    held_until, disputes = indexed.execute(
        "SELECT held_until, open_disputes FROM nodes WHERE address = ?", (r.node,)
    ).fetchone()
    info = nodes.nodeInfo(r.node).call()
    assert (held_until, disputes) == (info[3], info[4]) == (held_until, 1)
    (ends_at,) = indexed.execute(
        "SELECT challenge_ends_at FROM epochs WHERE id = ?", (hardening.held_epoch,)
    ).fetchone()
    assert held_until == ends_at
