"""An epoch's report: its inputs by CID, every receipt's payment and where it went, every
contributor's total, the software that computed it, and the Merkle root it posts. Canonical
JSON (sorted keys, no spaces, one trailing newline; amounts as decimal strings, hashes as
``0x``-hex), stored by CID and named in ``EpochPosted``: an auditor recomputes the allocation
from the public inputs alone and compares (:func:`compare`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import is_hex_address, to_checksum_address

from backend.attribution.epoch import EpochAllocation, ReceiptAllocation
from backend.protocol.canonical import canonical_json

REPORT_SCHEMA = 1
SOFTWARE = "openledger-attributor/1"


class ReportError(ValueError):
    """A report that cannot be read; the message names the field."""


@dataclass(frozen=True)
class UsageProofInput:
    """A usage proof the epoch pays for, as the chain recorded it."""

    proof_id: int
    cid: str  # what UsageProofRecorded names (the receipts log, or its bundle)
    receipts_root: bytes
    records_cid: str | None  # the attribution records log, when the node published one


def report(
    allocation: EpochAllocation,
    proofs: Sequence[UsageProofInput],
    indexes: Mapping[int, str | None],
    software: str = SOFTWARE,
) -> dict[str, Any]:
    """The report of ``allocation``; ``indexes``: the attribution index CID of each adapter
    version it pays for (None: the version has none, its receipts went by training
    examples)."""
    accounts = allocation.by_account()
    per_account: dict[str, list[list[Any]]] = {a: [] for a in accounts}
    for contribution, amount in allocation.by_contribution().items():
        per_account[to_checksum_address(contribution.contributor)].append(
            [contribution.datanet_id, contribution.contribution_id, str(amount)]
        )
    tree = allocation.tree()
    return {
        "schema": REPORT_SCHEMA,
        "software": software,
        "model": allocation.model_id,
        "rule": "docs/attribution-epochs.md",
        "inputs": {
            "usage_proofs": [
                {
                    "id": p.proof_id,
                    "cid": p.cid,
                    "receipts_root": "0x" + p.receipts_root.hex(),
                    "records": p.records_cid,
                }
                for p in proofs
            ],
            "indexes": {str(v): cid for v, cid in sorted(indexes.items())},
        },
        "extra": {
            "amount": str(allocation.extra_total),
            "to": [[c.datanet_id, c.contribution_id, str(a)] for c, a in allocation.extra],
        },
        "receipts": [
            {
                "usage_proof": r.usage_proof_id,
                "position": r.position,
                "request_hash": "0x" + r.receipt.request_hash.hex(),
                "version": r.receipt.adapter_version,
                "paid": str(r.paid),
                "contributors": str(r.contributors_amount),
                "record": None if r.record is None else "0x" + r.record.digest().hex(),
                **_receipt_split(r),
            }
            for r in allocation.receipts
        ],
        "contributors": [
            {"account": a, "amount": str(amount), "contributions": per_account[a]}
            for a, amount in accounts.items()
        ],
        # the claim tree's leaves (index, account, amount), as the API serves their proofs
        "leaves": [[i, a, str(amount)] for i, a, amount in allocation.leaves()],
        "total": str(allocation.total),
        "merkle_root": "0x" + tree.root.hex(),
    }


def _receipt_split(r: ReceiptAllocation) -> dict[str, Any]:
    """What the receipt paid the contributions its record names (``to``) and, in one sum,
    the rest of the lineage by training examples (``lineage``: anyone recomputes its parts
    from the lineage; listing every contribution for every receipt would make the report
    grow with receipts x lineage)."""
    named = (
        set()
        if r.record is None
        else {(c.datanet_id, c.contribution_id) for c in r.record.contributions}
    )
    to = [
        [c.datanet_id, c.contribution_id, str(a)]
        for c, a in r.to_contributions
        if (c.datanet_id, c.contribution_id) in named
    ]
    return {"to": to, "lineage": str(r.contributors_amount - sum(int(x[2]) for x in to))}


def to_bytes(document: Mapping[str, Any]) -> bytes:
    return canonical_json(document)


def extra_of(document: Mapping[str, Any]) -> int:
    """The pool extra a report pays (0 for a report from before the rule)."""
    try:
        extra = document.get("extra")
        amount = 0 if extra is None else int(extra["amount"])
    except (AttributeError, KeyError, TypeError, ValueError) as why:
        raise ReportError(f"the report's extra cannot be read: {why}") from None
    if amount < 0:
        raise ReportError(f"the report's extra is negative ({amount})")
    return amount


def amounts_of(document: Mapping[str, Any]) -> dict[str, int]:
    """The report's amount per contributor account (checksummed)."""
    try:
        rows = document["contributors"]
        out: dict[str, int] = {}
        for row in rows:
            account, amount = row["account"], int(row["amount"])
            if not is_hex_address(account) or amount < 0:
                raise ReportError(f"bad contributor row {row!r}")
            out[to_checksum_address(account)] = amount
        return out
    except (KeyError, TypeError, ValueError) as why:
        raise ReportError(f"the report's contributors cannot be read: {why}") from None


@dataclass(frozen=True)
class Difference:
    account: str
    posted: int  # what the posted report (or tree) pays the account
    recomputed: int  # what the rule pays it

    @property
    def delta(self) -> int:
        return self.posted - self.recomputed


def compare(posted: Mapping[str, int], recomputed: Mapping[str, int]) -> list[Difference]:
    """Every account paid differently, in address order (empty: the epoch is right)."""
    accounts = sorted({*posted, *recomputed}, key=str.lower)
    return [
        Difference(a, posted.get(a, 0), recomputed.get(a, 0))
        for a in accounts
        if posted.get(a, 0) != recomputed.get(a, 0)
    ]
