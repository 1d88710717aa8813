"""The demo's attribution epoch. First the node (the model's attributor) tries to cheat: it
posts an epoch of the paid answers' redemptions that moves 1% of the largest contributor's
amount to itself; the auditor's recomputation catches it, the robbed contributor challenges
with the evidence, governance upholds and the node's stake is slashed (the challenger gets
its bond back and the slashed stake; the epoch's total returns to the pool). Then the node
posts the honest epoch, the local chain moves past the challenge window, the auditor
recomputes it from public inputs alone and every contributor claims what it is owed, except
the accounts left to claim in the web app (the demo leaves the contributor's claim to the
person who opens the page, so there is one to send from a wallet).

Each step works on persisted state: an epoch already posted for the redemptions is not posted
again, and a claimed leaf is not claimed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from backend.attribution.claims import owed_to
from backend.attribution.epoch_audit import CLAIM_TYPES, EpochAudit, audit_epoch
from backend.attribution.epoch_inputs import MAX_LOG_BYTES, decode_events
from backend.attribution.epoch_report import to_bytes
from backend.attribution.epoch_service import PreparedEpoch, post_epoch, prepare_epoch
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tampered:
    """The dishonest epoch and what became of it."""

    epoch_id: int
    victim: str  # the contributor robbed, who challenges
    moved: int  # OPEN wei moved from the victim to the node
    audit: EpochAudit
    evidence_cid: str
    slashed: int  # of the node's stake
    stake_before: int  # bonded + unbonding
    stake_after: int  # before the operator stakes the slashed amount again
    challenger_paid: int  # withdrawn by the challenger: its bond back plus the slashed stake


def tampered_report(
    prepared: PreparedEpoch, thief: str, bps: int = 100
) -> tuple[bytes, dict[str, Any], str, int]:
    """(root, report, victim, moved): ``prepared``'s report with ``bps`` of its largest
    contributor's amount moved to ``thief``, tree and leaves to match."""
    rows = {row["account"]: int(row["amount"]) for row in prepared.document["contributors"]}
    victim = max(rows, key=lambda a: (rows[a], a))
    moved = max(rows[victim] * bps // 10_000, 1)
    rows[victim] -= moved
    rows[thief] = rows.get(thief, 0) + moved
    leaves = [
        (i, a, v) for i, (a, v) in enumerate(sorted(rows.items(), key=lambda x: x[0].lower()))
    ]
    tree = StandardMerkleTree.of(leaves, CLAIM_TYPES)
    document = dict(prepared.document)
    document["contributors"] = [{"account": a, "amount": str(v), "contributions": []}
                                for _, a, v in leaves]  # fmt: skip
    document["leaves"] = [[i, a, str(v)] for i, a, v in leaves]
    document["merkle_root"] = "0x" + tree.root.hex()
    return tree.root, document, victim, moved


def _stake(p: Web3Protocol, node: str) -> int:
    info = p["NodeRegistry"].functions.nodeInfo(node).call()
    return int(info[0]) + int(info[1])


def tamper_and_challenge(
    p: Web3Protocol, store: ContentStore, roles: dict[str, Any], prepared: PreparedEpoch
) -> Tampered:
    """The node posts a tampered epoch; the audit fails; the victim challenges with the
    evidence's CID; governance upholds; the challenger withdraws what it is owed."""
    node = to_checksum_address(roles["node operator"].address)
    rewards = p["AttributionRewards"]
    root, document, victim, moved = tampered_report(prepared, node)
    cid = store.put(to_bytes(document))
    receipt = p.transact(node, rewards.functions.postEpoch(prepared.model_id, root,
                                                           prepared.total, cid))  # fmt: skip
    (posted,) = decode_events(rewards, "EpochPosted", receipt)
    epoch_id = int(posted.args.epochId)
    audit = audit_epoch(p, store, epoch_id)
    evidence = store.put(to_bytes(audit.evidence()))
    bond = rewards.functions.challengeBond().call()
    p.transact(victim, p["OpenToken"].functions.approve(rewards.address, bond))
    p.transact(victim, rewards.functions.challenge(epoch_id, evidence))
    before = _stake(p, node)
    resolved = p.transact(to_checksum_address(roles["governance"].address),
                          rewards.functions.resolveChallenge(epoch_id, True))  # fmt: skip
    (outcome,) = decode_events(rewards, "ChallengeResolved", resolved)
    owed = rewards.functions.withdrawable(victim).call()
    p.transact(victim, rewards.functions.withdraw())
    slashed = int(outcome.args.slashed)
    after = _stake(p, node)
    if slashed:  # the operator stakes the loss again, to keep serving and posting (re-runs)
        registry = p["NodeRegistry"]
        p.transact(node, p["OpenToken"].functions.approve(registry.address, slashed))
        p.transact(node, registry.functions.stake(slashed))
    log.info("tampered epoch %d rejected, node slashed %d", epoch_id, slashed)
    return Tampered(epoch_id, victim, moved, audit, evidence, slashed, before, after, int(owed))


@dataclass
class EpochDemo:
    tampered: Tampered | None = None  # the dishonest epoch posted first, caught and slashed
    prepared: PreparedEpoch | None = None  # None: nothing new to attribute
    epoch_id: int | None = None
    report_cid: str = ""
    audit: EpochAudit | None = None
    # account -> (claimed now, earned over every epoch of the model, claimed before or not)
    claims: dict[str, tuple[int, int]] = field(default_factory=dict)


def run_epoch_demo(
    p: Web3Protocol,
    store: ContentStore,
    roles: dict[str, Any],
    model_id: int,
    unclaimed: Collection[str] = (),
) -> EpochDemo:
    """Posts, audits and claims the model's next epoch (``roles``: ape accounts by role; the
    node operator is the attributor); the roles in ``unclaimed`` keep what they are owed to
    claim later (their entry in ``claims`` shows 0 claimed)."""
    left = {to_checksum_address(roles[role].address) for role in unclaimed}
    demo = EpochDemo()
    node = roles["node operator"].address
    demo.prepared = prepare_epoch(p, store, model_id)
    if demo.prepared is not None:
        demo.tampered = tamper_and_challenge(p, store, roles, demo.prepared)
        demo.prepared = prepare_epoch(p, store, model_id)  # the rejected epoch's proofs again
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
            if o.claimable_now and account not in left:
                p.transact(account, rewards.claim(o.epoch_id, o.index, o.account, o.amount,
                                                  o.proof))  # fmt: skip
                claimed += o.amount
        if owed:
            demo.claims[account] = (claimed, sum(o.amount for o in owed))
    return demo
