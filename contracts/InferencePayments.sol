// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {Governed} from "./governance/Governed.sol";
import {IAttributionRewards} from "./interfaces/IAttributionRewards.sol";
import {IInferencePayments} from "./interfaces/IInferencePayments.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title InferencePayments
/// @notice Deposits, session keys, voucher redemption with payment splits, and usage proofs.
contract InferencePayments is IInferencePayments, Governed, EIP712, Nonces, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant VOUCHER_TYPEHASH = keccak256(
        "Voucher(address payer,address node,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)"
    );
    bytes32 public constant SESSION_KEY_TYPEHASH = keccak256(
        "SessionKeyAuthorization(address payer,address signer,uint256 expiry,uint256 nonce,uint256 deadline)"
    );
    uint256 private constant _BPS = 10_000;

    IERC20 public immutable token;
    IModelRegistry public immutable models;
    INodeRegistry public immutable nodes;
    IAttributionRewards public immutable rewards;

    uint256 private _withdrawalDelay;
    address private _treasury;
    uint256 private _usageProofCount;
    mapping(address payer => Account) private _accounts;
    mapping(address payer => mapping(address signer => uint256 expiry)) private _sessionKeys;
    mapping(address payer => mapping(address node => mapping(uint256 modelId => uint256))) private _redeemed;
    mapping(address account => uint256 amount) private _earnings; // OPEN wei
    mapping(uint256 proofId => UsageRecord) private _usageRecords;

    /// @dev The voucher totals of one model in a redemption, split once per run of that model.
    struct ModelRun {
        uint256 modelId;
        uint256 amount; // OPEN wei paid for this model in the run
        address developer;
        IModelRegistry.Split split;
    }

    constructor(
        IERC20 token_,
        IModelRegistry models_,
        INodeRegistry nodes_,
        IAttributionRewards rewards_,
        address governance,
        address treasury_,
        uint256 withdrawalDelay_
    ) Governed(governance) EIP712("OpenLedger InferencePayments", "1") {
        if (
            address(token_) == address(0) || address(models_) == address(0)
                || address(nodes_) == address(0) || address(rewards_) == address(0)
        ) revert PaymentsZeroAddress();
        token = token_;
        models = models_;
        nodes = nodes_;
        rewards = rewards_;
        _setTreasury(treasury_);
        _setWithdrawalDelay(withdrawalDelay_);
        // The rewards contract pulls the contributors' share of each redemption into its pools.
        token_.forceApprove(address(rewards_), type(uint256).max);
    }

    // ---------------------------------------------------------------- payers

    /// @inheritdoc IInferencePayments
    function deposit(uint256 amount) external whenNotPaused nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @inheritdoc IInferencePayments
    function depositWithPermit(
        address payer,
        uint256 amount,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external whenNotPaused nonReentrant {
        // A failed permit (say, front-run) may still be covered by the allowance, but only the
        // payer itself may then deposit from it: otherwise anyone could move a payer's standing
        // approval into its deposit and lock it there for the withdrawal delay.
        try IERC20Permit(address(token)).permit(payer, address(this), amount, deadline, v, r, s) {}
        catch {
            if (msg.sender != payer) revert PermitRejected(payer);
        }
        uint256 allowance = token.allowance(payer, address(this));
        if (allowance < amount) revert PermitAllowanceTooLow(payer, allowance, amount);
        _deposit(payer, amount);
    }

    /// @inheritdoc IInferencePayments
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert PaymentsZeroAmount();
        Account storage account = _accounts[msg.sender];
        uint256 balance = account.balance;
        if (amount > balance) revert WithdrawalExceedsBalance(msg.sender, balance, amount);
        uint64 unlockAt = (block.timestamp + _withdrawalDelay).toUint64();
        account.pendingWithdrawal = uint128(amount); // amount <= balance < 2^128
        account.withdrawalUnlockAt = unlockAt;
        emit WithdrawalRequested(msg.sender, amount, unlockAt);
    }

    /// @inheritdoc IInferencePayments
    function cancelWithdrawal() external {
        Account storage account = _accounts[msg.sender];
        if (account.pendingWithdrawal == 0) revert NoWithdrawalPending(msg.sender);
        account.pendingWithdrawal = 0;
        account.withdrawalUnlockAt = 0;
        emit WithdrawalCancelled(msg.sender);
    }

    /// @inheritdoc IInferencePayments
    function withdraw() external nonReentrant returns (uint256 amount) {
        Account storage account = _accounts[msg.sender];
        uint256 pending = account.pendingWithdrawal;
        if (pending == 0) revert NoWithdrawalPending(msg.sender);
        if (block.timestamp < account.withdrawalUnlockAt) {
            revert WithdrawalLocked(msg.sender, account.withdrawalUnlockAt, block.timestamp);
        }
        uint256 balance = account.balance;
        amount = pending < balance ? pending : balance; // redemptions may have spent some
        // amount <= balance.
        unchecked {
            account.balance = uint128(balance - amount);
        }
        account.pendingWithdrawal = 0;
        account.withdrawalUnlockAt = 0;
        emit Withdrawn(msg.sender, amount);
        if (amount != 0) token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IInferencePayments
    function authorizeSessionKey(address signer, uint256 expiry) external {
        _authorizeSessionKey(msg.sender, signer, expiry);
    }

    /// @inheritdoc IInferencePayments
    function authorizeSessionKeyWithSig(
        address payer,
        address signer,
        uint256 expiry,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        if (block.timestamp > deadline) revert AuthorizationExpired(deadline);
        bytes32 structHash =
            keccak256(abi.encode(SESSION_KEY_TYPEHASH, payer, signer, expiry, _useNonce(payer), deadline));
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(_hashTypedDataV4(structHash), v, r, s);
        if (err != ECDSA.RecoverError.NoError || recovered != payer) {
            revert InvalidAuthorizationSignature(payer, recovered);
        }
        _authorizeSessionKey(payer, signer, expiry);
    }

    /// @inheritdoc IInferencePayments
    function revokeSessionKey(address signer) external {
        delete _sessionKeys[msg.sender][signer];
        emit SessionKeyRevoked(msg.sender, signer);
    }

    // ---------------------------------------------------------------- nodes

    /// @inheritdoc IInferencePayments
    function redeem(SignedVoucher[] calldata vouchers, UsageProof calldata proof)
        external
        nonReentrant
        returns (uint256 proofId, uint256 paid)
    {
        uint256 n = vouchers.length;
        if (n == 0) revert EmptyRedemption();
        if (!nodes.isActive(msg.sender)) revert NodeNotActive(msg.sender);

        // Contributors' shares to move into the attribution pools once all effects are done.
        uint256[] memory poolModelIds = new uint256[](n);
        uint256[] memory poolAmounts = new uint256[](n);
        uint256 poolCount;
        uint256 nodeTotal;
        uint256 protocolTotal;
        ModelRun memory run;

        for (uint256 i; i < n; ++i) {
            SignedVoucher calldata voucher = vouchers[i];
            if (i == 0 || voucher.modelId != run.modelId) {
                if (i != 0) {
                    (uint256 nodeShare, uint256 protocolShare, uint256 contributorsShare) = _split(run);
                    nodeTotal += nodeShare;
                    protocolTotal += protocolShare;
                    if (contributorsShare != 0) {
                        poolModelIds[poolCount] = run.modelId;
                        poolAmounts[poolCount++] = contributorsShare;
                    }
                }
                (run.developer, run.split) = models.paymentTerms(voucher.modelId);
                run.modelId = voucher.modelId;
                run.amount = 0;
            }
            uint256 voucherPaid = _redeemVoucher(i, voucher);
            run.amount += voucherPaid;
            paid += voucherPaid;
        }
        {
            (uint256 nodeShare, uint256 protocolShare, uint256 contributorsShare) = _split(run);
            nodeTotal += nodeShare;
            protocolTotal += protocolShare;
            if (contributorsShare != 0) {
                poolModelIds[poolCount] = run.modelId;
                poolAmounts[poolCount++] = contributorsShare;
            }
        }
        if (nodeTotal != 0) _earnings[msg.sender] += nodeTotal;
        if (protocolTotal != 0) _earnings[_treasury] += protocolTotal;

        proofId = ++_usageProofCount;
        _usageRecords[proofId] = UsageRecord({
            receiptsRoot: proof.receiptsRoot,
            node: msg.sender,
            receiptCount: proof.receiptCount,
            recordedAt: uint40(block.timestamp),
            amount: paid.toUint128()
        });
        emit UsageProofRecorded(
            proofId, msg.sender, proof.receiptsRoot, proof.receiptCount, proof.receiptsCID, paid
        );

        // Interactions last: the rewards contract pulls each pool's share.
        for (uint256 j; j < poolCount; ++j) {
            rewards.fundPool(poolModelIds[j], poolAmounts[j]);
        }
    }

    /// @inheritdoc IInferencePayments
    function withdrawEarnings() external nonReentrant returns (uint256 amount) {
        amount = _earnings[msg.sender];
        if (amount == 0) revert NoEarnings(msg.sender);
        _earnings[msg.sender] = 0;
        emit EarningsWithdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- governance

    /// @notice Sets the withdrawal delay (seconds). Emits a {WithdrawalDelaySet} event.
    function setWithdrawalDelay(uint256 withdrawalDelay_) external onlyOwner {
        _setWithdrawalDelay(withdrawalDelay_);
    }

    /// @notice Sets the treasury for future redemptions. Emits a {TreasurySet} event.
    function setTreasury(address treasury_) external onlyOwner {
        _setTreasury(treasury_);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IInferencePayments
    function accountOf(address payer) external view returns (Account memory) {
        return _accounts[payer];
    }

    /// @inheritdoc IInferencePayments
    function redeemed(address payer, address node, uint256 modelId) external view returns (uint256) {
        return _redeemed[payer][node][modelId];
    }

    /// @inheritdoc IInferencePayments
    function earnings(address account) external view returns (uint256) {
        return _earnings[account];
    }

    /// @inheritdoc IInferencePayments
    function sessionKeyExpiry(address payer, address signer) external view returns (uint256) {
        return _sessionKeys[payer][signer];
    }

    /// @inheritdoc IInferencePayments
    function voucherDigest(Voucher calldata voucher) external view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VOUCHER_TYPEHASH,
                    voucher.payer,
                    voucher.node,
                    voucher.modelId,
                    voucher.cumulativeAmount,
                    voucher.deadline
                )
            )
        );
    }

    /// @inheritdoc IInferencePayments
    function usageRecord(uint256 proofId) external view returns (UsageRecord memory) {
        return _usageRecords[proofId];
    }

    /// @inheritdoc IInferencePayments
    function usageProofCount() external view returns (uint256) {
        return _usageProofCount;
    }

    /// @inheritdoc IInferencePayments
    function nonces(address payer) public view override(IInferencePayments, Nonces) returns (uint256) {
        return super.nonces(payer);
    }

    /// @inheritdoc IInferencePayments
    function withdrawalDelay() external view returns (uint256) {
        return _withdrawalDelay;
    }

    /// @inheritdoc IInferencePayments
    function treasury() external view returns (address) {
        return _treasury;
    }

    /// @notice The EIP-712 domain separator (chain id and this address included).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- internals

    function _deposit(address payer, uint256 amount) private {
        if (amount == 0) revert PaymentsZeroAmount();
        Account storage account = _accounts[payer];
        uint128 balance = account.balance + amount.toUint128();
        account.balance = balance;
        emit Deposited(payer, amount, balance);
        token.safeTransferFrom(payer, address(this), amount);
    }

    function _authorizeSessionKey(address payer, address signer, uint256 expiry) private {
        if (signer == address(0)) revert PaymentsZeroAddress();
        if (expiry <= block.timestamp) revert SessionKeyExpiryInPast(expiry);
        _sessionKeys[payer][signer] = expiry;
        emit SessionKeyAuthorized(payer, signer, expiry);
    }

    /// @dev Checks one voucher, advances its channel and debits the payer. Returns what it paid.
    function _redeemVoucher(uint256 index, SignedVoucher calldata voucher) private returns (uint256 voucherPaid) {
        _checkVoucher(index, voucher);
        address payer = voucher.payer;
        uint256 cumulative = voucher.cumulativeAmount;
        mapping(uint256 => uint256) storage channels = _redeemed[payer][msg.sender];
        uint256 alreadyRedeemed = channels[voucher.modelId];
        if (cumulative <= alreadyRedeemed) {
            revert VoucherNotAboveRedeemed(index, cumulative, alreadyRedeemed);
        }
        Account storage account = _accounts[payer];
        uint256 balance = account.balance;
        uint256 shortfall;
        // cumulative > alreadyRedeemed was checked; voucherPaid <= balance and <= the amount due.
        unchecked {
            uint256 due = cumulative - alreadyRedeemed;
            voucherPaid = due < balance ? due : balance;
            shortfall = due - voucherPaid;
            if (voucherPaid != 0) {
                channels[voucher.modelId] = alreadyRedeemed + voucherPaid;
                account.balance = uint128(balance - voucherPaid);
            }
        }
        emit VoucherRedeemed(payer, msg.sender, voucher.modelId, cumulative, voucherPaid, shortfall);
    }

    /// @dev Reverts unless `voucher` is unexpired and signed for this node by its payer or by a
    /// live session key of its payer.
    function _checkVoucher(uint256 index, SignedVoucher calldata voucher) private view {
        if (voucher.deadline < block.timestamp) {
            revert VoucherExpired(index, voucher.deadline, block.timestamp);
        }
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    VOUCHER_TYPEHASH,
                    voucher.payer,
                    msg.sender,
                    voucher.modelId,
                    voucher.cumulativeAmount,
                    voucher.deadline
                )
            )
        );
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, voucher.v, voucher.r, voucher.s);
        if (
            err != ECDSA.RecoverError.NoError
                || (signer != voucher.payer && _sessionKeys[voucher.payer][signer] <= block.timestamp)
        ) revert InvalidVoucherSigner(index, voucher.payer, signer);
    }

    /// @dev Splits a run's amount: the developer's share is credited here; the node's, the
    /// protocol's and the contributors' (which takes the rounding dust) are returned.
    function _split(ModelRun memory run)
        private
        returns (uint256 nodeShare, uint256 protocolShare, uint256 contributorsShare)
    {
        uint256 amount = run.amount;
        if (amount == 0) return (0, 0, 0);
        nodeShare = amount * run.split.node / _BPS;
        protocolShare = amount * run.split.protocol / _BPS;
        uint256 developerShare = amount * run.split.developer / _BPS;
        // The three shares are each floor(amount * bps / 10,000) with bps summing to at most
        // 10,000, so their sum is at most amount.
        unchecked {
            contributorsShare = amount - nodeShare - protocolShare - developerShare;
        }
        if (developerShare != 0) _earnings[run.developer] += developerShare;
        emit PaymentSplit(
            run.modelId, msg.sender, run.developer, amount, nodeShare, developerShare, contributorsShare, protocolShare
        );
    }

    function _setWithdrawalDelay(uint256 withdrawalDelay_) private {
        _withdrawalDelay = withdrawalDelay_;
        emit WithdrawalDelaySet(withdrawalDelay_);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert PaymentsZeroAddress();
        _treasury = treasury_;
        emit TreasurySet(treasury_);
    }
}
