// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IInferencePayments
/// @notice Pay-per-inference in OPEN through payment channels, one per (payer, node).
///
/// A payer deposits into its channel with a node; that deposit backs only that node, so what a
/// node accepts is never spent by another node. For each model the payer (or a session key it
/// authorized for the channel) signs EIP-712 vouchers for a growing cumulative amount; the node
/// redeems the latest voucher of many (payer, model) pairs in one transaction and is paid
/// `cumulativeAmount - redeemed`, up to the channel's balance.
///
/// Every change that could take away from what a node was promised waits the channel's own
/// `withdrawDelay`, fixed when the channel opens (governance changes later do not touch it):
/// a withdrawal is paid only after it, and a revoked session key keeps signing power for it,
/// so the node always has that long to redeem what it served. A withdrawal request must be used
/// within `WITHDRAWAL_WINDOW` of unlocking, or it lapses. Session keys are scoped to one
/// channel and capped by an allowance: a stolen key can move at most its allowance, and only
/// to the channel's node. Split changes of a model wait `SPLIT_CHANGE_DELAY` in ModelRegistry.
///
/// A redemption never reverts because of one voucher: a voucher that fails (expired, signer not
/// live, not above what its pair redeemed) is skipped with a {VoucherSkipped} event and the rest
/// are paid. Each redemption is split by the model's split: node and developer shares become
/// withdrawable earnings, the protocol share is credited to the treasury and the contributors'
/// share (plus the rounding dust of the split) funds the model's attribution pool. The
/// redemption also records a usage proof: the Merkle root, count and CID of its receipts.
interface IInferencePayments {
    /// @notice The EIP-712 voucher a payer (or its session key) signs:
    /// `Voucher(address payer,address node,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)`.
    struct Voucher {
        address payer;
        address node;
        uint256 modelId;
        uint256 cumulativeAmount; // OPEN wei promised for this model on the channel in total
        uint256 deadline; // unix seconds; the voucher cannot be redeemed after it
    }

    /// @notice A voucher as a node redeems it: the node is the caller. `v`, `r`, `s` sign the
    /// {Voucher} digest, by the payer or by a session key of the channel.
    struct SignedVoucher {
        address payer;
        uint256 modelId;
        uint256 cumulativeAmount;
        uint256 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    /// @notice What a redemption pays for: the receipts (one per inference) in the content store.
    struct UsageProof {
        bytes32 receiptsRoot; // Merkle root of the receipts
        uint64 receiptCount;
        string receiptsCID; // the receipts log
    }

    /// @notice A recorded usage proof (its CID is in the {UsageProofRecorded} event).
    struct UsageRecord {
        bytes32 receiptsRoot;
        address node;
        uint64 receiptCount;
        uint40 recordedAt; // unix seconds
        uint128 amount; // OPEN wei paid by the redemption that recorded it
    }

    /// @notice The channel (payer, node). Slot 1: balance | pendingWithdrawal; slot 2: the rest.
    struct Channel {
        uint128 balance; // OPEN wei, redeemable by the node only
        uint128 pendingWithdrawal; // OPEN wei requested
        uint64 withdrawalUnlockAt; // unix seconds; the request lapses WITHDRAWAL_WINDOW after it
        uint64 withdrawDelay; // seconds, fixed when the channel opened (0: never opened)
    }

    /// @notice A session key of a channel, in one slot.
    struct SessionKey {
        uint64 validUntil; // unix seconds: its expiry, or its revocation + the channel's delay
        uint96 allowance; // OPEN wei its vouchers may draw from the channel in total
        uint96 spent; // OPEN wei drawn by its vouchers so far
    }

    /// @notice Why a voucher of a redemption was skipped.
    enum SkipReason {
        None,
        Expired, // its deadline passed
        InvalidSigner, // not signed by the payer nor by a session key of the channel
        SessionKeyNotLive, // signed by a session key that expired or whose revocation took effect
        NotAboveRedeemed // its pair already redeemed as much
    }

