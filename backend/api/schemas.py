"""Response models. Amounts are OPEN wei as decimal strings; times are unix seconds (null when
the node did not report a block's timestamp); hashes, roots and proofs are 0x-hex."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

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
    status: str = Field(description="pending, approved or rejected")
    curator: str | None
    block_number: int
    created_at: int | None
    reviewed_at: int | None
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


class ModelPublic(BaseModel):
    id: int
    developer: str
    metadata_cid: str
    base_model_cid: str
    attributor: str
    status: str = Field(description="active, paused or retired")
    version_count: int
    pricing: Pricing
    split: Split
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
    active: bool = Field(description="bonded stake at least the registry's minimum")


class SessionKey(BaseModel):
    signer: str
    expiry: int


class PayerAccountPublic(BaseModel):
    payer: str
    balance: Wei
    pending_withdrawal: Wei
    withdrawal_unlock_at: int
    deposited: Wei
    spent: Wei = Field(description="paid to nodes by redeemed vouchers")
    withdrawn: Wei


class PayerAccountDetail(PayerAccountPublic):
    session_keys: list[SessionKey]


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
    status: str = Field(description="posted, challenged or rejected")
    claimable: bool = Field(description="posted and past its challenge window at the last block")
    challenger: str | None
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


class EventPublic(BaseModel):
    block_number: int
    block_hash: str
    block_timestamp: int | None
    tx_hash: str
    log_index: int
    contract: str
    address: str
    event: str
    args: dict[str, Any]


class UploadResult(BaseModel):
    datanet_id: int
    cid: str
    size: int = Field(description="bytes")
    records: int = Field(description="JSONL lines, or 1 for text")
    pinned: bool
    contribution_id: int | None = Field(description="already contributed to this Datanet as")
