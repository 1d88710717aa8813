"""An attribution epoch's allocation: what each contributor is owed for the paid answers of a
model's redemptions, in integer OPEN wei, and the report anyone can recompute it from.

The rule (docs/attribution-epochs.md), each step exact in integers:

1. A redemption pays each (payer, model) pair ``paid`` (its ``VoucherRedeemed`` event); the
   pair's receipts in the usage proof's log share it in proportion to their prices. A pair the
   redemption did not pay (its voucher was skipped) earns its receipts nothing: they were
   served, not paid.
2. The contract splits each run of consecutive paid vouchers of one model once
   (``PaymentSplit``); the run's contributors' share, rounding dust included, is split among the
   run's receipts in proportion to what each was paid. So the receipts of an epoch carry exactly
   what the redemptions put in the model's pool.
3. A receipt's contributors' amount goes to contributions: each contribution its attribution
   record names gets ``amount * share / 10^6``; the record's ``tail`` and ``unattributed`` parts
   (and the whole amount of a receipt without a record) go to every contribution of the model
   version's lineage in proportion to its training examples: the data trained the model as a
   whole even where no single answer points at it.
4. Contributions are paid to their contributors: amounts are summed per address, and the epoch
   pays one leaf ``(index, account, amount)`` per address, in address order.

Every split rounds by largest remainder (ties to the earlier item), so each total is paid
exactly, and the report's sums equal the epoch's total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from eth_utils import to_checksum_address

from backend.attribution.corpus import Contribution
from backend.attribution.record import AttributionRecord
from backend.attribution.shares import SCALE
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.receipts import Receipt

CLAIM_TYPES = ("uint256", "address", "uint256")  # AttributionRewards' leaves


class EpochInputError(ValueError):
    """Inputs that do not fit together (a run the vouchers do not add up to, a record of
    another model); the message names the usage proof and the item."""


@dataclass(frozen=True)
class LineageContribution:
    """A contribution of a model version's lineage and how many training examples it gave."""

    contribution: Contribution
    examples: int


Lineage = tuple[LineageContribution, ...]


@dataclass(frozen=True)
class PaidVoucher:
    """A ``VoucherRedeemed`` event of the redemption (those with ``paid`` > 0, in log order)."""

    payer: str
    model_id: int
    paid: int


@dataclass(frozen=True)
class ModelRun:
    """A ``PaymentSplit`` event of the redemption, in log order."""

    model_id: int
    amount: int
    contributors_share: int


@dataclass(frozen=True)
class RedemptionInput:
    """One usage proof and what its redemption paid: the receipts of its log, in log order,
    and their verified attribution records (None where a receipt has none)."""

    usage_proof_id: int
    receipts: tuple[Receipt, ...]
    records: tuple[AttributionRecord | None, ...]
    vouchers: tuple[PaidVoucher, ...]
    runs: tuple[ModelRun, ...]

    def __post_init__(self) -> None:
        if len(self.records) != len(self.receipts):
            raise EpochInputError(
                f"usage proof {self.usage_proof_id}: {len(self.records)} records for "
                f"{len(self.receipts)} receipts"
            )


@dataclass(frozen=True)
class ReceiptAllocation:
    """What one receipt of the epoch was paid and where its contributors' amount went."""

    usage_proof_id: int
    position: int  # in the usage proof's receipts log
    receipt: Receipt
    paid: int
    contributors_amount: int
    record: AttributionRecord | None
    to_contributions: tuple[tuple[Contribution, int], ...]  # non-zero amounts, lineage order


@dataclass(frozen=True)
class EpochAllocation:
    model_id: int
    receipts: tuple[ReceiptAllocation, ...]
    # pool funds beyond the receipts' (fundPool, expired epochs' rest), split over the
    # contributions in proportion to what the receipts pay them: :func:`with_pool_extra`
    extra: tuple[tuple[Contribution, int], ...] = ()

    @property
    def receipts_total(self) -> int:
        return sum(r.contributors_amount for r in self.receipts)

    @property
    def extra_total(self) -> int:
        return sum(amount for _, amount in self.extra)

    @property
    def total(self) -> int:
        return self.receipts_total + self.extra_total

    def by_receipts(self) -> dict[Contribution, int]:
        """What the receipts pay each contribution (the extra's weights)."""
        sums: dict[Contribution, int] = defaultdict(int)
        for r in self.receipts:
            for contribution, amount in r.to_contributions:
                sums[contribution] += amount
        return dict(sorted(sums.items()))

    def by_contribution(self) -> dict[Contribution, int]:
        sums = defaultdict(int, self.by_receipts())
        for contribution, amount in self.extra:
            sums[contribution] += amount
        return dict(sorted(sums.items()))

    def by_account(self) -> dict[str, int]:
        """Amounts per contributor address (checksummed), in address order."""
        sums: dict[str, int] = defaultdict(int)
        for contribution, amount in self.by_contribution().items():
            sums[to_checksum_address(contribution.contributor)] += amount
        return {a: sums[a] for a in sorted(sums, key=str.lower) if sums[a]}

    def leaves(self) -> list[tuple[int, str, int]]:
        return [(i, a, amount) for i, (a, amount) in enumerate(self.by_account().items())]

    def tree(self) -> StandardMerkleTree:
        leaves = self.leaves()
        if not leaves:
            raise EpochInputError(f"model {self.model_id}: the epoch pays nobody")
        return StandardMerkleTree.of(leaves, CLAIM_TYPES)


