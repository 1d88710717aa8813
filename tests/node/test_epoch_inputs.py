"""Attribution epochs on a real chain and store: the public inputs (the node's redemptions of a
model, each receipt paid exactly what its redemption put in the pool, proofs covered by an
epoch left out until that epoch is rejected), the attributor posting, and the auditor passing an
honest epoch and catching a forged one, which is challenged and slashed."""

from __future__ import annotations

from eth_utils import to_checksum_address

from backend.attribution.claims import owed_to
from backend.attribution.corpus import Contribution
from backend.attribution.epoch import LineageContribution, allocate_epoch, with_pool_extra
from backend.attribution.epoch_audit import audit_epoch
from backend.attribution.epoch_inputs import next_epoch_inputs, pool_extra_available
from backend.attribution.epoch_report import report, to_bytes
from backend.attribution.epoch_service import post_epoch, prepare_epoch
from backend.protocol.merkle import StandardMerkleTree
from backend.storage.local import DirectoryStore
from inference_node.payments import Redeemer, VoucherVerifier
from tests.node.conftest import MODEL_ID, World
from tests.node.test_payments import price, serve, voucher


def _lineage(world: World) -> tuple[LineageContribution, ...]:
    r = world.roles
    owners = ((1, r.alice), (2, r.alice), (3, r.bob))  # the world's Datanet 1 contributions
    return tuple(
        LineageContribution(Contribution(1, c, to_checksum_address(a)), 1) for c, a in owners
    )


