"""Response models. Amounts are OPEN wei as decimal strings; times are unix seconds (null when
the node did not report a block's timestamp); hashes, roots and proofs are 0x-hex.

One file for one concern, the API's public shapes: small field lists under the conventions
above, which a client reads as a whole (split, they would scatter the conventions).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass

from backend.indexer.abi import DecodedLog

T = TypeVar("T")
Wei = str  # OPEN wei, decimal


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="items matching the query, all pages")
    limit: int
    offset: int


class Status(BaseModel):
    chain_id: int | None
    contracts: dict[str, str]
    block: int | None = Field(description="the last block indexed")
    block_timestamp: int | None
    events: int
    rpc_url: str | None = Field(
        description="a JSON-RPC URL a browser may read the chain from (null: none offered)"
    )


class DatanetPublic(BaseModel):
    id: int
    owner: str
    metadata_cid: str
    contribution_bond: Wei
    min_approved: int
    treasury: str
    contribution_count: int
    approved_count: int
    rejected_count: int
    pending_count: int
    version_count: int
    block_number: int
    created_at: int | None
    tx_hash: str


class DatanetDetail(DatanetPublic):
    curators: list[str] = Field(description="besides the owner, who is always one")


class ContributionPublic(BaseModel):
    id: int
    datanet_id: int
    contributor: str
    cid: str
    size: int = Field(description="bytes, as declared")
    bond: Wei
    status: str = Field(description="pending, approved, rejected or withdrawn")
    curator: str | None
    block_number: int
    created_at: int | None
    reviewed_at: int | None
    withdrawn_at: int | None = Field(description="when an unreviewed contribution was taken back")
    tx_hash: str


class VersionPublic(BaseModel):
    datanet_id: int
    version: int
    merkle_root: str
    contribution_count: int
    manifest_cid: str
    block_number: int
    published_at: int | None
    tx_hash: str


class VersionLeaf(BaseModel):
    contribution_id: int
    contributor: str
    cid: str


class VersionProof(BaseModel):
    """Proof that a contribution is in a version: leaf (uint256 id, address contributor,
    string cid), double-hashed as OpenZeppelin's StandardMerkleTree, for ``isInVersion``."""

    datanet_id: int
    version: int
    leaf: VersionLeaf
    leaf_hash: str
    proof: list[str]
    merkle_root: str = Field(description="the on-chain root, equal to the rebuilt one")


class Pricing(BaseModel):
    per_request: Wei
    per_token: Wei


class Split(BaseModel):
    developer: int = Field(description="bps")
    contributors: int = Field(description="bps")
    node: int = Field(description="bps")
    protocol: int = Field(description="bps")


class ScheduledSplit(Split):
    effective_at: int = Field(description="when it replaces the split in effect")


class ModelPublic(BaseModel):
    id: int
    developer: str
    metadata_cid: str
    base_model_cid: str
    attributor: str
    status: str = Field(description="active, paused or retired")
    version_count: int
    pricing: Pricing
    split: Split = Field(description="the split in effect at the last indexed block")
    scheduled_split: ScheduledSplit | None = Field(
        description="a split change not yet in effect at the last indexed block (a change "
        "waits the registry's SPLIT_CHANGE_DELAY, so nodes redeem what they served under the "
        "split they served it under)"
    )
    block_number: int
    created_at: int | None
    tx_hash: str


class ModelVersionPublic(BaseModel):
    model_id: int
    version: int
    adapter_cid: str
    training_manifest_cid: str
    datanet_id: int
    datanet_version: int
    block_number: int
    published_at: int | None
    tx_hash: str


class NodePublic(BaseModel):
    address: str
    bonded: Wei
    unbonding: Wei
    unbonding_unlock_at: int
    slashed: Wei
    endpoint: str
    held_until: int = Field(
        description="no stake can be withdrawn before (its epochs' challenge windows)"
    )
    open_disputes: int = Field(description="challenged epochs of this node not yet resolved")
    active: bool = Field(description="bonded stake at least the registry's minimum")


class WithdrawalStatus(StrEnum):
    """A channel's withdrawal request at the last indexed block."""

    NONE = "none"  # no request pending
    LOCKED = "locked"  # before its unlock time
    WITHDRAWABLE = "withdrawable"  # unlocked, within the withdrawal window
    LAPSED = "lapsed"  # past the window: it must be requested again


class SessionKeyPublic(BaseModel):
    """A key that signs vouchers for the payer on one channel, within an allowance. (What it
    has drawn so far is not logged per key: ``InferencePayments.sessionKey`` tells.)"""

    payer: str
    node: str
    signer: str
    expiry: int = Field(description="as last authorized")
    allowance: Wei = Field(description="what its vouchers may draw from the channel in total")
    valid_until: int = Field(
        description="its expiry or, once revoked, the revocation + the channel's withdraw delay "
        "if sooner: vouchers it signed are redeemable until then"
    )
    revoked: bool
    revoked_at: int | None = Field(description="when it was revoked (null: not revoked)")
    live: bool = Field(description="valid_until not passed at the last indexed block")
    block_number: int = Field(description="the block of its last authorization")
    authorized_at: int | None


