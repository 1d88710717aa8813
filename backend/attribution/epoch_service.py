"""The attributor's job for one model: gather the redemptions no epoch has paid for, allocate
them, store the report and post the epoch (``openledger-node attribute``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.attribution.epoch import (
    EpochAllocation,
    Lineage,
    allocate_epoch,
    with_pool_extra,
)
from backend.attribution.epoch_inputs import (
    MAX_LOG_BYTES,
    EpochInputsError,
    checked_records,
    decode_events,
    next_epoch_inputs,
    pool_extra_available,
    version_lineage,
)
from backend.attribution.epoch_report import UsageProofInput, report, to_bytes
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

Send = Callable[[Any], dict[str, Any]]  # a contract call -> its mined receipt
# adapter version -> (its lineage, its attribution index CID or None)
LineageSource = Callable[[int], tuple[Lineage, str | None]]


def chain_lineages(p: Web3Protocol, store: ContentStore, model_id: int) -> LineageSource:
    """Lineages as the chain and the content store state them (:func:`version_lineage`)."""
    return lambda version: version_lineage(p, store, model_id, version)


@dataclass(frozen=True)
class PreparedEpoch:
    model_id: int
    allocation: EpochAllocation
    proofs: list[UsageProofInput]
    indexes: dict[int, str | None]
    refused_records: int
    document: dict[str, Any]

    @property
    def total(self) -> int:
        return self.allocation.total

    @property
    def root(self) -> bytes:
        return self.allocation.tree().root


def prepare_epoch(
    p: Web3Protocol, store: ContentStore, model_id: int, lineages: LineageSource | None = None
) -> PreparedEpoch | None:
    """The next epoch of ``model_id``, or None when no redemption is left to pay for."""
    lineage_of = lineages or chain_lineages(p, store, model_id)

    def get(cid: str) -> bytes:
        return store.get(cid, max_bytes=MAX_LOG_BYTES)

    redemptions, proofs = next_epoch_inputs(p, get, model_id)
    versions = sorted(
        {r.adapter_version for x in redemptions for r in x.receipts if r.model_id == model_id}
    )
    by_version, indexes = {}, {}
    for version in versions:
        by_version[version], indexes[version] = lineage_of(version)
    checked, refused = [], 0
    for redemption in redemptions:
        kept, n = checked_records(redemption, indexes)
        checked.append(kept)
        refused += n
    allocation = allocate_epoch(model_id, checked, lambda version: by_version[version])
    if allocation.total == 0:
        return None  # pool funds beyond the receipts wait for an epoch with receipts to pay
    unallocated = p["AttributionRewards"].functions.pool(model_id).call()[0]
    if unallocated < allocation.total:
        raise EpochInputsError(
            f"model {model_id}: the receipts owe {allocation.total}, the pool holds "
            f"{unallocated} unallocated"
        )
    available = pool_extra_available(p, get, model_id)
    allocation = with_pool_extra(allocation, min(available, unallocated - allocation.total))
    document = report(allocation, proofs, indexes)
    document["refused_records"] = refused
    return PreparedEpoch(model_id, allocation, proofs, indexes, refused, document)


def post_epoch(
    p: Web3Protocol, store: ContentStore, send: Send, prepared: PreparedEpoch
) -> tuple[int, str]:
    """Stores the report and posts the epoch; (epoch id, report CID)."""
    rewards = p["AttributionRewards"]
    unallocated = rewards.functions.pool(prepared.model_id).call()[0]
    if prepared.total > unallocated:
        raise EpochInputsError(
            f"model {prepared.model_id}: the epoch pays {prepared.total}, the pool holds "
            f"{unallocated} unallocated"
        )
    cid = store.put(to_bytes(prepared.document))
    store.pin(cid)
    receipt = send(rewards.functions.postEpoch(prepared.model_id, prepared.root,
                                               prepared.total, cid))  # fmt: skip
    (posted,) = decode_events(rewards, "EpochPosted", receipt)
    log.info(
        "posted epoch %d of model %d: %d wei to %d contributors over %d usage proofs, report %s",
        posted.args.epochId, prepared.model_id, prepared.total,
        len(prepared.allocation.leaves()), len(prepared.proofs), cid,
    )  # fmt: skip
    return posted.args.epochId, cid
