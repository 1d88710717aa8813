"""An epoch's allocation: receipts paid exactly what their redemptions put in the pool, each
receipt's amount to the contributions its record names and the rest to the lineage by
training examples, integers summing to the epoch's total whatever the inputs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.attribution.corpus import Contribution
from backend.attribution.epoch import (
    EpochAllocation,
    EpochInputError,
    LineageContribution,
    ModelRun,
    PaidVoucher,
    RedemptionInput,
    allocate_epoch,
    allocate_receipt,
    contributors_amounts,
    receipt_payments,
    with_pool_extra,
)
from backend.attribution.epoch_report import (
    UsageProofInput,
    amounts_of,
    compare,
    report,
    to_bytes,
)
from backend.attribution.record import AttributionRecord, ContributionRecord
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.receipts import Receipt

NODE = "0x" + "ee" * 20
ALICE, BOB, CAROL = ("0x" + c * 40 for c in "abc")
PAYER, OTHER_PAYER = "0x" + "11" * 20, "0x" + "22" * 20
NODE_CHECKSUM = to_checksum_address(NODE)
A1, A2 = Contribution(1, 1, ALICE.lower()), Contribution(1, 2, ALICE.lower())
B, C = Contribution(1, 3, BOB.lower()), Contribution(2, 1, CAROL.lower())


def lineage_contribution(c: Contribution, examples: int) -> LineageContribution:
    return LineageContribution(Contribution(c.datanet_id, c.contribution_id,
                                      to_checksum_address(c.contributor)), examples)  # fmt: skip


LINEAGE = tuple(lineage_contribution(c, n) for c, n in ((A1, 3), (A2, 1), (B, 4), (C, 2)))


def receipt(payer: str, model: int, price: int, version: int = 1, n: int = 0) -> Receipt:
    return Receipt(
        request_hash=bytes([n]) * 32, payer=payer, node=NODE, model_id=model,
        adapter_version=version, tokens_in=5, tokens_out=7, price=price,
        output_hash=b"\x01" * 32, attribution_digest=b"\x00" * 32, voucher_cumulative=price,
        created_at=1_000 + n,
    )  # fmt: skip


def record(named: list[tuple[LineageContribution, int]], tail: int = 0, model: int = 1,
           version: int = 1) -> AttributionRecord:  # fmt: skip
    named_total = sum(share for _, share in named)
    return AttributionRecord(
        model_id=model, version=version, index="bafyindex", prompt_hash=b"\x02" * 32,
        answer_hash=b"\x03" * 32, answer_tokens=7, spans=(), covered_weight=0, total_weight=1,
        query_sketch=None,
        contributions=tuple(
            ContributionRecord(m.contribution.datanet_id, m.contribution.contribution_id,
                               m.contribution.contributor, 1, 0, share)
            for m, share in named
        ),
        span_mass=named_total, gradient_mass=0, unattributed=1_000_000 - named_total - tail,
        tail=tail,
    )  # fmt: skip


def test_a_pair_is_paid_across_its_receipts_by_price_and_an_unpaid_pair_earns_nothing() -> None:
    receipts = (receipt(PAYER, 1, 30, n=0), receipt(PAYER, 1, 10, n=1),
                receipt(OTHER_PAYER, 1, 50, n=2))  # fmt: skip
    # The redemption paid PAYER's pair 7 (a shortfall) and skipped OTHER_PAYER's voucher.
    redemption = RedemptionInput(
        1, receipts, (None,) * 3, (PaidVoucher(PAYER, 1, 7),), (ModelRun(1, 7, 2),)
    )
    paid = receipt_payments(redemption)
    assert paid == [5, 2, 0]  # 7 x 3/4 = 5.25 and 7 x 1/4 = 1.75: the larger remainder rounds up
    assert contributors_amounts(redemption, paid) == [1, 1, 0]  # 2 x 5/7, 2 x 2/7 → 1 and 1


def test_runs_follow_the_contract_and_each_pays_only_its_model() -> None:
    receipts = (receipt(PAYER, 1, 10, n=0), receipt(PAYER, 2, 10, n=1),
                receipt(OTHER_PAYER, 1, 20, n=2))  # fmt: skip
    vouchers = (
        PaidVoucher(PAYER, 1, 10),
        PaidVoucher(PAYER, 2, 10),
        PaidVoucher(OTHER_PAYER, 1, 20),
    )
    runs = (ModelRun(1, 10, 3), ModelRun(2, 10, 4), ModelRun(1, 20, 5))  # model 1 twice
    redemption = RedemptionInput(7, receipts, (None,) * 3, vouchers, runs)
    assert contributors_amounts(redemption, receipt_payments(redemption)) == [3, 4, 5]
    epoch = allocate_epoch(1, [redemption], lambda version: LINEAGE)
    assert [r.position for r in epoch.receipts] == [0, 2]
    assert epoch.total == 3 + 5  # model 2's share is another pool's


@pytest.mark.parametrize(
    ("runs", "why"),
    [
        ((ModelRun(1, 10, 3),), "1 payment splits for 2 runs"),
        ((ModelRun(1, 9, 3), ModelRun(2, 10, 4)), "is not its run of vouchers"),
        ((ModelRun(2, 10, 3), ModelRun(1, 10, 4)), "is not its run of vouchers"),
    ],
)
def test_splits_that_do_not_match_the_vouchers_are_refused(runs, why) -> None:
    receipts = (receipt(PAYER, 1, 10, n=0), receipt(PAYER, 2, 10, n=1))
    vouchers = (PaidVoucher(PAYER, 1, 10), PaidVoucher(PAYER, 2, 10))
    redemption = RedemptionInput(3, receipts, (None,) * 2, vouchers, runs)
    with pytest.raises(EpochInputError, match=why):
        contributors_amounts(redemption, receipt_payments(redemption))


def test_a_paid_pair_without_receipts_is_refused() -> None:
    redemption = RedemptionInput(
        4, (receipt(PAYER, 1, 10),), (None,), (PaidVoucher(OTHER_PAYER, 1, 10),),
        (ModelRun(1, 10, 2),),
    )  # fmt: skip
    with pytest.raises(EpochInputError, match="holds no receipt of theirs"):
        receipt_payments(redemption)


def test_named_shares_go_to_their_contributions_and_the_rest_by_training_examples() -> None:
    # B named with 60%, A1 with 30%, 10% unattributed: the 10% goes 3:1:4:2 over the lineage.
    r = record([(LINEAGE[2], 600_000), (LINEAGE[0], 300_000)])
    assert allocate_receipt(1_000_000, r, LINEAGE) == [330_000, 10_000, 640_000, 20_000]
    # No record: everything by training examples.
    assert allocate_receipt(10, None, LINEAGE) == [3, 1, 4, 2]
    # A record's tail (contributions beyond the named ones) is paid the same way.
    tailed = record([(LINEAGE[3], 500_000)], tail=500_000)
    assert allocate_receipt(20, tailed, LINEAGE) == [3, 1, 4, 12]


def test_a_record_naming_a_contribution_outside_the_lineage_is_refused() -> None:
    stranger = lineage_contribution(Contribution(9, 9, CAROL.lower()), 1)
    with pytest.raises(EpochInputError, match="not in the version's lineage"):
        allocate_receipt(10, record([(stranger, 1_000_000)]), LINEAGE)


def test_a_record_of_another_version_is_refused() -> None:
    redemption = RedemptionInput(
        5, (receipt(PAYER, 1, 10, version=2),), (record([], version=1),),
        (PaidVoucher(PAYER, 1, 10),), (ModelRun(1, 10, 2),),
    )  # fmt: skip
    with pytest.raises(EpochInputError, match="the record is of model 1 version 1"):
        allocate_epoch(1, [redemption], lambda version: LINEAGE)


def test_leaves_are_one_per_contributor_in_address_order_and_form_the_claim_tree() -> None:
    r = record([(LINEAGE[2], 600_000), (LINEAGE[0], 300_000)])
    redemption = RedemptionInput(
        6, (receipt(PAYER, 1, 100),), (r,), (PaidVoucher(PAYER, 1, 100),), (ModelRun(1, 100, 20),)
    )
    epoch = allocate_epoch(1, [redemption], lambda version: LINEAGE)
    # 20: B 60% + 10%x4/10, A1 30% + 10%x3/10, A2 10%x1/10, C 10%x2/10 → 12.8, 6.6, 0.2, 0.4
    assert epoch.by_contribution()[LINEAGE[2].contribution] == 13
    leaves = epoch.leaves()
    assert [(a.lower(), amount) for _, a, amount in leaves] == [
        (ALICE.lower(), 7), (BOB.lower(), 13)
    ]  # fmt: skip
    assert (
        epoch.tree().root == StandardMerkleTree.of(leaves, ("uint256", "address", "uint256")).root
    )


prices = st.integers(min_value=0, max_value=10**18)
shares_lists = st.lists(st.integers(0, 3), min_size=0, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from([PAYER, OTHER_PAYER]),
            st.sampled_from([1, 2]),
            prices,
            st.booleans(),
            shares_lists,
        ),
        min_size=1,
        max_size=8,
    ),
    contributors_bps=st.integers(0, 10_000),
)
def test_the_epoch_pays_exactly_what_the_runs_put_in_the_pool(data, contributors_bps) -> None:
    receipts = tuple(receipt(p, m, price, n=i) for i, (p, m, price, _, _) in enumerate(data))
    records = []
    for _, m, _, has_record, named in data:
        if not has_record:
            records.append(None)
            continue
        picked = sorted(set(named))
        each = 1_000_000 // (len(picked) + 1)
        records.append(record([(LINEAGE[k], each) for k in picked], model=m))
    # The node redeems every pair (its latest voucher pays the sum of its receipts' prices),
    # grouped by model as the contract forms runs.
    pairs: dict[tuple[str, int], int] = {}
    for r in receipts:
        pairs[(r.payer, r.model_id)] = pairs.get((r.payer, r.model_id), 0) + r.price
    vouchers = tuple(PaidVoucher(p, m, amount) for (p, m), amount in sorted(
        pairs.items(), key=lambda item: item[0][1]) if amount)  # fmt: skip
    runs: list[ModelRun] = []
    for v in vouchers:
        if runs and runs[-1].model_id == v.model_id:
            runs[-1] = replace(runs[-1], amount=runs[-1].amount + v.paid)
        else:
            runs.append(ModelRun(v.model_id, v.paid, 0))
    runs = [replace(r, contributors_share=r.amount * contributors_bps // 10_000 + (r.amount % 7))
            for r in runs]  # fmt: skip
    runs = [replace(r, contributors_share=min(r.contributors_share, r.amount)) for r in runs]
    redemption = RedemptionInput(1, receipts, tuple(records), vouchers, tuple(runs))
    for model in (1, 2):
        epoch = allocate_epoch(model, [redemption], lambda version: LINEAGE)
        expected = sum(r.contributors_share for r in runs if r.model_id == model)
        assert epoch.total == expected
        assert sum(epoch.by_contribution().values()) == expected
        assert sum(epoch.by_account().values()) == expected
        for r in epoch.receipts:
            assert sum(amount for _, amount in r.to_contributions) == r.contributors_amount
            assert all(amount > 0 for _, amount in r.to_contributions)


def test_the_report_restates_the_allocation_and_an_auditor_sees_a_shifted_percent() -> None:
    r = record([(LINEAGE[2], 600_000), (LINEAGE[0], 300_000)])
    redemption = RedemptionInput(
        6, (receipt(PAYER, 1, 10**18),), (r,), (PaidVoucher(PAYER, 1, 10**18),),
        (ModelRun(1, 10**18, 2 * 10**17),),
    )  # fmt: skip
    epoch = allocate_epoch(1, [redemption], lambda version: LINEAGE)
    proof = UsageProofInput(6, "bafyproof", b"\x09" * 32, "bafyrecords")
    document = report(epoch, [proof], {1: "bafyindex"})
    assert to_bytes(document) == to_bytes(json.loads(to_bytes(document)))  # canonical
    assert int(document["total"]) == 2 * 10**17 == sum(amounts_of(document).values())
    assert document["merkle_root"] == "0x" + epoch.tree().root.hex()
    assert document["receipts"][0]["record"] == "0x" + r.digest().hex()
    assert compare(amounts_of(document), epoch.by_account()) == []
    # An attributor that moves 1% of the epoch to itself is caught, account by account.
    shifted = dict(amounts_of(document))
    bob = next(a for a in shifted if a.lower() == BOB.lower())
    shifted[bob] -= 2 * 10**15
    shifted[NODE_CHECKSUM] = 2 * 10**15
    diffs = compare(shifted, epoch.by_account())
    assert [(d.account, d.delta) for d in diffs] == [
        (bob, -2 * 10**15), (NODE_CHECKSUM, 2 * 10**15)
    ]  # fmt: skip


def _one_receipt_epoch(price: int = 100, bps: int = 20) -> EpochAllocation:
    r = record([(LINEAGE[2], 600_000), (LINEAGE[0], 300_000)])
    redemption = RedemptionInput(
        6, (receipt(PAYER, 1, price),), (r,), (PaidVoucher(PAYER, 1, price),),
        (ModelRun(1, price, bps),),
    )  # fmt: skip
    return allocate_epoch(1, [redemption], lambda version: LINEAGE)


def test_the_pools_extra_follows_what_the_receipts_pay_each_contribution() -> None:
    epoch = _one_receipt_epoch()  # pays B 13, A1 6, A2 0 (rounded away), C 1 of 20
    weights = epoch.by_receipts()
    assert with_pool_extra(epoch, 0) == epoch and epoch.extra_total == 0
    funded = with_pool_extra(epoch, 1_000)
    assert funded.total == 1_020 and funded.receipts_total == 20 and funded.extra_total == 1_000
    # 1000 over weights 13:6:1 -> 650, 300, 50; nothing to a contribution the receipts left out
    assert dict(funded.extra) == {c: 50 * w for c, w in weights.items() if w}
    assert sum(funded.by_account().values()) == funded.total
    assert report(funded, [], {1: None})["extra"]["amount"] == "1000"
    with pytest.raises(EpochInputError, match="negative pool extra"):
        with_pool_extra(epoch, -1)
    unpaid = _one_receipt_epoch(bps=0)  # the receipt put nothing in the pool
    with pytest.raises(EpochInputError, match="7 extra over no receipt"):
        with_pool_extra(unpaid, 7)


@settings(max_examples=200, deadline=None)
@given(price=st.integers(1, 10**21), bps=st.integers(1, 10_000), extra=st.integers(0, 10**24))
def test_the_extra_is_split_exactly(price: int, bps: int, extra: int) -> None:
    epoch = _one_receipt_epoch(price, bps)
    if not epoch.receipts_total:
        return
    funded = with_pool_extra(epoch, extra)
    assert funded.extra_total == extra and funded.total == epoch.total + extra
    assert sum(funded.by_account().values()) == funded.total
    whole = epoch.receipts_total
    for contribution, part in funded.extra:  # within one wei of its exact proportion
        assert abs(part * whole - extra * epoch.by_receipts()[contribution]) < whole