class ChannelPublic(BaseModel):
    """The payment channel of a payer with one node: its deposit backs that node only."""

    payer: str
    node: str
    balance: Wei = Field(description="redeemable by the node")
    deposited: Wei
    spent: Wei = Field(description="paid to the node by redeemed vouchers")
    withdrawn: Wei
    withdraw_delay: int = Field(
        description="seconds a withdrawal (or a key's revocation) waits; fixed when the "
        "channel opened"
    )
    pending_withdrawal: Wei = Field(description="requested (0: none)")
    withdrawal_unlock_at: int = Field(description="0 when none is pending")
    withdrawal_lapses_at: int = Field(
        description="the unlock time + the withdrawal window: the request cannot be used after "
        "it (0 when none is pending)"
    )
    withdrawal_status: WithdrawalStatus
    block_number: int = Field(description="the block that opened it")
    opened_at: int | None
    tx_hash: str = Field(description="the transaction that opened it")


class ChannelDetail(ChannelPublic):
    session_keys: list[SessionKeyPublic] = Field(description="revoked ones included")


class PayerAccountPublic(BaseModel):
    """A payer's totals over its channels."""

    payer: str
    channel_count: int
    balance: Wei
    deposited: Wei
    spent: Wei = Field(description="paid to nodes by redeemed vouchers")
    withdrawn: Wei
    pending_withdrawal: Wei = Field(description="requested, lapsed requests included")


class PayerAccountDetail(PayerAccountPublic):
    channels: list[ChannelDetail] = Field(description="in the order they were opened")


class RedemptionPublic(BaseModel):
    tx_hash: str
    log_index: int
    payer: str
    node: str
    model_id: int
    cumulative_amount: Wei
    paid: Wei
    shortfall: Wei
    usage_proof_id: int | None
    block_number: int
    redeemed_at: int | None


class SkipReason(StrEnum):
    """Why a redemption skipped a voucher (IInferencePayments.SkipReason)."""

    EXPIRED = "expired"  # its deadline passed
    INVALID_SIGNER = "invalid_signer"  # not signed by the payer nor a session key of the channel
    SESSION_KEY_NOT_LIVE = "session_key_not_live"  # its key expired, or its revocation took effect
    NOT_ABOVE_REDEEMED = "not_above_redeemed"  # its (payer, model) already redeemed as much


class SkippedVoucherPublic(BaseModel):
    """A voucher a node submitted that its redemption did not pay."""

    tx_hash: str
    log_index: int
    payer: str
    node: str
    model_id: int
    index: int = Field(description="its position in the redemption's batch")
    reason: SkipReason
    usage_proof_id: int | None
    block_number: int
    skipped_at: int | None


class PaymentSplitPublic(BaseModel):
    model_id: int
    node: str
    developer: str
    amount: Wei
    node_share: Wei
    developer_share: Wei
    contributors_share: Wei
    protocol_share: Wei


class UsageProofPublic(BaseModel):
    id: int
    node: str
    receipts_root: str
    receipt_count: int
    receipts_cid: str
    amount: Wei
    block_number: int
    recorded_at: int | None
    tx_hash: str


class UsageProofDetail(UsageProofPublic):
    redemptions: list[RedemptionPublic]
    skipped: list[SkippedVoucherPublic] = Field(description="the vouchers it did not pay")
    splits: list[PaymentSplitPublic]


class PoolPublic(BaseModel):
    model_id: int
    funded: Wei
    unallocated: Wei
    claimed: Wei


class EpochPublic(BaseModel):
    id: int
    model_id: int
    poster: str
    merkle_root: str
    total: Wei
    claimed: Wei
    report_cid: str
    challenge_ends_at: int
    claim_ends_at: int | None = Field(
        description="from then on anyone may sweep the unclaimed rest back to the pool"
    )
    status: str = Field(description="posted, challenged, rejected or expired")
    claimable: bool = Field(description="posted and past its challenge window at the last block")
    challenger: str | None
    swept: Wei | None = Field(description="the unclaimed rest returned to the pool, once expired")
    block_number: int
    posted_at: int | None
    tx_hash: str


class ClaimPublic(BaseModel):
    epoch_id: int
    index: int
    account: str
    amount: Wei
    block_number: int
    claimed_at: int | None
    tx_hash: str


class ClaimEntry(BaseModel):
    """A leaf of an epoch's report, (uint256 index, address account, uint256 amount), with
    what ``AttributionRewards.claim`` needs."""

    epoch_id: int
    model_id: int
    index: int
    account: str
    amount: Wei
    proof: list[str]
    merkle_root: str
    claimed: bool
    claimable: bool = Field(description="the epoch is claimable and this leaf is not claimed")


class ClaimablePage(Page[ClaimEntry]):
    unavailable_epochs: list[int] = Field(
        description="epochs whose report is not in the content store or does not match its root"
    )


class ContributionEarning(BaseModel):
    datanet_id: int
    contribution_id: int
    amount: Wei


class EarningEntry(BaseModel):
    """What one epoch pays an account, from the epoch's report."""

    epoch_id: int
    model_id: int
    status: str = Field(description="posted, challenged or expired")
    amount: Wei
    claimed: bool
    contributions: list[ContributionEarning] = Field(
        description="the account's contributions that earned it (empty for reports without "
        "a per-contribution breakdown)"
    )


class Earnings(BaseModel):
    account: str
    items: list[EarningEntry]
    total_earned: Wei
    total_claimed: Wei
    unavailable_epochs: list[int] = Field(
        description="epochs whose report is not in the content store or does not match its root"
    )


@dataclass(frozen=True)
class EventPublic(DecodedLog):
    """A protocol log as the indexer decoded and stored it (its fields are the indexer's)."""


class UploadResult(BaseModel):
    datanet_id: int
    cid: str
    size: int = Field(description="bytes")
    records: int = Field(description="JSONL lines, or 1 for text")
    pinned: bool
    contribution_id: int | None = Field(description="already contributed to this Datanet as")
