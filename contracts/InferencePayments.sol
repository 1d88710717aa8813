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
/// @notice Payment channels per (payer, node), session keys per channel, voucher redemption
/// with payment splits, and usage proofs. See {IInferencePayments} for the rules.
contract InferencePayments is IInferencePayments, Governed, EIP712, Nonces, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    bytes32 public constant VOUCHER_TYPEHASH = keccak256(
        "Voucher(address payer,address node,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)"
    );
    bytes32 public constant SESSION_KEY_TYPEHASH = keccak256(
        "SessionKeyAuthorization(address payer,address node,address signer,uint256 expiry,uint256 allowance,uint256 nonce,uint256 deadline)"
    );
    /// @notice How long an unlocked withdrawal request stays usable (seconds).
    uint256 public constant WITHDRAWAL_WINDOW = 1 days;
    /// @notice Bounds of the withdrawal delay (seconds): a node needs time to redeem, and a
    /// payer must get its money back within a month.
    uint256 public constant MIN_WITHDRAWAL_DELAY = 1 minutes;
    uint256 public constant MAX_WITHDRAWAL_DELAY = 30 days;
    uint256 private constant _BPS = 10_000;

    IERC20 public immutable token;
    IModelRegistry public immutable models;
    INodeRegistry public immutable nodes;
    IAttributionRewards public immutable rewards;

    uint256 private _withdrawalDelay;
    address private _treasury;
    uint256 private _usageProofCount;
    mapping(address payer => mapping(address node => Channel)) private _channels;
    mapping(address payer => mapping(address node => mapping(address signer => SessionKey))) private _sessionKeys;
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

    /// @dev What a redemption's runs owe, gathered before any transfer (`redeem`).
    struct Settlement {
        uint256 nodeTotal;
        uint256 protocolTotal;
        uint256 poolCount;
        uint256[] poolModelIds;
        uint256[] poolAmounts;
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
    function deposit(address node, uint256 amount) external whenNotPaused nonReentrant {
        _deposit(msg.sender, node, amount);
    }

    /// @inheritdoc IInferencePayments
    function depositWithPermit(address node, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        whenNotPaused
        nonReentrant
    {
        // The payer sends it itself: a permit does not name the node, so a relayer (or anyone who
        // saw the permit in the mempool) could otherwise deposit it into a channel of their
        // choosing and lock it there for that channel's delay. A permit that fails (say, it was
        // front-run straight into the token) still leaves the allowance this deposit uses.
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        uint256 allowance = token.allowance(msg.sender, address(this));
        if (allowance < amount) revert PermitAllowanceTooLow(msg.sender, allowance, amount);
        _deposit(msg.sender, node, amount);
    }

    /// @inheritdoc IInferencePayments
    function requestWithdrawal(address node, uint256 amount) external {
        if (amount == 0) revert PaymentsZeroAmount();
        Channel storage ch = _channels[msg.sender][node];
        uint256 balance = ch.balance;
        if (amount > balance) revert WithdrawalExceedsBalance(msg.sender, node, balance, amount);
        // A channel with a balance is open, so its delay is at least MIN_WITHDRAWAL_DELAY.
        uint64 unlockAt = (block.timestamp + ch.withdrawDelay).toUint64();
        ch.pendingWithdrawal = uint128(amount); // amount <= balance < 2^128
        ch.withdrawalUnlockAt = unlockAt;
        emit WithdrawalRequested(msg.sender, node, amount, unlockAt);
    }

    /// @inheritdoc IInferencePayments
    function cancelWithdrawal(address node) external {
        Channel storage ch = _channels[msg.sender][node];
        if (ch.pendingWithdrawal == 0) revert NoWithdrawalPending(msg.sender, node);
        ch.pendingWithdrawal = 0;
        ch.withdrawalUnlockAt = 0;
        emit WithdrawalCancelled(msg.sender, node);
    }

    /// @inheritdoc IInferencePayments
    function withdraw(address node) external nonReentrant returns (uint256 amount) {
        Channel storage ch = _channels[msg.sender][node];
        uint256 pending = ch.pendingWithdrawal;
        if (pending == 0) revert NoWithdrawalPending(msg.sender, node);
        uint256 unlockAt = ch.withdrawalUnlockAt;
        if (block.timestamp < unlockAt) revert WithdrawalLocked(msg.sender, node, unlockAt, block.timestamp);
        // A request used long after it unlocked would take money that vouchers accepted since
        // (when the request had lapsed from the node's point of view) promised: it lapses.
        if (block.timestamp > unlockAt + WITHDRAWAL_WINDOW) {
            revert WithdrawalLapsed(msg.sender, node, unlockAt + WITHDRAWAL_WINDOW);
        }
        uint256 balance = ch.balance;
        amount = pending < balance ? pending : balance; // redemptions may have spent some
        // amount <= balance.
        unchecked {
            ch.balance = uint128(balance - amount);
        }
        ch.pendingWithdrawal = 0;
        ch.withdrawalUnlockAt = 0;
        emit Withdrawn(msg.sender, node, amount);
        if (amount != 0) token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IInferencePayments
    function authorizeSessionKey(address node, address signer, uint256 expiry, uint256 allowance) external {
        _authorizeSessionKey(msg.sender, node, signer, expiry, allowance);
    }

    /// @inheritdoc IInferencePayments
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
    ) external {
        if (block.timestamp > deadline) revert AuthorizationExpired(deadline);
        bytes32 digest = _sessionKeyDigest(payer, node, signer, expiry, allowance, deadline);
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, v, r, s);
        if (err != ECDSA.RecoverError.NoError || recovered != payer) {
            revert InvalidAuthorizationSignature(payer, recovered);
        }
        _authorizeSessionKey(payer, node, signer, expiry, allowance);
    }

    /// @inheritdoc IInferencePayments
    function revokeSessionKey(address node, address signer) external {
        SessionKey storage key = _sessionKeys[msg.sender][node][signer];
        // The key keeps its power for the channel's delay: vouchers the node accepted while it
        // was live stay redeemable (the node watches for this event and redeems).
        uint256 graceEnd = block.timestamp + _channels[msg.sender][node].withdrawDelay;
        if (key.validUntil > graceEnd) key.validUntil = uint64(graceEnd);
        // Signed authorizations not yet submitted must not bring the key back.
        _useNonce(msg.sender);
        emit SessionKeyRevoked(msg.sender, node, signer, key.validUntil);
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

        // What the runs owe: node and protocol totals, and the contributors' shares to move
        // into the attribution pools once all effects are done.
        Settlement memory owed = Settlement(0, 0, 0, new uint256[](n), new uint256[](n));
        ModelRun memory run;

        for (uint256 i; i < n; ++i) {
            SignedVoucher calldata voucher = vouchers[i];
            uint256 voucherPaid = _redeemVoucher(i, voucher);
            if (voucherPaid == 0) continue;
            if (run.amount == 0 || voucher.modelId != run.modelId) {
                if (run.amount != 0) _closeRun(run, owed);
                (run.developer, run.split) = models.paymentTerms(voucher.modelId);
                run.modelId = voucher.modelId;
                run.amount = 0;
            }
            run.amount += voucherPaid;
            paid += voucherPaid;
        }
        if (run.amount != 0) _closeRun(run, owed);
        if (owed.nodeTotal != 0) _earnings[msg.sender] += owed.nodeTotal;
        if (owed.protocolTotal != 0) _earnings[_treasury] += owed.protocolTotal;

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
        for (uint256 j; j < owed.poolCount; ++j) {
            rewards.fundPool(owed.poolModelIds[j], owed.poolAmounts[j]);
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

    /// @notice Sets the withdrawal delay of channels opened from now on (seconds), within
    /// [MIN_WITHDRAWAL_DELAY, MAX_WITHDRAWAL_DELAY]. Open channels keep theirs.
    /// Emits a {WithdrawalDelaySet} event.
    function setWithdrawalDelay(uint256 withdrawalDelay_) external onlyOwner {
        _setWithdrawalDelay(withdrawalDelay_);
    }

    /// @notice Sets the treasury for future redemptions. Emits a {TreasurySet} event.
    function setTreasury(address treasury_) external onlyOwner {
        _setTreasury(treasury_);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IInferencePayments
    function channel(address payer, address node) external view returns (Channel memory) {
        return _channels[payer][node];
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
    function sessionKey(address payer, address node, address signer) external view returns (SessionKey memory) {
        return _sessionKeys[payer][node][signer];
    }

    /// @inheritdoc IInferencePayments
    function voucherDigest(Voucher calldata voucher) external view returns (bytes32) {
        return _voucherDigest(voucher.payer, voucher.node, voucher.modelId, voucher.cumulativeAmount, voucher.deadline);
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

    function _deposit(address payer, address node, uint256 amount) private {
        if (amount == 0) revert PaymentsZeroAmount();
        if (node == address(0)) revert PaymentsZeroAddress();
        Channel storage ch = _channels[payer][node];
        if (ch.withdrawDelay == 0) {
            // The delay is the channel's own: a later governance change cannot shorten the time
            // this node was promised to redeem in.
            uint256 delay = _withdrawalDelay;
            ch.withdrawDelay = uint64(delay); // <= MAX_WITHDRAWAL_DELAY
            emit ChannelOpened(payer, node, delay);
        }
        uint128 balance = ch.balance + amount.toUint128();
        ch.balance = balance;
        emit Deposited(payer, node, amount, balance);
        token.safeTransferFrom(payer, address(this), amount);
    }

    function _authorizeSessionKey(address payer, address node, address signer, uint256 expiry, uint256 allowance)
        private
    {
        if (node == address(0) || signer == address(0)) revert PaymentsZeroAddress();
        if (expiry <= block.timestamp) revert SessionKeyExpiryInPast(expiry);
        if (allowance > type(uint96).max) revert SessionKeyAllowanceTooHigh(allowance);
        SessionKey storage key = _sessionKeys[payer][node][signer];
        uint96 spent;
        if (key.validUntil >= block.timestamp) {
            // A live key may have vouchers the node accepted: it can only grow. (A reduction
            // is a revocation, which waits the channel's delay.)
            if (expiry < key.validUntil || allowance < key.allowance) {
                revert SessionKeyReduction(key.validUntil, key.allowance);
            }
            spent = key.spent;
        }
        _sessionKeys[payer][node][signer] =
            SessionKey({validUntil: expiry.toUint64(), allowance: uint96(allowance), spent: spent});
        emit SessionKeyAuthorized(payer, node, signer, expiry, allowance);
    }

    /// @dev Pays one voucher as far as the channel's balance (and its session key's allowance)
    /// allow, or skips it with a {VoucherSkipped} event. Returns what it paid.
    function _redeemVoucher(uint256 index, SignedVoucher calldata voucher) private returns (uint256 voucherPaid) {
        (SkipReason reason, address signer) = _checkVoucher(voucher);
        uint256 alreadyRedeemed = _redeemed[voucher.payer][msg.sender][voucher.modelId];
        if (reason == SkipReason.None && voucher.cumulativeAmount <= alreadyRedeemed) {
            reason = SkipReason.NotAboveRedeemed;
        }
        if (reason != SkipReason.None) {
            emit VoucherSkipped(voucher.payer, msg.sender, voucher.modelId, index, reason);
            return 0;
        }
        uint256 due = voucher.cumulativeAmount - alreadyRedeemed; // > 0, checked above
        voucherPaid = _draw(voucher.payer, signer, due);
        if (voucherPaid != 0) {
            _redeemed[voucher.payer][msg.sender][voucher.modelId] = alreadyRedeemed + voucherPaid;
        }
        emit VoucherRedeemed(
            voucher.payer, msg.sender, voucher.modelId, voucher.cumulativeAmount, voucherPaid, due - voucherPaid
        );
    }

    /// @dev Takes up to `due` from channel (`payer`, caller), within the allowance left to
    /// `signer` when it is a session key; returns what it took.
    function _draw(address payer, address signer, uint256 due) private returns (uint256 drawn) {
        Channel storage ch = _channels[payer][msg.sender];
        uint256 limit = ch.balance;
        if (signer == payer) {
            drawn = due < limit ? due : limit;
            // drawn <= balance.
            unchecked {
                if (drawn != 0) ch.balance = uint128(limit - drawn);
            }
            return drawn;
        }
        SessionKey storage key = _sessionKeys[payer][msg.sender][signer];
        uint256 spent = key.spent;
        uint256 left = key.allowance - spent; // spent <= allowance, always
        if (left < limit) limit = left;
        drawn = due < limit ? due : limit;
        // drawn <= balance and drawn <= allowance - spent.
        unchecked {
            if (drawn != 0) {
                ch.balance = uint128(ch.balance - drawn);
                key.spent = uint96(spent + drawn);
            }
        }
    }

    /// @dev Why `voucher` cannot be redeemed now by the caller (None: it can), and its signer.
    function _checkVoucher(SignedVoucher calldata voucher) private view returns (SkipReason, address) {
        if (voucher.deadline < block.timestamp) return (SkipReason.Expired, address(0));
        bytes32 digest = _voucherDigest(
            voucher.payer, msg.sender, voucher.modelId, voucher.cumulativeAmount, voucher.deadline
        );
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, voucher.v, voucher.r, voucher.s);
        if (err != ECDSA.RecoverError.NoError) return (SkipReason.InvalidSigner, address(0));
        if (signer == voucher.payer) return (SkipReason.None, signer);
        uint256 validUntil = _sessionKeys[voucher.payer][msg.sender][signer].validUntil;
        if (validUntil == 0) return (SkipReason.InvalidSigner, signer);
        if (validUntil < block.timestamp) return (SkipReason.SessionKeyNotLive, signer);
        return (SkipReason.None, signer);
    }

    /// @dev The digest of a session key authorization, using up `payer`'s nonce.
    function _sessionKeyDigest(
        address payer,
        address node,
        address signer,
        uint256 expiry,
        uint256 allowance,
        uint256 deadline
    ) private returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(SESSION_KEY_TYPEHASH, payer, node, signer, expiry, allowance, _useNonce(payer), deadline)
            )
        );
    }

    function _voucherDigest(address payer, address node, uint256 modelId, uint256 cumulativeAmount, uint256 deadline)
        private
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, payer, node, modelId, cumulativeAmount, deadline)));
    }

    /// @dev Splits a run's amount: the developer's share is credited here; the node's, the
    /// protocol's and the contributors' (which takes the rounding dust) are returned.
    /// @dev Splits a finished run and adds its shares to what the redemption owes.
    function _closeRun(ModelRun memory run, Settlement memory owed) private {
        (uint256 nodeShare, uint256 protocolShare, uint256 contributorsShare) = _split(run);
        owed.nodeTotal += nodeShare;
        owed.protocolTotal += protocolShare;
        if (contributorsShare != 0) {
            owed.poolModelIds[owed.poolCount] = run.modelId;
            owed.poolAmounts[owed.poolCount++] = contributorsShare;
        }
    }

    function _split(ModelRun memory run)
        private
        returns (uint256 nodeShare, uint256 protocolShare, uint256 contributorsShare)
    {
        uint256 amount = run.amount;
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
        if (withdrawalDelay_ < MIN_WITHDRAWAL_DELAY || withdrawalDelay_ > MAX_WITHDRAWAL_DELAY) {
            revert WithdrawalDelayOutOfBounds(withdrawalDelay_, MIN_WITHDRAWAL_DELAY, MAX_WITHDRAWAL_DELAY);
        }
        _withdrawalDelay = withdrawalDelay_;
        emit WithdrawalDelaySet(withdrawalDelay_);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert PaymentsZeroAddress();
        _treasury = treasury_;
        emit TreasurySet(treasury_);
    }
}
