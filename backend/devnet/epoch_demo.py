"""The demo's attribution epoch: the node (the model's attributor) posts the epoch of the paid
answers' redemptions, the local chain moves past the challenge window, an auditor recomputes
the epoch from public inputs alone, and every contributor claims what it is owed.

Each step works on persisted state: an epoch already posted for the redemptions is not posted
again, and a claimed leaf is not claimed twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from backend.attribution.claims import owed_to
from backend.attribution.epoch_audit import EpochAudit, audit_epoch
from backend.attribution.epoch_inputs import MAX_LOG_BYTES
from backend.attribution.epoch_service import PreparedEpoch, post_epoch, prepare_epoch
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)


@dataclass
class EpochDemo:
    prepared: PreparedEpoch | None = None  # None: nothing new to attribute
    epoch_id: int | None = None
    report_cid: str = ""
    audit: EpochAudit | None = None
    claims: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (claimed, owed)


def run_epoch_demo(
    p: Web3Protocol, store: ContentStore, roles: dict[str, Any], model_id: int
) -> EpochDemo:
    """Posts, audits and claims the model's next epoch (``roles``: ape accounts by role; the
    node operator is the attributor)."""
    demo = EpochDemo()
    node = roles["node operator"].address
    demo.prepared = prepare_epoch(p, store, model_id)
    if demo.prepared is not None:
        demo.epoch_id, demo.report_cid = post_epoch(
            p, store, lambda call: p.transact(node, call), demo.prepared
        )
        window = p["AttributionRewards"].functions.challengeWindow().call()
        # The local chain's time moves on past the challenge window (a day of deployment
        # parameters); nobody challenged the epoch.
        p.w3.provider.make_request("evm_increaseTime", [window])
        p.w3.provider.make_request("evm_mine", [])
        demo.audit = audit_epoch(p, store, demo.epoch_id)
    rewards = p["AttributionRewards"].functions

    def get(cid: str) -> bytes:
        return store.get(cid, max_bytes=MAX_LOG_BYTES)

    for account in sorted({to_checksum_address(a.address) for a in roles.values()}):
        claimed = 0
        owed = owed_to(p, get, account)
        for o in owed:
            if o.claimable_now:
                p.transact(account, rewards.claim(o.epoch_id, o.index, o.account, o.amount,
                                                  o.proof))  # fmt: skip
                claimed += o.amount
        if owed:
            demo.claims[account] = (claimed, sum(o.amount for o in owed))
    return demo
