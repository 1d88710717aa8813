// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IAttributionRewards
/// @notice Pays data contributors. Each model has a pool, funded by the contributors' share of
/// every redemption (and by anyone who wants to add to it). The model's attributor, a staked
/// account, posts epochs of Proof of Attribution: a Merkle root over (index, account, amount),
/// the total they allocate (at most the pool's unallocated amount) and the report's CID. During
/// the challenge window anyone may dispute an epoch with a bond; governance resolves the dispute
/// (upheld: the poster is slashed for the challenger, the total returns to the pool; dismissed:
/// the bond goes to the poster). After the window contributors claim with a Merkle proof. What
/// is still unclaimed `claimPeriod` after the window (fixed when the epoch is posted) can be swept
/// back to the pool by anyone, for a later epoch. The poster's whole stake stays slashable while
/// any of its epochs can be challenged or is challenged (NodeRegistry.holdStake/openDispute), and
/// must cover `slashAmount` when it posts.
///
/// Claim leaves follow OpenZeppelin's StandardMerkleTree:
/// `keccak256(bytes.concat(keccak256(abi.encode(uint256 index, address account, uint256 amount))))`.
interface IAttributionRewards {
    enum EpochStatus {
        None,
        Posted, // claimable once the challenge window has passed
        Challenged, // frozen until governance resolves the dispute
        Rejected, // the dispute was upheld; the total went back to the pool
        Expired // the claim period ended; the unclaimed rest went back to the pool
    }

    /// @notice An epoch. Slot 1: merkleRoot; slot 2: total | claimed | challengeEndsAt | status
    /// (the two slots a claim reads); slot 3: poster | modelId | claimPeriod; slot 4: challenger |
    /// bond.
    struct Epoch {
        bytes32 merkleRoot;
        uint96 total; // OPEN wei allocated
        uint96 claimed; // OPEN wei claimed so far, never above total
        uint40 challengeEndsAt; // unix seconds
        EpochStatus status;
        address poster;
        uint64 modelId;
        uint32 claimPeriod; // seconds after challengeEndsAt before the rest can be swept
        address challenger;
        uint96 challengeBond; // OPEN wei held while challenged
    }

    /// @notice A model's pool, in OPEN wei.
    struct Pool {
        uint128 unallocated; // funded but not yet in an epoch
        uint128 funded; // funded in total, ever
    }

