// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IInferencePayments
/// @notice Pay-per-inference in OPEN. Payers deposit; for each channel (payer, node, model) the
/// payer (or a session key it authorized) signs EIP-712 vouchers for a growing cumulative amount;
/// a staked node redeems the latest voucher of many channels in one transaction and is paid
/// `cumulativeAmount - alreadyRedeemed`. Each redemption is split by the model's split: node and
/// developer shares become withdrawable earnings, the protocol share is credited to the treasury
/// and the contributors' share (plus the rounding dust of the split) funds the model's
/// attribution pool. The redemption also records a usage proof: the Merkle root, count and CID
/// of the receipts it pays for.
///
/// Withdrawals wait `withdrawalDelay` after being requested, and the balance stays redeemable
/// meanwhile, so a node always has that long to redeem what it was promised.
/// A voucher that exceeds the payer's balance is paid what the balance holds; the channel then
/// records only what was paid, so the rest can be redeemed later if the payer deposits again.
interface IInferencePayments {
    /// @notice The EIP-712 voucher a payer signs:
    /// `Voucher(address payer,address node,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)`.
    struct Voucher {
        address payer;
        address node;
        uint256 modelId;
        uint256 cumulativeAmount; // OPEN wei promised on this channel in total
        uint256 deadline; // unix seconds; the voucher cannot be redeemed after it
    }

    /// @notice A voucher as a node redeems it: the node is the caller. `v`, `r`, `s` sign the
    /// {Voucher} digest, by the payer or by a session key of the payer.
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

    /// @notice A payer's account. Slot 1: balance | pendingWithdrawal; slot 2: withdrawalUnlockAt.
    struct Account {
        uint128 balance; // OPEN wei, redeemable by nodes
        uint128 pendingWithdrawal; // OPEN wei requested, paid after the delay (if still there)
        uint64 withdrawalUnlockAt; // unix seconds
    }

    /// @notice An amount of zero was given where a positive amount is required.
    error PaymentsZeroAmount();
    /// @notice The zero address was given where an account or contract is required.
    error PaymentsZeroAddress();
    /// @notice A withdrawal of `amount` exceeds the balance `balance` of `payer`.
    error WithdrawalExceedsBalance(address payer, uint256 balance, uint256 amount);
    /// @notice `payer` has no withdrawal pending.
    error NoWithdrawalPending(address payer);
    /// @notice The withdrawal of `payer` unlocks at `unlockAt`, later than `nowTimestamp`.
    error WithdrawalLocked(address payer, uint256 unlockAt, uint256 nowTimestamp);
    /// @notice A deposit with permit left an allowance of `allowance`, below `amount`.
    error PermitAllowanceTooLow(address payer, uint256 allowance, uint256 amount);
    /// @notice The permit of `payer` failed and the caller is not `payer`.
    error PermitRejected(address payer);
    /// @notice A session key expiry `expiry` is not in the future.
    error SessionKeyExpiryInPast(uint256 expiry);
    /// @notice A signed session key authorization expired at `deadline`.
    error AuthorizationExpired(uint256 deadline);
    /// @notice A signed session key authorization was signed by `signer`, not by `payer`.
    error InvalidAuthorizationSignature(address payer, address signer);
    /// @notice `node` is not an active (staked) node.
    error NodeNotActive(address node);
    /// @notice An empty batch was given.
    error EmptyRedemption();
    /// @notice Voucher `index` expired at `deadline`, before `nowTimestamp`.
    error VoucherExpired(uint256 index, uint256 deadline, uint256 nowTimestamp);
    /// @notice Voucher `index` is signed by `signer`, neither the payer nor a live session key.
    error InvalidVoucherSigner(uint256 index, address payer, address signer);
    /// @notice Voucher `index` promises `cumulativeAmount`, not more than the `redeemed` so far.
    error VoucherNotAboveRedeemed(uint256 index, uint256 cumulativeAmount, uint256 redeemed);
    /// @notice `account` has no earnings to withdraw.
    error NoEarnings(address account);