def receipt_payments(redemption: RedemptionInput) -> list[int]:
    """What each receipt was paid: its pair's ``paid`` split by the receipts' prices (equally
    when they are all free); 0 for a pair the redemption did not pay."""
    paid_by_pair: dict[tuple[str, int], int] = {}
    for v in redemption.vouchers:
        pair = (v.payer.lower(), v.model_id)
        if pair in paid_by_pair:
            raise EpochInputError(
                f"usage proof {redemption.usage_proof_id}: two vouchers of payer {v.payer} "
                f"for model {v.model_id}"
            )
        paid_by_pair[pair] = v.paid
    positions: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, r in enumerate(redemption.receipts):
        positions[(r.payer.lower(), r.model_id)].append(i)
    paid = [0] * len(redemption.receipts)
    for pair, amount in paid_by_pair.items():
        members = positions.get(pair)
        if not members:
            raise EpochInputError(
                f"usage proof {redemption.usage_proof_id}: payer {pair[0]} paid {amount} for "
                f"model {pair[1]}, and its log holds no receipt of theirs"
            )
        prices = [redemption.receipts[i].price for i in members]
        weights = prices if sum(prices) else [1] * len(members)
        for i, share in zip(members, split(amount, weights), strict=True):
            paid[i] = share
    return paid


def contributors_amounts(redemption: RedemptionInput, paid: Sequence[int]) -> list[int]:
    """Each receipt's part of its run's contributors' share (runs rebuilt from the paid vouchers
    in log order, as the contract forms them, and checked against the ``PaymentSplit``s)."""
    runs: list[tuple[int, list[PaidVoucher]]] = []
    for v in redemption.vouchers:
        if runs and runs[-1][0] == v.model_id:
            runs[-1][1].append(v)
        else:
            runs.append((v.model_id, [v]))
    where = f"usage proof {redemption.usage_proof_id}"
    if len(runs) != len(redemption.runs):
        raise EpochInputError(
            f"{where}: {len(redemption.runs)} payment splits for {len(runs)} runs of vouchers"
        )
    amounts = [0] * len(redemption.receipts)
    for (model_id, vouchers), run in zip(runs, redemption.runs, strict=True):
        if run.model_id != model_id or run.amount != sum(v.paid for v in vouchers):
            raise EpochInputError(
                f"{where}: the payment split of model {run.model_id} ({run.amount}) is not its "
                f"run of vouchers (model {model_id}, {sum(v.paid for v in vouchers)})"
            )
        pairs = {(v.payer.lower(), v.model_id) for v in vouchers}
        members = [
            i
            for i, r in enumerate(redemption.receipts)
            if (r.payer.lower(), r.model_id) in pairs and paid[i]
        ]
        if run.contributors_share and not members:
            raise EpochInputError(f"{where}: a run of model {model_id} has no paid receipt")
        if members:
            shares = split(run.contributors_share, [paid[i] for i in members])
            for i, share in zip(members, shares, strict=True):
                amounts[i] += share
    return amounts


