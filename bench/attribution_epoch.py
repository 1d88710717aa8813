"""The attributor's work for one epoch of 10,000 paid answers, without the chain: parse the
records logs, check every answer record against its receipt (keccak of its canonical bytes),
allocate (the integer rule of backend/attribution/epoch.py), build the claim tree and the
report. Writes bench/results/attribution_epoch.json and prints a table.

The inputs are built here: 100 usage proofs of 100 receipts each (50 payers), a lineage of 400
contributions held by 120 accounts, and for every receipt an answer record naming up to 8
contributions by span (the shape the node publishes). Chain reads (one receipt per redemption
transaction) and content-store reads are not timed: they are I/O, a few per usage proof.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import table, write_results
from eth_utils import keccak, to_checksum_address

from backend.attribution.corpus import Contribution
from backend.attribution.epoch import (
    LineageContribution,
    ModelRun,
    PaidVoucher,
    RedemptionInput,
    allocate_epoch,
)
from backend.attribution.epoch_report import UsageProofInput, report, to_bytes
from backend.attribution.record import (
    AttributionRecord,
    ContributionRecord,
    SpanRecord,
)
from backend.attribution.records_log import (
    parse_records_log,
    records_log,
    verify_record,
)
from backend.protocol.receipts import Receipt

PROOFS, PER_PROOF, PAYERS, CONTRIBUTIONS, ACCOUNTS = 100, 100, 50, 400, 120
MODEL = 1
PRICE = 10**16  # OPEN wei per answer
CONTRIBUTORS_BPS = 3_000


def build(rng: Random) -> tuple[list[bytes], list[list[Receipt]], list[RedemptionInput], tuple]:
    accounts = [to_checksum_address(keccak(text=f"account {i}")[:20]) for i in range(ACCOUNTS)]
    lineage = tuple(
        LineageContribution(Contribution(1, c + 1, accounts[c % ACCOUNTS]), rng.randint(1, 40))
        for c in range(CONTRIBUTIONS)
    )
    payers = [to_checksum_address(keccak(text=f"payer {i}")[:20]) for i in range(PAYERS)]
    node = to_checksum_address(keccak(text="node")[:20])
    logs, receipts_of, redemptions = [], [], []
    for proof in range(PROOFS):
        receipts, records = [], []
        for n in range(PER_PROOF):
            named = rng.sample(range(CONTRIBUTIONS), rng.randint(0, 8))
            shares = [rng.randint(1, 100_000) for _ in named]
            record = AttributionRecord(
                model_id=MODEL, version=1, index="bafyindex",
                prompt_hash=keccak(text=f"prompt {proof} {n}"),
                answer_hash=keccak(text=f"answer {proof} {n}"), answer_tokens=48,
                spans=tuple(SpanRecord(rng.randint(0, 40), 6, 3, (rng.randint(0, 9_999),))
                            for _ in named),
                covered_weight=sum(shares), total_weight=1_000_000,
                query_sketch=None,
                contributions=tuple(
                    ContributionRecord(1, lineage[c].contribution.contribution_id,
                                       lineage[c].contribution.contributor, s, 0, s)
                    for c, s in zip(named, shares, strict=True)
                ),
                span_mass=sum(shares), gradient_mass=0,
                unattributed=1_000_000 - sum(shares), tail=0,
            )  # fmt: skip
            payer = payers[(proof + n) % PAYERS]
            receipts.append(
                Receipt(
                    request_hash=keccak(text=f"request {proof} {n}"),
                    payer=payer,
                    node=node,
                    model_id=MODEL,
                    adapter_version=1,
                    tokens_in=30,
                    tokens_out=48,
                    price=PRICE,
                    output_hash=keccak(text=f"output {proof} {n}"),
                    attribution_digest=record.digest(),
                    voucher_cumulative=PRICE,
                    created_at=1_700_000_000 + n,
                )
            )
            records.append(record)
        paid: dict[str, int] = {}
        for r in receipts:
            paid[r.payer] = paid.get(r.payer, 0) + r.price
        vouchers = tuple(PaidVoucher(p, MODEL, amount) for p, amount in paid.items())
        total = sum(paid.values())
        runs = (ModelRun(MODEL, total, total * CONTRIBUTORS_BPS // 10_000 + 7),)
        logs.append(records_log(records))
        receipts_of.append(receipts)
        redemptions.append(
            RedemptionInput(proof + 1, tuple(receipts), (None,) * len(receipts), vouchers, runs)
        )
    return logs, receipts_of, redemptions, lineage


def main() -> int:
    rng = Random(14)
    logs, receipts_of, shells, lineage = build(rng)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    parsed = [parse_records_log(log) for log in logs]
    timings["parse records logs"] = time.perf_counter() - start
    start = time.perf_counter()
    checked = [
        [verify_record(receipt, record) for receipt, record in zip(rs, recs, strict=True)]
        for rs, recs in zip(receipts_of, parsed, strict=True)
    ]
    timings["check answer records against receipts"] = time.perf_counter() - start
    redemptions = [
        RedemptionInput(s.usage_proof_id, s.receipts, tuple(c), s.vouchers, s.runs)
        for s, c in zip(shells, checked, strict=True)
    ]
    start = time.perf_counter()
    allocation = allocate_epoch(MODEL, redemptions, lambda version: lineage)
    timings["allocate (integer rule)"] = time.perf_counter() - start
    start = time.perf_counter()
    tree = allocation.tree()
    proofs = [UsageProofInput(i + 1, f"bafyproof{i}", b"\x00" * 32, f"bafyrecords{i}")
              for i in range(PROOFS)]  # fmt: skip
    document = to_bytes(report(allocation, proofs, {1: "bafyindex"}))
    timings["claim tree and report"] = time.perf_counter() - start
    total = sum(timings.values())
    assert allocation.total == sum(r.runs[0].contributors_share for r in redemptions)
    rows = [[step, f"{seconds:.2f}"] for step, seconds in timings.items()]
    rows.append(["total", f"{total:.2f}"])
    print(
        f"epoch of {PROOFS * PER_PROOF:,} receipts ({PROOFS} usage proofs), {CONTRIBUTIONS} "
        f"contributions, {len(tree.values)} accounts paid, report {len(document):,} bytes"
    )
    print(table(["step", "seconds"], rows))
    write_results(
        "attribution_epoch",
        {
            "receipts": PROOFS * PER_PROOF,
            "usage_proofs": PROOFS,
            "contributions": CONTRIBUTIONS,
            "accounts_paid": len(tree.values),
            "report_bytes": len(document),
            "seconds": {k: round(v, 3) for k, v in timings.items()},
            "total_seconds": round(total, 3),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
