// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {BitMaps} from "@openzeppelin/contracts/utils/structs/BitMaps.sol";

import {Governed} from "./governance/Governed.sol";
import {IAttributionRewards} from "./interfaces/IAttributionRewards.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title AttributionRewards
/// @notice Attribution pools per model, epochs with a challenge window, and Merkle claims.
contract AttributionRewards is IAttributionRewards, Governed, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;
    using BitMaps for BitMaps.BitMap;

    /// @notice Bounds of the challenge window (seconds).
    uint256 public constant MIN_CHALLENGE_WINDOW = 1 minutes;
    uint256 public constant MAX_CHALLENGE_WINDOW = 30 days;
    /// @notice Bounds of the claim period (seconds): contributors need time to claim, and an
    /// unreachable rest should return to the pool within years, not never.
    uint256 public constant MIN_CLAIM_PERIOD = 7 days;
    uint256 public constant MAX_CLAIM_PERIOD = 5 * 365 days;
    /// @notice Upper bound of the challenge bond: above it nobody could afford to challenge fraud.
    uint256 public constant MAX_CHALLENGE_BOND = 100_000 ether;
    /// @notice Bounds of the slash amount: fraud must cost something, and governance must not be
    /// able to take a whole stake (a minimum stake is at most 1,000,000 OPEN) on one ruling.
    uint256 public constant MIN_SLASH_AMOUNT = 1 ether;
    uint256 public constant MAX_SLASH_AMOUNT = 1_000_000 ether;

    IERC20 public immutable token;
    IModelRegistry public immutable models;
    INodeRegistry public immutable nodes;

    uint256 private _challengeWindow;
    uint256 private _challengeBond;
    uint256 private _slashAmount;
    uint256 private _claimPeriod;
    uint256 private _epochCount;
    mapping(uint256 modelId => Pool) private _pools;
    mapping(uint256 epochId => Epoch) private _epochs;
    mapping(uint256 epochId => BitMaps.BitMap) private _claimed;
    mapping(address account => uint256 amount) private _withdrawable; // OPEN wei

    constructor(
        IERC20 token_,
        IModelRegistry models_,
        INodeRegistry nodes_,
        address governance,
        uint256 challengeWindow_,
        uint256 challengeBond_,
        uint256 slashAmount_,
        uint256 claimPeriod_
    ) Governed(governance) {
        if (address(token_) == address(0) || address(models_) == address(0) || address(nodes_) == address(0)) {
            revert RewardsZeroAddress();
        }
        token = token_;
        models = models_;
        nodes = nodes_;
        _setChallengeWindow(challengeWindow_);
        _setChallengeBond(challengeBond_);
        _setSlashAmount(slashAmount_);
        _setClaimPeriod(claimPeriod_);
    }

    /// @inheritdoc IAttributionRewards
    function fundPool(uint256 modelId, uint256 amount) external nonReentrant {
        if (amount == 0) revert RewardsZeroAmount();
        models.paymentTerms(modelId); // reverts with UnknownModel
        Pool storage p = _pools[modelId];
        uint128 amount128 = amount.toUint128();
        p.unallocated += amount128;
        p.funded += amount128;
        emit PoolFunded(modelId, msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @inheritdoc IAttributionRewards
    function postEpoch(uint256 modelId, bytes32 merkleRoot, uint256 total, string calldata reportCID)
        external
        whenNotPaused
        returns (uint256 epochId)
    {
        address attributor = models.attributorOf(modelId);
        if (msg.sender != attributor) revert NotAttributor(modelId, msg.sender, attributor);
        if (!nodes.isActive(msg.sender)) revert AttributorNotStaked(msg.sender);
        if (merkleRoot == bytes32(0)) revert RewardsZeroMerkleRoot();
        if (total == 0) revert RewardsZeroAmount();
        Pool storage p = _pools[modelId];
        uint256 unallocated = p.unallocated;
        if (total > unallocated) revert EpochTotalExceedsPool(modelId, total, unallocated);
        uint40 challengeEndsAt = (block.timestamp + _challengeWindow).toUint40();
        // total <= unallocated < 2^128, and the whole supply (1e27) fits in 96 bits.
        unchecked {
            p.unallocated = uint128(unallocated - total);
        }
        epochId = ++_epochCount;
        _epochs[epochId] = Epoch({
            merkleRoot: merkleRoot,
            total: total.toUint96(),
            claimed: 0,
            challengeEndsAt: challengeEndsAt,
            status: EpochStatus.Posted,
            poster: msg.sender,
            modelId: modelId.toUint64(),
            claimPeriod: uint32(_claimPeriod), // <= MAX_CLAIM_PERIOD < 2^32
            challenger: address(0),
            challengeBond: 0
        });
        emit EpochPosted(epochId, modelId, msg.sender, merkleRoot, total, reportCID, challengeEndsAt);
        // The poster's stake stays slashable until the window ends (and, once challenged, until
        // the ruling): unbonding in the block it posts no longer escapes an upheld dispute. Last,
        // as an interaction; a poster without the stake an upheld dispute takes reverts it all.
        uint256 stake = nodes.holdStake(msg.sender, challengeEndsAt);
        uint256 slashAmount_ = _slashAmount;
        if (stake < slashAmount_) revert PosterStakeBelowSlashAmount(msg.sender, stake, slashAmount_);
    }

    /// @inheritdoc IAttributionRewards
    function challenge(uint256 epochId, string calldata reasonCID) external nonReentrant {
        // Never paused: during an emergency a fraudulent epoch must still be challengeable
        // inside its window, or it would be claimed once the window closed.
        Epoch storage e = _requireEpoch(epochId);
        if (e.status != EpochStatus.Posted) revert WrongEpochStatus(epochId, e.status);
        if (block.timestamp >= e.challengeEndsAt) revert ChallengeWindowClosed(epochId, e.challengeEndsAt);
        uint256 bond = _challengeBond;
        e.status = EpochStatus.Challenged;
        e.challenger = msg.sender;
        e.challengeBond = bond.toUint96();
        emit EpochChallenged(epochId, msg.sender, bond, reasonCID);
        nodes.openDispute(e.poster);
        if (bond != 0) token.safeTransferFrom(msg.sender, address(this), bond);
    }

    /// @inheritdoc IAttributionRewards
    function resolveChallenge(uint256 epochId, bool upheld) external onlyOwner nonReentrant {
        Epoch storage e = _requireEpoch(epochId);
        if (e.status != EpochStatus.Challenged) revert WrongEpochStatus(epochId, e.status);
        uint256 bond = e.challengeBond;
        e.challengeBond = 0;
        uint256 slashed;
        if (upheld) {
            e.status = EpochStatus.Rejected;
            // Nothing was claimed: claims need a Posted epoch past its window.
            _pools[e.modelId].unallocated += e.total;
            // The registry sends the slashed stake here; it is credited to the challenger.
            slashed = nodes.slash(e.poster, _slashAmount);
            _withdrawable[e.challenger] += bond + slashed;
        } else {
            e.status = EpochStatus.Posted;
            _withdrawable[e.poster] += bond;
        }
        emit ChallengeResolved(epochId, upheld, slashed);
        nodes.closeDispute(e.poster);
    }

    /// @inheritdoc IAttributionRewards
    function claim(uint256 epochId, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
    {
        Epoch storage e = _epochs[epochId];
        EpochStatus status = e.status;
        if (status != EpochStatus.Posted) {
            if (status == EpochStatus.None) revert UnknownEpoch(epochId);
            revert WrongEpochStatus(epochId, status);
        }
        if (block.timestamp < e.challengeEndsAt) {
            revert ChallengeWindowOpen(epochId, e.challengeEndsAt, block.timestamp);
        }
        BitMaps.BitMap storage claimedLeaves = _claimed[epochId];
        if (claimedLeaves.get(index)) revert AlreadyClaimed(epochId, index);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))));
        if (!MerkleProof.verifyCalldata(proof, e.merkleRoot, leaf)) {
            revert InvalidClaimProof(epochId, index, account, amount);
        }
        uint256 claimed = e.claimed;
        uint256 total = e.total;
        // A wrong tree could promise more than the epoch allocated: cap the sum of claims.
        if (amount > total - claimed) revert ClaimExceedsEpochTotal(epochId, claimed, amount, total);
        claimedLeaves.set(index);
        e.claimed = uint96(claimed + amount); // <= total < 2^96
        emit Claimed(epochId, index, account, amount);
        token.safeTransfer(account, amount);
    }

    /// @inheritdoc IAttributionRewards
    function sweepExpired(uint256 epochId) external nonReentrant returns (uint256 amount) {
        Epoch storage e = _requireEpoch(epochId);
        if (e.status != EpochStatus.Posted) revert WrongEpochStatus(epochId, e.status);
        uint256 claimEndsAt = uint256(e.challengeEndsAt) + e.claimPeriod;
        if (block.timestamp < claimEndsAt) revert ClaimPeriodOpen(epochId, claimEndsAt, block.timestamp);
        e.status = EpochStatus.Expired;
        amount = uint256(e.total) - e.claimed; // claimed <= total
        uint256 modelId = e.modelId;
        // Back to the pool, not to anyone: a later epoch allocates it again.
        if (amount != 0) _pools[modelId].unallocated += uint128(amount);
        emit EpochExpired(epochId, modelId, amount);
    }

    /// @inheritdoc IAttributionRewards
    function withdraw() external nonReentrant returns (uint256 amount) {
        amount = _withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _withdrawable[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Sets the challenge window (seconds) of future epochs. Emits {ChallengeWindowSet}.
    function setChallengeWindow(uint256 challengeWindow_) external onlyOwner {
        _setChallengeWindow(challengeWindow_);
    }

    /// @notice Sets the bond of future challenges (OPEN wei). Emits {ChallengeBondSet}.
    function setChallengeBond(uint256 challengeBond_) external onlyOwner {
        _setChallengeBond(challengeBond_);
    }

    /// @notice Sets the stake an upheld dispute slashes (OPEN wei). Emits {SlashAmountSet}.
    function setSlashAmount(uint256 slashAmount_) external onlyOwner {
        _setSlashAmount(slashAmount_);
    }

    /// @notice Sets the claim period (seconds) of future epochs. Emits {ClaimPeriodSet}.
    function setClaimPeriod(uint256 claimPeriod_) external onlyOwner {
        _setClaimPeriod(claimPeriod_);
    }

    /// @inheritdoc IAttributionRewards
    function pool(uint256 modelId) external view returns (Pool memory) {
        return _pools[modelId];
    }

    /// @inheritdoc IAttributionRewards
    function epoch(uint256 epochId) external view returns (Epoch memory) {
        return _requireEpoch(epochId);
    }

    /// @inheritdoc IAttributionRewards
    function isClaimed(uint256 epochId, uint256 index) external view returns (bool) {
        return _claimed[epochId].get(index);
    }

    /// @inheritdoc IAttributionRewards
    function withdrawable(address account) external view returns (uint256) {
        return _withdrawable[account];
    }

    /// @inheritdoc IAttributionRewards
    function epochCount() external view returns (uint256) {
        return _epochCount;
    }

    /// @inheritdoc IAttributionRewards
    function challengeWindow() external view returns (uint256) {
        return _challengeWindow;
    }

    /// @inheritdoc IAttributionRewards
    function challengeBond() external view returns (uint256) {
        return _challengeBond;
    }

    /// @inheritdoc IAttributionRewards
    function slashAmount() external view returns (uint256) {
        return _slashAmount;
    }

    /// @inheritdoc IAttributionRewards
    function claimPeriod() external view returns (uint256) {
        return _claimPeriod;
    }

    function _requireEpoch(uint256 epochId) private view returns (Epoch storage e) {
        e = _epochs[epochId];
        if (e.status == EpochStatus.None) revert UnknownEpoch(epochId);
    }

    function _setChallengeWindow(uint256 challengeWindow_) private {
        // Too short a window lets fraud through unchallenged; too long one freezes claims.
        if (challengeWindow_ < MIN_CHALLENGE_WINDOW || challengeWindow_ > MAX_CHALLENGE_WINDOW) {
            revert ChallengeWindowOutOfBounds(challengeWindow_, MIN_CHALLENGE_WINDOW, MAX_CHALLENGE_WINDOW);
        }
        _challengeWindow = uint40(challengeWindow_);
        emit ChallengeWindowSet(challengeWindow_);
    }

    function _setChallengeBond(uint256 challengeBond_) private {
        // Zero is allowed (free challenges; dismissed ones then pay the poster nothing).
        if (challengeBond_ > MAX_CHALLENGE_BOND) revert ChallengeBondOutOfBounds(challengeBond_, MAX_CHALLENGE_BOND);
        _challengeBond = challengeBond_;
        emit ChallengeBondSet(challengeBond_);
    }

    function _setSlashAmount(uint256 slashAmount_) private {
        if (slashAmount_ < MIN_SLASH_AMOUNT || slashAmount_ > MAX_SLASH_AMOUNT) {
            revert SlashAmountOutOfBounds(slashAmount_, MIN_SLASH_AMOUNT, MAX_SLASH_AMOUNT);
        }
        _slashAmount = slashAmount_;
        emit SlashAmountSet(slashAmount_);
    }

    function _setClaimPeriod(uint256 claimPeriod_) private {
        if (claimPeriod_ < MIN_CLAIM_PERIOD || claimPeriod_ > MAX_CLAIM_PERIOD) {
            revert ClaimPeriodOutOfBounds(claimPeriod_, MIN_CLAIM_PERIOD, MAX_CLAIM_PERIOD);
        }
        _claimPeriod = claimPeriod_;
        emit ClaimPeriodSet(claimPeriod_);
    }
}