def allocate_receipt(amount: int, record: AttributionRecord | None, lineage: Lineage) -> list[int]:
    """``amount`` over the lineage's contributions (aligned with ``lineage``): the record's
    named shares to their contributions, the rest by training examples."""
    if not lineage:
        raise EpochInputError("a model version without a lineage cannot be paid out")
    position = {m.contribution: i for i, m in enumerate(lineage)}
    named = [0] * len(lineage)  # parts per million named by the record
    rest = SCALE
    if record is not None:
        for c in record.contributions:
            key = Contribution(c.datanet_id, c.contribution_id, to_checksum_address(c.contributor))
            if key not in position:
                raise EpochInputError(
                    f"the record names contribution {c.contribution_id} of datanet "
                    f"{c.datanet_id}, which is not in the version's lineage"
                )
            named[position[key]] += c.share
            rest -= c.share
        if rest != record.tail + record.unattributed:
            raise EpochInputError(
                f"the record's shares and masses do not sum to {SCALE} (rest {rest})"
            )
    whole = sum(m.examples for m in lineage)
    if rest and whole <= 0:
        raise EpochInputError("the lineage has no training examples to pay the rest by")
    # Contribution i's exact part is amount * (named_i * whole + rest * examples_i) / (10^6 *
    # whole): integer numerators over one denominator, rounded by largest remainder.
    numerators = [amount * (named[i] * whole + rest * m.examples) for i, m in enumerate(lineage)]
    return _largest_remainder(numerators, SCALE * max(whole, 1), amount)


def allocate_epoch(
    model_id: int,
    redemptions: Sequence[RedemptionInput],
    lineage_of: Callable[[int], Lineage],
) -> EpochAllocation:
    """The allocation of ``model_id``'s receipts in ``redemptions`` (in usage-proof order);
    ``lineage_of(version)``: the lineage of an adapter version of the model."""
    allocations: list[ReceiptAllocation] = []
    for redemption in redemptions:
        paid = receipt_payments(redemption)
        amounts = contributors_amounts(redemption, paid)
        for i, receipt in enumerate(redemption.receipts):
            if receipt.model_id != model_id:
                continue
            record = redemption.records[i]
            if record is not None and (record.model_id, record.version) != (
                receipt.model_id,
                receipt.adapter_version,
            ):
                raise EpochInputError(
                    f"usage proof {redemption.usage_proof_id}, receipt {i}: the record is of "
                    f"model {record.model_id} version {record.version}, the receipt of "
                    f"{receipt.model_id} version {receipt.adapter_version}"
                )
            to_contributions: tuple[tuple[Contribution, int], ...] = ()
            if amounts[i]:
                lineage = lineage_of(receipt.adapter_version)
                shares = allocate_receipt(amounts[i], record, lineage)
                to_contributions = tuple(
                    (m.contribution, s) for m, s in zip(lineage, shares, strict=True) if s
                )
            allocations.append(
                ReceiptAllocation(
                    redemption.usage_proof_id,
                    i,
                    receipt,
                    paid[i],
                    amounts[i],
                    record,
                    to_contributions,
                )
            )
    return EpochAllocation(model_id, tuple(allocations))


def with_pool_extra(allocation: EpochAllocation, extra: int) -> EpochAllocation:
    """``allocation`` also paying ``extra`` (pool funds no receipt brought: funded directly,
    or an expired epoch's unclaimed rest, returned to the pool), split over the contributions
    in proportion to what the receipts pay them (largest remainder, contribution order): the
    pool's extra follows this epoch's attribution. An epoch whose receipts pay nobody cannot
    carry it."""
    if extra < 0:
        raise EpochInputError(f"a negative pool extra ({extra})")
    if not extra:
        return replace(allocation, extra=())
    weights = allocation.by_receipts()
    if not any(weights.values()):
        raise EpochInputError(f"model {allocation.model_id}: {extra} extra over no receipt")
    parts = split(extra, list(weights.values()))
    shares = tuple((c, part) for c, part in zip(weights, parts, strict=True) if part)
    return replace(allocation, extra=shares)


def split(amount: int, weights: Sequence[int]) -> list[int]:
    """``amount`` in proportion to non-negative ``weights`` (largest remainder, ties to the
    earlier weight); all-zero weights take nothing, so ``amount`` must then be 0."""
    whole = sum(weights)
    if whole == 0:
        if amount:
            raise EpochInputError(f"{amount} to split over nothing")
        return [0] * len(weights)
    return _largest_remainder([amount * w for w in weights], whole, amount)


def _largest_remainder(numerators: Sequence[int], denominator: int, total: int) -> list[int]:
    """``numerators / denominator`` rounded to integers summing to ``total`` (their exact sum):
    floors, plus one for the largest remainders, ties to the earlier item. Exact integer
    arithmetic (what :func:`.shares.largest_remainder` does with fractions, faster)."""
    floors = [n // denominator for n in numerators]
    missing = total - sum(floors)
    if missing < 0 or missing > len(numerators):
        raise EpochInputError(f"the parts do not sum to {total}")
    order = sorted(range(len(numerators)), key=lambda i: (-(numerators[i] % denominator), i))
    for i in order[:missing]:
        floors[i] += 1
    return floors