def test_the_next_epoch_pays_every_uncovered_redemption_exactly(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    serve(verifier, voucher(world, 3 * price()), 2 * price(), 2 * price())
    first = redeemer.redeem_now()
    serve(verifier, voucher(world, 4 * price()), price(), price())
    second = redeemer.redeem_now()
    assert first is not None and second is not None

    redemptions, proofs = next_epoch_inputs(world.protocol, store.get, MODEL_ID)
    assert [p.proof_id for p in proofs] == [first.proof_id, second.proof_id]
    assert [len(r.receipts) for r in redemptions] == [2, 1]
    lineage = _lineage(world)
    epoch = allocate_epoch(MODEL_ID, redemptions, lambda version: lineage)
    rewards = world.protocol["AttributionRewards"].functions
    funded = rewards.pool(MODEL_ID).call()[1]
    assert epoch.total == funded  # every wei the redemptions put in the pool, dust included
    assert [r.paid for r in epoch.receipts] == [price(), 2 * price(), price()]

    # Posted, the epoch covers both proofs; rejected, they are paid again by the next one.
    document = report(epoch, proofs, {1: None})
    cid = store.put(to_bytes(document))
    r = world.roles
    root = bytes.fromhex(document["merkle_root"][2:])
    world.transact(r.node, rewards.postEpoch(MODEL_ID, root, epoch.total, cid))
    assert next_epoch_inputs(world.protocol, store.get, MODEL_ID) == ([], [])
    token = world.protocol["OpenToken"].functions
    world.transact(r.bob, token.approve(world.protocol["AttributionRewards"].address, 2**256 - 1))
    epoch_id = rewards.epochCount().call()
    world.transact(r.bob, rewards.challenge(epoch_id, "bafkreason"))
    world.transact(r.governance, rewards.resolveChallenge(epoch_id, True))
    again, _ = next_epoch_inputs(world.protocol, store.get, MODEL_ID)
    assert [x.usage_proof_id for x in again] == [first.proof_id, second.proof_id]


def _serve_and_redeem(world: World, verifier: VoucherVerifier, redeemer: Redeemer) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    serve(verifier, voucher(world, 3 * price()), 2 * price(), 2 * price())
    assert redeemer.redeem_now() is not None


def test_an_honest_epoch_passes_its_audit_and_pays_the_claims(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    _serve_and_redeem(world, verifier, redeemer)
    lineage = _lineage(world)
    prepared = prepare_epoch(world.protocol, store, MODEL_ID, lambda version: (lineage, None))
    assert prepared is not None
    r = world.roles
    epoch_id, cid = post_epoch(
        world.protocol, store, lambda call: world.transact(r.node, call), prepared
    )
    assert store.get(cid) == to_bytes(prepared.document)
    audit = audit_epoch(world.protocol, store, epoch_id, lambda m, v: (lineage, None))
    assert audit.passed, audit.evidence()
    assert audit.recomputed_total == prepared.total == audit.posted_total
    # Nothing is left for a second epoch until new redemptions come.
    assert prepare_epoch(world.protocol, store, MODEL_ID, lambda v: (lineage, None)) is None
    # Alice (two contributions of three, one example each) is paid 2/3 of the total.
    alice = next(row for row in prepared.document["contributors"] if row["account"] == r.alice)
    assert abs(int(alice["amount"]) - 2 * prepared.total // 3) <= 1

    # What Alice is owed, with proofs rebuilt from the report: claimable after the window.
    (owed,) = owed_to(world.protocol, store.get, r.alice)
    assert (owed.epoch_id, owed.amount, owed.claimed, owed.claimable_now) == (
        epoch_id, int(alice["amount"]), False, False
    )  # fmt: skip
    window = world.protocol["AttributionRewards"].functions.challengeWindow().call()
    world.w3.provider.make_request("evm_increaseTime", [window])
    world.w3.provider.make_request("evm_mine", [])
    (owed,) = owed_to(world.protocol, store.get, r.alice)
    assert owed.claimable_now
    token = world.protocol["OpenToken"].functions
    before = token.balanceOf(r.alice).call()
    rewards = world.protocol["AttributionRewards"].functions
    world.transact(
        r.bob, rewards.claim(epoch_id, owed.index, owed.account, owed.amount, owed.proof)
    )  # anyone may send the claim; Alice is paid
    assert token.balanceOf(r.alice).call() == before + owed.amount
    (owed,) = owed_to(world.protocol, store.get, r.alice)
    assert owed.claimed and not owed.claimable_now


def test_an_attributor_that_shifts_one_percent_to_itself_is_caught_and_slashed(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    _serve_and_redeem(world, verifier, redeemer)
    lineage = _lineage(world)
    honest = prepare_epoch(world.protocol, store, MODEL_ID, lambda version: (lineage, None))
    assert honest is not None
    r = world.roles
    # The attributor takes 1% of Alice's amount for itself and posts a tree and report saying so.
    rows = {row["account"]: int(row["amount"]) for row in honest.document["contributors"]}
    stolen = honest.total // 100
    rows[r.alice] -= stolen
    rows[r.node] = stolen
    leaves = [(i, a, amount) for i, (a, amount) in enumerate(sorted(rows.items()))]
    tree = StandardMerkleTree.of(leaves, ("uint256", "address", "uint256"))
    forged = dict(honest.document)
    forged["contributors"] = [{"account": a, "amount": str(v), "contributions": []}
                              for a, v in sorted(rows.items())]  # fmt: skip
    forged["leaves"] = [[i, a, str(v)] for i, a, v in leaves]
    forged["merkle_root"] = "0x" + tree.root.hex()
    rewards = world.protocol["AttributionRewards"].functions
    world.transact(r.node, rewards.postEpoch(MODEL_ID, tree.root, honest.total,
                                             store.put(to_bytes(forged))))  # fmt: skip
    epoch_id = rewards.epochCount().call()

    audit = audit_epoch(world.protocol, store, epoch_id, lambda m, v: (lineage, None))
    assert not audit.passed
    assert {(d.account, d.delta) for d in audit.differences} == {
        (r.alice, -stolen), (r.node, stolen)
    }  # fmt: skip
    evidence = store.put(to_bytes(audit.evidence()))
    token = world.protocol["OpenToken"].functions
    world.transact(r.bob, token.approve(world.protocol["AttributionRewards"].address, 2**256 - 1))
    world.transact(r.bob, rewards.challenge(epoch_id, evidence))
    stake = world.protocol["NodeRegistry"].functions.nodeInfo(r.node).call()[0]
    resolved = world.transact(r.governance, rewards.resolveChallenge(epoch_id, True))
    assert resolved["status"] == 1
    after = world.protocol["NodeRegistry"].functions.nodeInfo(r.node).call()[0]
    assert stake - after == rewards.slashAmount().call()
    # The honest epoch can now be posted over the same redemptions.
    again = prepare_epoch(world.protocol, store, MODEL_ID, lambda version: (lineage, None))
    assert again is not None and again.total == honest.total


def test_an_attributor_that_lists_a_redemption_twice_is_caught(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    """Paying one redemption twice in an epoch would drain the pool's other funds: the
    auditor pays each listed proof once and names the duplicate."""
    _serve_and_redeem(world, verifier, redeemer)
    lineage = _lineage(world)
    redemptions, proofs = next_epoch_inputs(world.protocol, store.get, MODEL_ID)
    doubled = allocate_epoch(MODEL_ID, redemptions * 2, lambda version: lineage)
    r = world.roles
    rewards = world.protocol["AttributionRewards"]
    token = world.protocol["OpenToken"].functions
    world.transact(r.developer, token.approve(rewards.address, doubled.total))
    world.transact(r.developer, rewards.functions.fundPool(MODEL_ID, doubled.total))
    document = report(doubled, proofs * 2, {1: None})
    world.transact(r.node, rewards.functions.postEpoch(
        MODEL_ID, doubled.tree().root, doubled.total, store.put(to_bytes(document))
    ))  # fmt: skip
    epoch_id = rewards.functions.epochCount().call()
    audit = audit_epoch(world.protocol, store, epoch_id, lambda m, v: (lineage, None))
    assert not audit.passed
    assert audit.problems == [f"usage proof {proofs[0].proof_id} is listed 2 times"]
    assert 2 * audit.recomputed_total == audit.posted_total


def test_funds_put_in_the_pool_directly_are_paid_by_the_next_epoch_as_its_receipts_are(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    """A sponsor funds the model's pool (fundPool); the next epoch pays that extra over the
    contributions its receipts pay, in their proportion; the auditor recomputes the extra
    available from events alone and agrees; a report that pays more extra than was available
    (funds owed to later redemptions) is caught."""
    r = world.roles
    rewards = world.protocol["AttributionRewards"]
    token = world.protocol["OpenToken"].functions
    sponsored = 3 * 10**18 + 7
    world.transact(r.developer, token.approve(rewards.address, 2**256 - 1))
    world.transact(r.developer, rewards.functions.fundPool(MODEL_ID, sponsored))
    lineage = _lineage(world)
    # Funds alone, without receipts to weigh them by, wait for an epoch that has some.
    assert prepare_epoch(world.protocol, store, MODEL_ID, lambda v: (lineage, None)) is None
    _serve_and_redeem(world, verifier, redeemer)
    assert pool_extra_available(world.protocol, store.get, MODEL_ID) == sponsored
    prepared = prepare_epoch(world.protocol, store, MODEL_ID, lambda v: (lineage, None))
    assert prepared is not None
    allocation = prepared.allocation
    assert allocation.extra_total == sponsored
    assert prepared.total == rewards.functions.pool(MODEL_ID).call()[0]  # the whole pool
    weights = allocation.by_receipts()
    for contribution, part in allocation.extra:
        exact = sponsored * weights[contribution]
        assert abs(part * allocation.receipts_total - exact) < allocation.receipts_total
    assert prepared.document["extra"]["amount"] == str(sponsored)

    epoch_id, _ = post_epoch(
        world.protocol, store, lambda call: world.transact(r.node, call), prepared
    )
    audit = audit_epoch(world.protocol, store, epoch_id, lambda m, v: (lineage, None))
    assert audit.passed, audit.evidence()
    assert rewards.functions.pool(MODEL_ID).call()[0] == 0
    assert pool_extra_available(world.protocol, store.get, MODEL_ID) == 0  # paid once

    # Two new redemptions and 5 wei of sponsorship: an attributor that pays the first
    # redemption and, as "extra", the second one's funds (leaving nothing for its receipts) is
    # caught, from events alone (no historical state needed).
    world.transact(r.developer, rewards.functions.fundPool(MODEL_ID, 5))
    serve(verifier, voucher(world, 4 * price()), price(), price())
    assert redeemer.redeem_now() is not None
    serve(verifier, voucher(world, 6 * price()), 2 * price(), 2 * price())
    assert redeemer.redeem_now() is not None
    redemptions, proofs = next_epoch_inputs(world.protocol, store.get, MODEL_ID)
    assert len(redemptions) == 2
    first = allocate_epoch(MODEL_ID, redemptions[:1], lambda version: lineage)
    unallocated = rewards.functions.pool(MODEL_ID).call()[0]
    greedy = with_pool_extra(first, unallocated - first.total)
    assert greedy.extra_total > 5
    document = report(greedy, proofs[:1], {1: None})
    world.transact(r.node, rewards.functions.postEpoch(
        MODEL_ID, greedy.tree().root, greedy.total, store.put(to_bytes(document))
    ))  # fmt: skip
    audit = audit_epoch(world.protocol, store, epoch_id + 1, lambda m, v: (lineage, None))
    assert not audit.passed
    assert audit.problems == [f"the report pays {greedy.extra_total} of pool extra; 5 was "
                              f"available before the epoch"]  # fmt: skip
    assert audit.differences == []  # the split itself follows the rule: the amount does not


def test_funds_arriving_between_prepare_and_post_wait_for_the_next_epoch(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    """A sponsor's fundPool lands after the attributor prepared its epoch (front-running its
    post): the honest epoch still passes its audit, and the late funds are paid by the next."""
    r = world.roles
    rewards = world.protocol["AttributionRewards"]
    token = world.protocol["OpenToken"].functions
    world.transact(r.developer, token.approve(rewards.address, 2**256 - 1))
    world.transact(r.developer, rewards.functions.fundPool(MODEL_ID, 11))
    _serve_and_redeem(world, verifier, redeemer)
    lineage = _lineage(world)
    prepared = prepare_epoch(world.protocol, store, MODEL_ID, lambda v: (lineage, None))
    assert prepared is not None and prepared.allocation.extra_total == 11
    world.transact(r.developer, rewards.functions.fundPool(MODEL_ID, 13))  # lands first
    epoch_id, _ = post_epoch(
        world.protocol, store, lambda call: world.transact(r.node, call), prepared
    )
    audit = audit_epoch(world.protocol, store, epoch_id, lambda m, v: (lineage, None))
    assert audit.passed, audit.evidence()
    assert rewards.functions.pool(MODEL_ID).call()[0] == 13
    assert pool_extra_available(world.protocol, store.get, MODEL_ID) == 13
