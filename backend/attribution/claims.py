"""Everything an account is owed by attribution epochs, with the Merkle proofs to claim it,
recomputed from the epochs' reports (checked against the posted roots): what
``ape run ol claim-all`` sends and the demo's contributors claim."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from eth_utils import to_checksum_address

from backend.protocol.enums import EpochStatus
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.web3_protocol import Web3Protocol

log = logging.getLogger(__name__)

CLAIM_TYPES = ("uint256", "address", "uint256")


@dataclass(frozen=True)
class Owed:
    """One leaf of an epoch that pays the account."""

    epoch_id: int
    model_id: int
    index: int
    account: str
    amount: int
    proof: list[bytes]
    claimed: bool
    claimable_now: bool  # posted, its window passed, not claimed


def owed_to(p: Web3Protocol, get: Callable[[str], bytes], account: str) -> list[Owed]:
    """The leaves of every epoch not rejected or expired that pay ``account``, in epoch order
    (an epoch whose report is missing or does not rebuild the posted root is skipped, logged)."""
    rewards = p["AttributionRewards"]
    account = to_checksum_address(account)
    now = p.w3.eth.get_block("latest")["timestamp"]
    owed: list[Owed] = []
    for posted in rewards.events.EpochPosted().get_logs(from_block=p.deployment.block):
        a = posted.args
        epoch = rewards.functions.epoch(a.epochId).call()
        status, ends_at = epoch.status, epoch.challengeEndsAt
        if status not in (EpochStatus.POSTED, EpochStatus.CHALLENGED):
            continue
        try:
            leaves = [
                (int(i), to_checksum_address(acct), int(amount))
                for i, acct, amount in json.loads(get(a.reportCID))["leaves"]
            ]
            tree = StandardMerkleTree.of(leaves, CLAIM_TYPES)
        except (ValueError, KeyError, TypeError) as why:
            log.warning("epoch %d: report %s unreadable: %s", a.epochId, a.reportCID, why)
            continue
        if tree.root != bytes(a.merkleRoot):
            log.warning("epoch %d: report %s does not rebuild the posted root", a.epochId,
                        a.reportCID)  # fmt: skip
            continue
        for row, (index, acct, amount) in enumerate(leaves):
            if acct != account:
                continue
            claimed = rewards.functions.isClaimed(a.epochId, index).call()
            owed.append(
                Owed(
                    a.epochId,
                    a.modelId,
                    index,
                    acct,
                    amount,
                    tree.proof(row),
                    claimed,
                    status == EpochStatus.POSTED and now >= ends_at and not claimed,
                )
            )
    return owed