    /// @notice An amount of zero was given where a positive amount is required.
    error PaymentsZeroAmount();
    /// @notice The zero address was given where an account or contract is required.
    error PaymentsZeroAddress();
    /// @notice A withdrawal of `amount` exceeds the balance `balance` of channel (`payer`, `node`).
    error WithdrawalExceedsBalance(address payer, address node, uint256 balance, uint256 amount);
    /// @notice Channel (`payer`, `node`) has no withdrawal pending.
    error NoWithdrawalPending(address payer, address node);
    /// @notice The withdrawal unlocks at `unlockAt`, later than `nowTimestamp`.
    error WithdrawalLocked(address payer, address node, uint256 unlockAt, uint256 nowTimestamp);
    /// @notice The withdrawal lapsed at `lapsedAt` (unlock + WITHDRAWAL_WINDOW): request it again.
    error WithdrawalLapsed(address payer, address node, uint256 lapsedAt);
    /// @notice A deposit with permit left an allowance of `allowance`, below `amount`.
    error PermitAllowanceTooLow(address payer, uint256 allowance, uint256 amount);
    /// @notice A session key expiry `expiry` is not in the future.
    error SessionKeyExpiryInPast(uint256 expiry);
    /// @notice A session key would get less time or allowance than it has while it is live:
    /// revoke it (the reduction then waits the channel's delay) instead.
    error SessionKeyReduction(uint256 validUntil, uint256 allowance);
    /// @notice A session key allowance above 2^96 - 1 wei.
    error SessionKeyAllowanceTooHigh(uint256 allowance);
    /// @notice A signed session key authorization expired at `deadline`.
    error AuthorizationExpired(uint256 deadline);
    /// @notice A signed session key authorization was signed by `signer`, not by `payer`.
    error InvalidAuthorizationSignature(address payer, address signer);
    /// @notice `node` is not an active (staked) node.
    error NodeNotActive(address node);
    /// @notice An empty batch was given.
    error EmptyRedemption();
    /// @notice `account` has no earnings to withdraw.
    error NoEarnings(address account);
    /// @notice A withdrawal delay outside [`min`, `max`] seconds.
    error WithdrawalDelayOutOfBounds(uint256 delay, uint256 min, uint256 max);

    /// @notice `payer` deposited `amount` into its channel with `node`; its balance is `balance`.
    event Deposited(address indexed payer, address indexed node, uint256 amount, uint256 balance);
    /// @notice Channel (`payer`, `node`) opened with its own withdrawal delay.
    event ChannelOpened(address indexed payer, address indexed node, uint256 withdrawDelay);
    /// @notice `payer` asked to withdraw `amount` from its channel with `node` at `unlockAt`.
    event WithdrawalRequested(address indexed payer, address indexed node, uint256 amount, uint256 unlockAt);
    /// @notice `payer` cancelled the pending withdrawal of its channel with `node`.
    event WithdrawalCancelled(address indexed payer, address indexed node);
    /// @notice `payer` withdrew `amount` from its channel with `node`.
    event Withdrawn(address indexed payer, address indexed node, uint256 amount);
    /// @notice `payer` let `signer` sign vouchers on its channel with `node`.
    event SessionKeyAuthorized(
        address indexed payer, address indexed node, address indexed signer, uint256 expiry, uint256 allowance
    );
    /// @notice `payer` revoked `signer`; its vouchers stay redeemable until `validUntil`.
    event SessionKeyRevoked(
        address indexed payer, address indexed node, address indexed signer, uint256 validUntil
    );
    /// @notice `node` redeemed the pair (payer, modelId) of its channel up to `cumulativeAmount`:
    /// `paid` now, `shortfall` not covered by the balance or the session key's allowance (still
    /// redeemable later).
    event VoucherRedeemed(
        address indexed payer,
        address indexed node,
        uint256 indexed modelId,
        uint256 cumulativeAmount,
        uint256 paid,
        uint256 shortfall
    );
    /// @notice Voucher `index` of a redemption by `node` was not paid, for `reason`.
    event VoucherSkipped(
        address indexed payer, address indexed node, uint256 indexed modelId, uint256 index, SkipReason reason
    );
    /// @notice A redemption paid `amount` for model `modelId`, split as given (contributors'
    /// share includes the rounding dust and went to the attribution pool).
    event PaymentSplit(
        uint256 indexed modelId,
        address indexed node,
        address indexed developer,
        uint256 amount,
        uint256 nodeShare,
        uint256 developerShare,
        uint256 contributorsShare,
        uint256 protocolShare
    );
    /// @notice Usage proof `proofId`: `node` was paid `amount` for `receiptCount` receipts with
    /// Merkle root `receiptsRoot`, stored at `receiptsCID`.
    event UsageProofRecorded(
        uint256 indexed proofId,
        address indexed node,
        bytes32 receiptsRoot,
        uint256 receiptCount,
        string receiptsCID,
        uint256 amount
    );
    /// @notice `account` withdrew `amount` of earnings.
    event EarningsWithdrawn(address indexed account, uint256 amount);
    /// @notice Governance set the withdrawal delay of channels opened from now on, in seconds.
    event WithdrawalDelaySet(uint256 withdrawalDelay);
    /// @notice Governance set the treasury that receives the protocol's share.
    event TreasurySet(address indexed treasury);

