"""Auditing a posted epoch from public inputs alone: the report it names, the usage proofs the
report lists (checked against the chain), their receipts and records, the versions' lineages.
The recomputed allocation must pay every account what the report and the posted tree pay."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.attribution.epoch import (
    Lineage,
    RedemptionInput,
    allocate_epoch,
    with_pool_extra,
)
from backend.attribution.epoch_inputs import (
    MAX_LOG_BYTES,
    EpochInputsError,
    checked_records,
    covered_proofs,
    pool_extra_available,
    redemption_input,
    usage_proofs,
    version_lineage,
)
from backend.attribution.epoch_report import (
    Difference,
    ReportError,
    amounts_of,
    compare,
    extra_of,
)
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore, ContentStoreError

CLAIM_TYPES = ("uint256", "address", "uint256")
Refuter = Callable[[RedemptionInput], dict[bytes, list[str]]]


@dataclass(frozen=True)
class EpochAudit:
    epoch_id: int
    model_id: int
    poster: str
    report_cid: str
    posted_total: int
    recomputed_total: int
    posted_root: bytes
    recomputed_root: bytes | None
    differences: list[Difference]  # per account: posted (report) vs recomputed
    problems: list[str]  # inputs that do not hold (proofs, report, tree)
    # full records that revealed token ids disprove (refused in the recomputation), by
    # receipt: the evidence of a forged record, whether or not the epoch paid it
    refuted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            not self.differences
            and not self.problems
            and self.posted_total == self.recomputed_total
            and self.posted_root == self.recomputed_root
        )

    def evidence(self) -> dict[str, Any]:
        """What a challenge files (by CID): the recomputation and how it differs."""
        return {
            "epoch": self.epoch_id,
            "model": self.model_id,
            "report": self.report_cid,
            "posted": {"total": str(self.posted_total), "root": "0x" + self.posted_root.hex()},
            "recomputed": {
                "total": str(self.recomputed_total),
                "root": None if self.recomputed_root is None else "0x" + self.recomputed_root.hex(),
            },
            "differences": [
                {"account": d.account, "posted": str(d.posted), "recomputed": str(d.recomputed)}
                for d in self.differences
            ],
            "problems": self.problems,
            "refuted_records": self.refuted,
            "rule": "docs/attribution-epochs.md",
        }


def audit_epoch(
    p: Web3Protocol,
    store: ContentStore,
    epoch_id: int,
    lineages: Callable[[int, int], tuple[Lineage, str | None]] | None = None,
    refute: Refuter | None = None,
) -> EpochAudit:
    """``lineages(model_id, version)``: default, as the chain and the store state them.
    ``refute(redemption)``: the full records revealed token ids disprove, by request hash
    (:func:`.reveal.refute_full_records`); without it full records are checked as published."""
    rewards = p["AttributionRewards"]
    logs = rewards.events.EpochPosted().get_logs(
        from_block=p.deployment.block, argument_filters={"epochId": epoch_id}
    )
    if not logs:
        raise EpochInputsError(f"no epoch {epoch_id} was posted")
    a = logs[0].args
    model_id, root, total, report_cid = a.modelId, bytes(a.merkleRoot), a.total, a.reportCID

    def get(cid: str) -> bytes:
        return store.get(cid, max_bytes=MAX_LOG_BYTES)

    problems: list[str] = []
    try:
        document = json.loads(get(report_cid))
        listed = [int(u["id"]) for u in document["inputs"]["usage_proofs"]]
        posted_amounts = amounts_of(document)
        claimed_extra = extra_of(document)
    except (ValueError, KeyError, TypeError, ReportError, ContentStoreError) as why:
        raise EpochInputsError(
            f"epoch {epoch_id}'s report {report_cid} is unreadable: {why}"
        ) from None
    on_chain = {e.proof.proof_id: e for e in usage_proofs(p, model_id)}
    earlier = covered_proofs(p, get, model_id, before=epoch_id)
    redemptions = []
    for proof_id in sorted({p for p in listed if listed.count(p) > 1}):
        problems.append(f"usage proof {proof_id} is listed {listed.count(proof_id)} times")
    for proof_id in dict.fromkeys(listed):  # each proof pays once, however often listed
        events = on_chain.get(proof_id)
        if events is None:
            problems.append(f"usage proof {proof_id} did not pay model {model_id}")
            continue
        if proof_id in earlier:
            problems.append(f"usage proof {proof_id} was already paid by an earlier epoch")
        redemptions.append(redemption_input(get, events)[0])
    versions = sorted(
        {r.adapter_version for x in redemptions for r in x.receipts if r.model_id == model_id}
    )
    lineage_of = lineages or (lambda m, v: version_lineage(p, store, m, v))
    by_version, indexes = {}, {}
    for version in versions:
        by_version[version], indexes[version] = lineage_of(model_id, version)
    refuted: dict[bytes, list[str]] = {}
    for x in redemptions:
        refuted |= refute(x) if refute is not None else {}
    checked = [checked_records(x, indexes, refuted)[0] for x in redemptions]
    allocation = allocate_epoch(model_id, checked, lambda version: by_version[version])
    if claimed_extra:
        available = pool_extra_available(p, get, model_id, before_epoch=epoch_id)
        if claimed_extra > available:
            problems.append(f"the report pays {claimed_extra} of pool extra; {available} was "
                            f"available before the epoch")  # fmt: skip
        if allocation.receipts_total:
            allocation = with_pool_extra(allocation, claimed_extra)
        else:
            problems.append(f"the report pays {claimed_extra} of pool extra over no receipt")
    recomputed = allocation.by_account()
    report_leaves = [(int(i), acct, int(amt)) for i, acct, amt in document.get("leaves", [])]
    if report_leaves and StandardMerkleTree.of(report_leaves, CLAIM_TYPES).root != root:
        problems.append("the posted root is not the root of the report's leaves")
    return EpochAudit(
        epoch_id=epoch_id,
        model_id=model_id,
        poster=a.poster,
        report_cid=report_cid,
        posted_total=total,
        recomputed_total=allocation.total,
        posted_root=root,
        recomputed_root=allocation.tree().root if recomputed else None,
        differences=compare(posted_amounts, recomputed),
        problems=problems,
        refuted={"0x" + h.hex(): why for h, why in refuted.items()},
    )