    /// @notice An amount of zero was given where a positive amount is required.
    error RewardsZeroAmount();
    /// @notice The zero address was given where an account or contract is required.
    error RewardsZeroAddress();
    /// @notice A zero Merkle root was given.
    error RewardsZeroMerkleRoot();
    /// @notice No epoch with id `epochId` exists.
    error UnknownEpoch(uint256 epochId);
    /// @notice `caller` is not the attributor `attributor` of model `modelId`.
    error NotAttributor(uint256 modelId, address caller, address attributor);
    /// @notice The attributor `attributor` is not an active staked account.
    error AttributorNotStaked(address attributor);
    /// @notice An epoch total of `total` exceeds the unallocated `unallocated` of model `modelId`.
    error EpochTotalExceedsPool(uint256 modelId, uint256 total, uint256 unallocated);
    /// @notice Epoch `epochId` has status `status`, not the one this needs.
    error WrongEpochStatus(uint256 epochId, EpochStatus status);
    /// @notice The challenge window of epoch `epochId` closed at `challengeEndsAt`.
    error ChallengeWindowClosed(uint256 epochId, uint256 challengeEndsAt);
    /// @notice Epoch `epochId` is claimable from `challengeEndsAt`, after `nowTimestamp`.
    error ChallengeWindowOpen(uint256 epochId, uint256 challengeEndsAt, uint256 nowTimestamp);
    /// @notice Leaf `index` of epoch `epochId` was already claimed.
    error AlreadyClaimed(uint256 epochId, uint256 index);
    /// @notice The proof does not show (index, account, amount) in epoch `epochId`.
    error InvalidClaimProof(uint256 epochId, uint256 index, address account, uint256 amount);
    /// @notice Claiming `amount` would take epoch `epochId` past its total: `claimed` of `total`.
    error ClaimExceedsEpochTotal(uint256 epochId, uint256 claimed, uint256 amount, uint256 total);
    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);
    /// @notice A challenge window outside [`min`, `max`] seconds.
    error ChallengeWindowOutOfBounds(uint256 window, uint256 min, uint256 max);
    /// @notice A claim period outside [`min`, `max`] seconds.
    error ClaimPeriodOutOfBounds(uint256 period, uint256 min, uint256 max);
    /// @notice A challenge bond above `max` OPEN wei.
    error ChallengeBondOutOfBounds(uint256 bond, uint256 max);
    /// @notice A slash amount outside [`min`, `max`] OPEN wei.
    error SlashAmountOutOfBounds(uint256 amount, uint256 min, uint256 max);
    /// @notice `poster` holds `stake` OPEN wei, less than the `slashAmount` an upheld dispute takes.
    error PosterStakeBelowSlashAmount(address poster, uint256 stake, uint256 slashAmount);
    /// @notice Epoch `epochId` can be swept from `claimEndsAt`, after `nowTimestamp`.
    error ClaimPeriodOpen(uint256 epochId, uint256 claimEndsAt, uint256 nowTimestamp);

    /// @notice `funder` added `amount` to the pool of model `modelId`.
    event PoolFunded(uint256 indexed modelId, address indexed funder, uint256 amount);
    /// @notice Epoch `epochId` of model `modelId` was posted by `poster`.
    event EpochPosted(
        uint256 indexed epochId,
        uint256 indexed modelId,
        address indexed poster,
        bytes32 merkleRoot,
        uint256 total,
        string reportCID,
        uint256 challengeEndsAt
    );
    /// @notice `challenger` disputed epoch `epochId` with a bond of `bond`.
    event EpochChallenged(uint256 indexed epochId, address indexed challenger, uint256 bond, string reasonCID);
    /// @notice Governance resolved the dispute of epoch `epochId`; `slashed` was taken from the poster.
    event ChallengeResolved(uint256 indexed epochId, bool upheld, uint256 slashed);
    /// @notice `account` claimed `amount` from epoch `epochId` (leaf `index`).
    event Claimed(uint256 indexed epochId, uint256 indexed index, address indexed account, uint256 amount);
    /// @notice The claim period of epoch `epochId` ended; its unclaimed `amount` went back to the
    /// pool of model `modelId`.
    event EpochExpired(uint256 indexed epochId, uint256 indexed modelId, uint256 amount);
    /// @notice `account` withdrew `amount` (returned bonds and slashing rewards).
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice Governance set the challenge window, in seconds.
    event ChallengeWindowSet(uint256 challengeWindow);
    /// @notice Governance set the bond a challenger posts, in OPEN wei.
    event ChallengeBondSet(uint256 challengeBond);
    /// @notice Governance set how much stake an upheld dispute slashes, in OPEN wei.
    event SlashAmountSet(uint256 slashAmount);
    /// @notice Governance set the claim period of future epochs, in seconds.
    event ClaimPeriodSet(uint256 claimPeriod);

    /// @notice Adds `amount` of the caller's approved OPEN to the pool of model `modelId`.
    /// Requirements: `amount` > 0; the model exists. Not paused: redemptions fund pools this way.
    /// Emits a {PoolFunded} event.
    function fundPool(uint256 modelId, uint256 amount) external;

    /// @notice Posts an epoch for model `modelId`, allocating `total` of its pool.
    /// Requirements: not paused; caller is the model's attributor and active in the NodeRegistry,
    /// with bonded plus unbonding stake >= `slashAmount` (held slashable until the window ends);
    /// non-zero root; 0 < `total` <= unallocated. Emits an {EpochPosted} event.
    function postEpoch(uint256 modelId, bytes32 merkleRoot, uint256 total, string calldata reportCID)
        external
        returns (uint256 epochId);

    /// @notice Disputes epoch `epochId`, taking the challenge bond from the caller.
    /// Requirements: the epoch is Posted and its window is open. Never paused (a fraudulent
    /// epoch must stay challengeable inside its window, even during an emergency).
    /// Emits an {EpochChallenged} event.
    function challenge(uint256 epochId, string calldata reasonCID) external;

    /// @notice Governance's ruling on a challenged epoch. Upheld: the epoch is Rejected, its total
    /// returns to the pool, up to `slashAmount` of the poster's stake and the bond are credited to
    /// the challenger. Dismissed: the epoch is Posted again and the bond is credited to the poster.
    /// Requirements: caller is governance; the epoch is Challenged. Emits {ChallengeResolved}.
    function resolveChallenge(uint256 epochId, bool upheld) external;

    /// @notice Pays `amount` to `account` from epoch `epochId` (anyone may submit it).
    /// Requirements: the epoch is Posted (not yet swept) and its window has passed; leaf `index`
    /// unclaimed; a valid proof; the epoch's claimed total stays within its total. Never paused.
    /// Emits a {Claimed} event.
    function claim(uint256 epochId, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external;

    /// @notice Returns what epoch `epochId` left unclaimed to its model's pool (anyone may call).
    /// Requirements: the epoch is Posted; `challengeEndsAt + claimPeriod` has passed. Never paused.
    /// Emits an {EpochExpired} event.
    /// @return amount What went back to the pool.
    function sweepExpired(uint256 epochId) external returns (uint256 amount);

    /// @notice Sends the caller its returned bonds and slashing rewards. Never paused.
    /// Emits a {Withdrawn} event.
    function withdraw() external returns (uint256 amount);

    /// @notice The pool of model `modelId`.
    function pool(uint256 modelId) external view returns (Pool memory);

    /// @notice Epoch `epochId`.
    function epoch(uint256 epochId) external view returns (Epoch memory);

    /// @notice Whether leaf `index` of epoch `epochId` was claimed.
    function isClaimed(uint256 epochId, uint256 index) external view returns (bool);

    /// @notice What `account` can withdraw, in OPEN wei.
    function withdrawable(address account) external view returns (uint256);

    /// @notice How many epochs exist (ids are 1..epochCount).
    function epochCount() external view returns (uint256);

    /// @notice Seconds during which a posted epoch can be challenged.
    function challengeWindow() external view returns (uint256);

    /// @notice The bond a challenger posts, in OPEN wei.
    function challengeBond() external view returns (uint256);

    /// @notice The stake an upheld dispute slashes from the poster, in OPEN wei.
    function slashAmount() external view returns (uint256);

    /// @notice Seconds after its challenge window during which a new epoch can be claimed.
    function claimPeriod() external view returns (uint256);
}
