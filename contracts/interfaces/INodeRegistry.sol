// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title INodeRegistry
/// @notice Inference-node operators (and attribution posters) stake OPEN here. A node is active
/// while its bonded stake is at least `minStake`. Unbonding stake waits `unbondingDelay` before it
/// can be withdrawn and stays slashable while it waits, so a node cannot escape a dispute by
/// unbonding. Stake is slashed only by the slasher (the AttributionRewards dispute path), which
/// also holds it: while an epoch a node posted can still be challenged (`heldUntil`) or is
/// challenged (`openDisputes`), none of its stake can be withdrawn, whatever the unbonding delay.
interface INodeRegistry {
    /// @notice A node's stake. Slot 1: `bonded` | `unbonding`; slot 2: `unbondingUnlockAt` |
    /// `heldUntil` | `openDisputes`.
    struct Node {
        uint128 bonded; // OPEN wei, counts towards `isActive`
        uint128 unbonding; // OPEN wei, withdrawable after `unbondingUnlockAt`, still slashable
        uint64 unbondingUnlockAt; // unix seconds
        uint64 heldUntil; // unix seconds: no withdrawal before (an epoch's challenge window)
        uint32 openDisputes; // challenged epochs of this node not yet resolved
        string endpoint; // public URL of the node's OpenAI-compatible API
    }

    /// @notice An amount of zero was given where a positive amount is required.
    error NodeRegistryZeroAmount();
    /// @notice The zero address was given where an account or contract is required.
    error NodeRegistryZeroAddress();
    /// @notice `amount` to unbond exceeds the bonded stake of `node`.
    error UnbondExceedsStake(address node, uint256 bonded, uint256 amount);
    /// @notice `node` has nothing unbonding.
    error NothingUnbonding(address node);
    /// @notice The unbonding stake of `node` unlocks at `unlockAt`, later than `nowTimestamp`.
    error UnbondingLocked(address node, uint256 unlockAt, uint256 nowTimestamp);
    /// @notice `caller` is not the slasher.
    error NotSlasher(address caller);
    /// @notice The slasher can be set once only; it is already `slasher`.
    error SlasherAlreadySet(address slasher);
    /// @notice An endpoint longer than `maxLength` bytes was given.
    error EndpointTooLong(uint256 length, uint256 maxLength);
    /// @notice An unbonding delay outside [`min`, `max`] seconds.
    error UnbondingDelayOutOfBounds(uint256 delay, uint256 min, uint256 max);
    /// @notice A minimum stake above `max` OPEN wei.
    error MinStakeOutOfBounds(uint256 minStake, uint256 max);
    /// @notice The stake of `node` stays slashable until `heldUntil` and while `openDisputes` > 0.
    error StakeHeld(address node, uint256 heldUntil, uint256 openDisputes);
    /// @notice `node` has no open dispute to close.
    error NoOpenDispute(address node);

    /// @notice `node` bonded `amount` more; its bonded stake is now `bonded`.
    event Staked(address indexed node, uint256 amount, uint256 bonded);
    /// @notice `node` declared the URL of its API.
    event EndpointSet(address indexed node, string endpoint);
    /// @notice `node` started unbonding `amount`; all its unbonding stake unlocks at `unlockAt`.
    event UnbondingRequested(address indexed node, uint256 amount, uint256 unlockAt);
    /// @notice `node` withdrew `amount` of unlocked unbonding stake.
    event Unbonded(address indexed node, uint256 amount);
    /// @notice `amount` of the stake of `node` was slashed and sent to `slasher`.
    event Slashed(address indexed node, uint256 amount, address indexed slasher);
    /// @notice Governance set the minimum bonded stake of an active node.
    event MinStakeSet(uint256 minStake);
    /// @notice Governance set the unbonding delay, in seconds.
    event UnbondingDelaySet(uint256 unbondingDelay);
    /// @notice Governance set the slasher (the AttributionRewards contract).
    event SlasherSet(address indexed slasher);
    /// @notice The slasher held the stake of `node` until `heldUntil` (an epoch's challenge window).
    event StakeHeldUntil(address indexed node, uint256 heldUntil);
    /// @notice An epoch of `node` was challenged; it now has `openDisputes` unresolved.
    event DisputeOpened(address indexed node, uint256 openDisputes);
    /// @notice A dispute of `node` was resolved; `openDisputes` remain.
    event DisputeClosed(address indexed node, uint256 openDisputes);

    /// @notice Bonds `amount` OPEN of the caller's (approved) tokens.
    /// Requirements: not paused; `amount` > 0.
    /// Emits a {Staked} event.
    function stake(uint256 amount) external;

    /// @notice Declares the caller's API endpoint (at most 256 bytes). Emits an {EndpointSet} event.
    function setEndpoint(string calldata endpoint) external;

    /// @notice Moves `amount` of bonded stake to unbonding; the whole unbonding stake unlocks
    /// `unbondingDelay` seconds from now (a new request restarts the delay).
    /// Requirements: 0 < `amount` <= bonded.
    /// Emits an {UnbondingRequested} event.
    function requestUnbonding(uint256 amount) external;

    /// @notice Sends the caller's unlocked unbonding stake back to it.
    /// Requirements: something unbonding; its delay has passed; the stake is not held (no
    /// epoch of the caller is in its challenge window or challenged). Never paused.
    /// Emits an {Unbonded} event.
    function withdrawUnbonded() external returns (uint256 amount);

    /// @notice Takes up to `amount` from `node` (bonded first, then unbonding) and sends it to the
    /// slasher. Requirements: caller is the slasher. Emits a {Slashed} event.
    /// @return slashed What was taken: less than `amount` when the node holds less.
    function slash(address node, uint256 amount) external returns (uint256 slashed);

    /// @notice Keeps all stake of `node` slashable until at least `until` (an epoch's challenge
    /// window end). Requirements: caller is the slasher. Emits a {StakeHeldUntil} event.
    /// @return stake The node's bonded plus unbonding stake, which a slash can take.
    function holdStake(address node, uint256 until) external returns (uint256 stake);

    /// @notice Keeps all stake of `node` slashable until a matching {closeDispute}.
    /// Requirements: caller is the slasher. Emits a {DisputeOpened} event.
    function openDispute(address node) external;

    /// @notice Ends one dispute opened by {openDispute} (after any slash it leads to).
    /// Requirements: caller is the slasher; `node` has an open dispute. Emits {DisputeClosed}.
    function closeDispute(address node) external;

    /// @notice Whether `node` may redeem vouchers and post attribution epochs:
    /// bonded stake > 0 and >= `minStake`.
    function isActive(address node) external view returns (bool);

    /// @notice The stake record of `node`.
    function nodeInfo(address node) external view returns (Node memory);

    /// @notice The minimum bonded stake of an active node, in OPEN wei.
    function minStake() external view returns (uint256);

    /// @notice Seconds between an unbonding request and its withdrawal.
    function unbondingDelay() external view returns (uint256);

    /// @notice The only address allowed to slash (the AttributionRewards contract).
    function slasher() external view returns (address);
}