    /// @notice `payer` deposited `amount`; its balance is now `balance`.
    event Deposited(address indexed payer, uint256 amount, uint256 balance);
    /// @notice `payer` asked to withdraw `amount` at `unlockAt`.
    event WithdrawalRequested(address indexed payer, uint256 amount, uint256 unlockAt);
    /// @notice `payer` cancelled its pending withdrawal.
    event WithdrawalCancelled(address indexed payer);
    /// @notice `payer` withdrew `amount`.
    event Withdrawn(address indexed payer, uint256 amount);
    /// @notice `payer` let `signer` sign vouchers for it until `expiry`.
    event SessionKeyAuthorized(address indexed payer, address indexed signer, uint256 expiry);
    /// @notice `payer` revoked `signer`.
    event SessionKeyRevoked(address indexed payer, address indexed signer);
    /// @notice `node` redeemed the channel (payer, node, modelId) up to `cumulativeAmount`:
    /// `paid` now, `shortfall` not covered by the payer's balance (still redeemable later).
    event VoucherRedeemed(
        address indexed payer,
        address indexed node,
        uint256 indexed modelId,
        uint256 cumulativeAmount,
        uint256 paid,
        uint256 shortfall
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
    /// @notice Governance set the withdrawal delay, in seconds.
    event WithdrawalDelaySet(uint256 withdrawalDelay);
    /// @notice Governance set the treasury that receives the protocol's share.
    event TreasurySet(address indexed treasury);

    /// @notice Deposits `amount` of the caller's approved OPEN. Requirements: not paused; `amount` > 0.
    /// Emits a {Deposited} event.
    function deposit(uint256 amount) external;

    /// @notice Deposits `amount` of `payer`'s OPEN for `payer`, approved by an EIP-2612 permit
    /// signed by `payer`; anyone may submit it. When the permit fails (for instance because it
    /// was front-run), only `payer` itself may deposit from the allowance that is there.
    /// Requirements: not paused; `amount` > 0; the permit succeeds or the caller is `payer`;
    /// allowance >= `amount`. Emits a {Deposited} event.
    function depositWithPermit(
        address payer,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Asks to withdraw `amount`, payable after the withdrawal delay; replaces any pending
    /// request and restarts the delay. Requirements: 0 < `amount` <= balance.
    /// Emits a {WithdrawalRequested} event.
    function requestWithdrawal(uint256 amount) external;

    /// @notice Cancels the pending withdrawal. Emits a {WithdrawalCancelled} event.
    function cancelWithdrawal() external;

    /// @notice Pays the pending withdrawal, or as much of it as is left after redemptions.
    /// Requirements: a withdrawal pending and unlocked. Never paused. Emits a {Withdrawn} event.
    function withdraw() external returns (uint256 amount);

    /// @notice Lets `signer` sign vouchers for the caller until `expiry`.
    /// Requirements: `signer` non-zero; `expiry` in the future. Emits {SessionKeyAuthorized}.
    function authorizeSessionKey(address signer, uint256 expiry) external;

    /// @notice As {authorizeSessionKey}, by an EIP-712 signature of `payer` over
    /// `SessionKeyAuthorization(address payer,address signer,uint256 expiry,uint256 nonce,uint256 deadline)`
    /// with the payer's current nonce; anyone may submit it.
    /// Requirements: `deadline` not passed; signed by `payer`. Emits {SessionKeyAuthorized}.
    function authorizeSessionKeyWithSig(
        address payer,
        address signer,
        uint256 expiry,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    /// @notice Revokes `signer` at once: vouchers it signed can no longer be redeemed.
    /// Emits a {SessionKeyRevoked} event.
    function revokeSessionKey(address signer) external;

    /// @notice Redeems the latest voucher of each channel in `vouchers` for the caller (the node)
    /// and records `proof` as what the redemption pays for.
    /// Requirements: caller is an active node; at least one voucher; each voucher unexpired,
    /// signed by its payer or a live session key, above what its channel redeemed, for a
    /// registered model. Never paused (a voucher is money already owed).
    /// Emits {VoucherRedeemed} per voucher, {PaymentSplit} per run of one model, {UsageProofRecorded}.
    /// @return proofId The id of the recorded usage proof.
    /// @return paid What was paid in total, in OPEN wei.
    function redeem(SignedVoucher[] calldata vouchers, UsageProof calldata proof)
        external
        returns (uint256 proofId, uint256 paid);

    /// @notice Sends the caller its earnings (node, developer or treasury). Never paused.
    /// Emits an {EarningsWithdrawn} event.
    function withdrawEarnings() external returns (uint256 amount);

    /// @notice The account of `payer`.
    function accountOf(address payer) external view returns (Account memory);

    /// @notice What channel (payer, node, modelId) redeemed so far, in OPEN wei.
    function redeemed(address payer, address node, uint256 modelId) external view returns (uint256);

    /// @notice The withdrawable earnings of `account`, in OPEN wei.
    function earnings(address account) external view returns (uint256);

    /// @notice When the session key `signer` of `payer` expires (0: never authorized or revoked).
    function sessionKeyExpiry(address payer, address signer) external view returns (uint256);

    /// @notice The EIP-712 digest of `voucher` that its signer signs.
    function voucherDigest(Voucher calldata voucher) external view returns (bytes32);

    /// @notice Usage proof `proofId`.
    function usageRecord(uint256 proofId) external view returns (UsageRecord memory);

    /// @notice How many usage proofs were recorded (ids are 1..usageProofCount).
    function usageProofCount() external view returns (uint256);

    /// @notice The next nonce of `payer` for {authorizeSessionKeyWithSig}.
    function nonces(address payer) external view returns (uint256);

    /// @notice Seconds between a withdrawal request and its payment.
    function withdrawalDelay() external view returns (uint256);

    /// @notice Receives the protocol's share of every redemption.
    function treasury() external view returns (address);
}
