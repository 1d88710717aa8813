// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {Governed} from "./governance/Governed.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title NodeRegistry
/// @notice Stake, endpoints, unbonding and slashing of inference nodes and attribution posters.
contract NodeRegistry is INodeRegistry, Governed, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    uint256 private constant _MAX_ENDPOINT_LENGTH = 256;

    IERC20 public immutable token;

    /// @notice Bounds of the unbonding delay (seconds).
    uint256 public constant MIN_UNBONDING_DELAY = 1 minutes;
    uint256 public constant MAX_UNBONDING_DELAY = 90 days;
    /// @notice Upper bound of the minimum stake (0.1% of OPEN's supply): above it, governance
    /// could deactivate every node at once and stop every redemption.
    uint256 public constant MAX_MIN_STAKE = 1_000_000 ether;

    uint256 private _minStake;
    uint256 private _unbondingDelay;
    address private _slasher;
    mapping(address node => Node) private _nodes;

    constructor(IERC20 token_, address governance, uint256 minStake_, uint256 unbondingDelay_)
        Governed(governance)
    {
        if (address(token_) == address(0)) revert NodeRegistryZeroAddress();
        token = token_;
        _setMinStake(minStake_);
        _setUnbondingDelay(unbondingDelay_);
    }

    /// @inheritdoc INodeRegistry
    function stake(uint256 amount) external whenNotPaused {
        if (amount == 0) revert NodeRegistryZeroAmount();
        Node storage node = _nodes[msg.sender];
        uint128 bonded = node.bonded + amount.toUint128();
        node.bonded = bonded;
        emit Staked(msg.sender, amount, bonded);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @inheritdoc INodeRegistry
    function setEndpoint(string calldata endpoint) external {
        if (bytes(endpoint).length > _MAX_ENDPOINT_LENGTH) {
            revert EndpointTooLong(bytes(endpoint).length, _MAX_ENDPOINT_LENGTH);
        }
        _nodes[msg.sender].endpoint = endpoint;
        emit EndpointSet(msg.sender, endpoint);
    }

    /// @inheritdoc INodeRegistry
    function requestUnbonding(uint256 amount) external {
        if (amount == 0) revert NodeRegistryZeroAmount();
        Node storage node = _nodes[msg.sender];
        uint256 bonded = node.bonded;
        if (amount > bonded) revert UnbondExceedsStake(msg.sender, bonded, amount);
        uint64 unlockAt = (block.timestamp + _unbondingDelay).toUint64();
        // amount <= bonded was checked above, and unbonding + amount <= total staked < 2^128.
        unchecked {
            node.bonded = uint128(bonded - amount);
            node.unbonding += uint128(amount);
        }
        node.unbondingUnlockAt = unlockAt;
        emit UnbondingRequested(msg.sender, amount, unlockAt);
    }

    /// @inheritdoc INodeRegistry
    function withdrawUnbonded() external nonReentrant returns (uint256 amount) {
        Node storage node = _nodes[msg.sender];
        amount = node.unbonding;
        if (amount == 0) revert NothingUnbonding(msg.sender);
        if (block.timestamp < node.unbondingUnlockAt) {
            revert UnbondingLocked(msg.sender, node.unbondingUnlockAt, block.timestamp);
        }
        // An epoch this node posted can still be challenged, or is: an upheld dispute must
        // find the stake there, however short the unbonding delay.
        if (block.timestamp < node.heldUntil || node.openDisputes != 0) {
            revert StakeHeld(msg.sender, node.heldUntil, node.openDisputes);
        }
        node.unbonding = 0;
        node.unbondingUnlockAt = 0;
        emit Unbonded(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc INodeRegistry
    function slash(address nodeAddress, uint256 amount) external returns (uint256 slashed) {
        _requireSlasher();
        Node storage node = _nodes[nodeAddress];
        uint256 bonded = node.bonded;
        uint256 unbonding = node.unbonding;
        uint256 fromBonded = amount < bonded ? amount : bonded;
        uint256 rest = amount - fromBonded;
        uint256 fromUnbonding = rest < unbonding ? rest : unbonding;
        // Each part is at most the stored value it is taken from.
        unchecked {
            node.bonded = uint128(bonded - fromBonded);
            node.unbonding = uint128(unbonding - fromUnbonding);
            slashed = fromBonded + fromUnbonding;
        }
        emit Slashed(nodeAddress, slashed, msg.sender);
        if (slashed > 0) token.safeTransfer(msg.sender, slashed);
    }

    /// @inheritdoc INodeRegistry
    function holdStake(address nodeAddress, uint256 until) external returns (uint256 stake) {
        _requireSlasher();
        Node storage node = _nodes[nodeAddress];
        uint64 until64 = until.toUint64();
        if (until64 > node.heldUntil) node.heldUntil = until64;
        emit StakeHeldUntil(nodeAddress, node.heldUntil);
        return uint256(node.bonded) + node.unbonding;
    }

    /// @inheritdoc INodeRegistry
    function openDispute(address nodeAddress) external {
        _requireSlasher();
        Node storage node = _nodes[nodeAddress];
        uint32 open = node.openDisputes + 1;
        node.openDisputes = open;
        emit DisputeOpened(nodeAddress, open);
    }

    /// @inheritdoc INodeRegistry
    function closeDispute(address nodeAddress) external {
        _requireSlasher();
        Node storage node = _nodes[nodeAddress];
        uint32 open = node.openDisputes;
        if (open == 0) revert NoOpenDispute(nodeAddress);
        unchecked {
            --open;
        }
        node.openDisputes = open;
        emit DisputeClosed(nodeAddress, open);
    }

    /// @notice Sets the minimum bonded stake, at most `MAX_MIN_STAKE`. Emits a {MinStakeSet} event.
    function setMinStake(uint256 minStake_) external onlyOwner {
        _setMinStake(minStake_);
    }

    /// @notice Sets the unbonding delay (seconds). Emits an {UnbondingDelaySet} event.
    function setUnbondingDelay(uint256 unbondingDelay_) external onlyOwner {
        _setUnbondingDelay(unbondingDelay_);
    }

    function _requireSlasher() private view {
        // An unset slasher (zero) matches no sender: msg.sender is never the zero address.
        if (msg.sender != _slasher) revert NotSlasher(msg.sender);
    }

    function _setMinStake(uint256 minStake_) private {
        if (minStake_ > MAX_MIN_STAKE) revert MinStakeOutOfBounds(minStake_, MAX_MIN_STAKE);
        _minStake = minStake_;
        emit MinStakeSet(minStake_);
    }

    function _setUnbondingDelay(uint256 unbondingDelay_) private {
        // Unbonding stake stays slashable: a delay too short escapes disputes, one too long
        // (2^64, say) locks every stake.
        if (unbondingDelay_ < MIN_UNBONDING_DELAY || unbondingDelay_ > MAX_UNBONDING_DELAY) {
            revert UnbondingDelayOutOfBounds(unbondingDelay_, MIN_UNBONDING_DELAY, MAX_UNBONDING_DELAY);
        }
        _unbondingDelay = unbondingDelay_;
        emit UnbondingDelaySet(unbondingDelay_);
    }

    /// @notice Sets the slasher, once. Emits a {SlasherSet} event.
    function setSlasher(address slasher_) external onlyOwner {
        if (slasher_ == address(0)) revert NodeRegistryZeroAddress();
        if (_slasher != address(0)) revert SlasherAlreadySet(_slasher);
        _slasher = slasher_;
        emit SlasherSet(slasher_);
    }

    /// @inheritdoc INodeRegistry
    function isActive(address node) external view returns (bool) {
        uint256 bonded = _nodes[node].bonded;
        return bonded != 0 && bonded >= _minStake;
    }

    /// @inheritdoc INodeRegistry
    function nodeInfo(address node) external view returns (Node memory) {
        return _nodes[node];
    }

    /// @inheritdoc INodeRegistry
    function minStake() external view returns (uint256) {
        return _minStake;
    }

    /// @inheritdoc INodeRegistry
    function unbondingDelay() external view returns (uint256) {
        return _unbondingDelay;
    }

    /// @inheritdoc INodeRegistry
    function slasher() external view returns (address) {
        return _slasher;
    }
}