    /// @notice Deposits `amount` of the caller's approved OPEN into its channel with `node`,
    /// opening the channel (with the current withdrawal delay) on the first deposit.
    /// Requirements: not paused; `amount` > 0; `node` non-zero. Emits {Deposited}
    /// (and {ChannelOpened} the first time).
    function deposit(address node, uint256 amount) external;

    /// @notice As {deposit}, approved in the same transaction by the caller's EIP-2612 permit.
    /// Only the payer sends it (a permit does not name the node, so a relayed one could be
    /// diverted to another channel). When the permit fails (for instance because it was
    /// front-run into the token), the allowance already there is used.
    function depositWithPermit(address node, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;

    /// @notice Asks to withdraw `amount` from the caller's channel with `node`, payable from the
    /// channel's delay on, for WITHDRAWAL_WINDOW; replaces any pending request and restarts the
    /// delay. Requirements: 0 < `amount` <= balance. Emits {WithdrawalRequested}.
    function requestWithdrawal(address node, uint256 amount) external;

    /// @notice Cancels the pending withdrawal of the caller's channel with `node`.
    function cancelWithdrawal(address node) external;

    /// @notice Pays the pending withdrawal, or as much of it as is left after redemptions.
    /// Requirements: a withdrawal pending, unlocked and not lapsed. Never paused.
    function withdraw(address node) external returns (uint256 amount);

    /// @notice Lets `signer` sign vouchers on the caller's channel with `node` until `expiry`,
    /// drawing at most `allowance` in total. A live key can only be extended (later expiry,
    /// larger allowance); what it already spent is kept.
    /// Requirements: `node`, `signer` non-zero; `expiry` in the future; `allowance` < 2^96.
    function authorizeSessionKey(address node, address signer, uint256 expiry, uint256 allowance) external;

    /// @notice As {authorizeSessionKey}, by an EIP-712 signature of `payer` over
    /// `SessionKeyAuthorization(address payer,address node,address signer,uint256 expiry,uint256 allowance,uint256 nonce,uint256 deadline)`
    /// with the payer's current nonce; anyone may submit it. {revokeSessionKey} uses the nonce up.
    function authorizeSessionKeyWithSig(
        address payer,
        address node,
        address signer,
        uint256 expiry,
        uint256 allowance,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Revokes `signer` on the caller's channel with `node`: it keeps its power for the
    /// channel's withdrawal delay (so vouchers the node accepted can still be redeemed), then
    /// stops. Also uses up the caller's nonce, so no signed authorization not yet submitted
    /// can re-enable a key. Emits {SessionKeyRevoked}.
    function revokeSessionKey(address node, address signer) external;

    /// @notice Redeems the latest voucher of each (payer, model) in `vouchers` for the caller
    /// (the node) and records `proof` as what the redemption pays for. Vouchers that fail are
    /// skipped ({VoucherSkipped}); the others are paid. Vouchers of one model should be
    /// consecutive (one split per run of a model).
    /// Requirements: caller is an active node; at least one voucher. Never paused.
    /// @return proofId The id of the recorded usage proof.
    /// @return paid What was paid in total, in OPEN wei.
    function redeem(SignedVoucher[] calldata vouchers, UsageProof calldata proof)
        external
        returns (uint256 proofId, uint256 paid);

    /// @notice Sends the caller its earnings (node, developer or treasury). Never paused.
    function withdrawEarnings() external returns (uint256 amount);

    /// @notice The channel (`payer`, `node`).
    function channel(address payer, address node) external view returns (Channel memory);

    /// @notice What the pair (payer, modelId) of channel (payer, node) redeemed so far, in OPEN wei.
    function redeemed(address payer, address node, uint256 modelId) external view returns (uint256);

    /// @notice The withdrawable earnings of `account`, in OPEN wei.
    function earnings(address account) external view returns (uint256);

    /// @notice The session key `signer` of channel (`payer`, `node`) (all zero: never authorized).
    function sessionKey(address payer, address node, address signer) external view returns (SessionKey memory);

    /// @notice The EIP-712 digest of `voucher` that its signer signs.
    function voucherDigest(Voucher calldata voucher) external view returns (bytes32);

    /// @notice Usage proof `proofId`.
    function usageRecord(uint256 proofId) external view returns (UsageRecord memory);

    /// @notice How many usage proofs were recorded (ids are 1..usageProofCount).
    function usageProofCount() external view returns (uint256);

    /// @notice The next nonce of `payer` for {authorizeSessionKeyWithSig}.
    function nonces(address payer) external view returns (uint256);

    /// @notice The withdrawal delay of channels opened from now on, in seconds.
    function withdrawalDelay() external view returns (uint256);

    /// @notice Receives the protocol's share of every redemption.
    function treasury() external view returns (address);
}
