// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IDatanetRegistry
/// @notice Datanets: community datasets whose files live in a content store and are registered
/// here by CID. A contribution takes the Datanet's bond, curators review contributions in batches
/// (approve: the bond is refunded; reject: the bond goes to the Datanet's treasury) and publish
/// immutable versions: a Merkle root over every approved contribution plus a manifest CID.
/// Models train on a version, never on the moving set. A CID is held by its pending or approved
/// contribution only: once rejected or withdrawn anyone may contribute it again (so a squatter
/// who front-ran its author loses the bond and the CID). A contribution left pending for
/// `REVIEW_TIMEOUT` can be withdrawn by its contributor, bond and all.
///
/// Version Merkle leaves follow OpenZeppelin's StandardMerkleTree:
/// `keccak256(bytes.concat(keccak256(abi.encode(uint256 contributionId, address contributor, string cid))))`.
interface IDatanetRegistry {
    enum ContributionStatus {
        None,
        Pending,
        Approved,
        Rejected,
        Withdrawn // left unreviewed past the review timeout and taken back by its contributor
    }

    /// @notice A Datanet. Slot 1: owner | contributionBond; slot 2: treasury | minApproved |
    /// versionCount; slot 3: approvedCount | contributionCount.
    struct Datanet {
        address owner; // creator; manages curators and is a curator itself
        uint96 contributionBond; // OPEN wei taken per contribution
        address treasury; // receives the bonds of rejected contributions
        uint64 minApproved; // approved contributions needed before the first version
        uint32 versionCount; // versions are numbered 1..versionCount
        uint64 approvedCount;
        uint64 contributionCount;
        string metadataCID; // name, description, license, format and limits
    }

    /// @notice A contribution. Slot 1: contributor | bond; slot 2: the rest. The CID itself is
    /// in the {Contributed} event; `contributionIdOf(datanetId, cid)` maps it back.
    struct Contribution {
        address contributor;
        uint96 bond; // OPEN wei held until review
        uint64 datanetId;
        uint64 size; // bytes, as declared by the contributor
        uint40 createdAt; // unix seconds
        ContributionStatus status;
    }

    /// @notice A published version: immutable once written.
    struct Version {
        bytes32 merkleRoot; // over every contribution approved at publication
        uint64 contributionCount; // approved contributions it contains
        uint40 publishedAt; // unix seconds
        string manifestCID; // the manifest listing each contribution's id, CID, contributor, size
    }

    /// @notice No Datanet with id `datanetId` exists.
    error UnknownDatanet(uint256 datanetId);
    /// @notice No contribution with id `contributionId` exists.
    error UnknownContribution(uint256 contributionId);
    /// @notice Datanet `datanetId` has no version `version`.
    error UnknownVersion(uint256 datanetId, uint256 version);
    /// @notice `caller` is not the contributor of contribution `contributionId`.
    error NotContributor(uint256 contributionId, address caller);
    /// @notice Contribution `contributionId` can be withdrawn from `reviewDeadline` on, after `nowTimestamp`.
    error ReviewTimeoutNotReached(uint256 contributionId, uint256 reviewDeadline, uint256 nowTimestamp);
    /// @notice `caller` is not the owner of Datanet `datanetId`.
    error NotDatanetOwner(uint256 datanetId, address caller);
    /// @notice `caller` is neither a curator nor the owner of Datanet `datanetId`.
    error NotCurator(uint256 datanetId, address caller);
    /// @notice An empty CID was given.
    error EmptyCID();
    /// @notice The zero address was given where an account is required.
    error DatanetZeroAddress();
    /// @notice `cid` is already contribution `contributionId` of Datanet `datanetId`.
    error DuplicateContribution(uint256 datanetId, string cid, uint256 contributionId);
    /// @notice Two arrays that must pair up have lengths `a` and `b`.
    error LengthMismatch(uint256 a, uint256 b);
    /// @notice An empty batch was given.
    error EmptyBatch();
    /// @notice Contribution `contributionId` belongs to Datanet `actualDatanetId`, not `datanetId`.
    error ContributionNotInDatanet(uint256 contributionId, uint256 datanetId, uint256 actualDatanetId);
    /// @notice Contribution `contributionId` was already reviewed (its status is `status`).
    error ContributionNotPending(uint256 contributionId, ContributionStatus status);
    /// @notice Datanet `datanetId` has `approved` approved contributions; a version needs `minApproved`.
    error NotEnoughApproved(uint256 datanetId, uint256 approved, uint256 minApproved);
    /// @notice A version was built over `expected` approved contributions of Datanet `datanetId`,
    /// but `approved` are approved now (one was reviewed in between): rebuild and publish again.
    error ApprovedCountChanged(uint256 datanetId, uint256 expected, uint256 approved);
    /// @notice Nothing was approved since version `version` of Datanet `datanetId`.
    error NoChangeSinceVersion(uint256 datanetId, uint256 version);
    /// @notice A zero Merkle root was given.
    error ZeroMerkleRoot();
    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);

    /// @notice Datanet `datanetId` was created by `owner`.
    event DatanetCreated(
        uint256 indexed datanetId,
        address indexed owner,
        string metadataCID,
        uint256 contributionBond,
        uint256 minApproved,
        address treasury
    );
    /// @notice `curator` may now review and publish for Datanet `datanetId`.
    event CuratorAdded(uint256 indexed datanetId, address indexed curator);
    /// @notice `curator` may no longer review or publish for Datanet `datanetId`.
    event CuratorRemoved(uint256 indexed datanetId, address indexed curator);
    /// @notice `contributor` registered `cid` (`size` bytes) as contribution `contributionId`.
    event Contributed(
        uint256 indexed datanetId,
        uint256 indexed contributionId,
        address indexed contributor,
        string cid,
        uint256 size,
        uint256 bond
    );
    /// @notice `curator` approved (or rejected) contribution `contributionId`.
    event Reviewed(
        uint256 indexed datanetId, uint256 indexed contributionId, address indexed curator, bool approved
    );
    /// @notice Version `version` of Datanet `datanetId` was published.
    event VersionPublished(
        uint256 indexed datanetId,
        uint256 indexed version,
        bytes32 merkleRoot,
        uint256 contributionCount,
        string manifestCID
    );
    /// @notice `contributor` withdrew its unreviewed contribution `contributionId`; its `bond`
    /// was credited back and its CID released.
    event ContributionWithdrawn(
        uint256 indexed datanetId, uint256 indexed contributionId, address indexed contributor, uint256 bond
    );
    /// @notice `account` withdrew `amount` of refunded bonds or treasury income.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice Creates a Datanet owned by the caller.
    /// Requirements: not paused; non-empty `metadataCID`; non-zero `treasury`.
    /// Emits a {DatanetCreated} event.
    function createDatanet(
        string calldata metadataCID,
        uint96 contributionBond,
        uint64 minApproved,
        address treasury
    ) external returns (uint256 datanetId);

    /// @notice Lets `curator` review and publish. Requirements: caller owns the Datanet.
    /// Emits a {CuratorAdded} event.
    function addCurator(uint256 datanetId, address curator) external;

    /// @notice Removes a curator. Requirements: caller owns the Datanet. Emits a {CuratorRemoved} event.
    function removeCurator(uint256 datanetId, address curator) external;

    /// @notice Registers `cid` (of `size` bytes) in Datanet `datanetId`, taking the Datanet's bond
    /// from the caller's approved OPEN.
    /// Requirements: not paused; the Datanet exists; `cid` non-empty and not held by a pending or
    /// approved contribution of this Datanet.
    /// Emits a {Contributed} event.
    function contribute(uint256 datanetId, string calldata cid, uint64 size)
        external
        returns (uint256 contributionId);

    /// @notice Registers many CIDs in one transaction with one bond transfer for all.
    /// Requirements: as {contribute} for each; `cids` and `sizes` of equal, non-zero length.
    /// Emits a {Contributed} event per CID.
    /// @return firstContributionId The id of `cids[0]`; the others follow consecutively.
    function contributeBatch(uint256 datanetId, string[] calldata cids, uint64[] calldata sizes)
        external
        returns (uint256 firstContributionId);

    /// @notice Approves or rejects pending contributions of Datanet `datanetId`. Approval credits
    /// the bond back to the contributor, rejection credits it to the Datanet's treasury (both
    /// withdrawn with {withdraw}).
    /// Requirements: caller is a curator or the owner; every id pending and in this Datanet;
    /// arrays of equal, non-zero length.
    /// Emits a {Reviewed} event per contribution.
    function review(uint256 datanetId, uint256[] calldata contributionIds, bool[] calldata approve)
        external;

    /// @notice Takes back a contribution nobody reviewed within `REVIEW_TIMEOUT` of its
    /// registration: the bond is credited to the contributor (withdrawn with {withdraw}) and the
    /// CID released. Requirements: caller is the contributor; the contribution is Pending; the
    /// timeout has passed. Never paused. Emits a {ContributionWithdrawn} event.
    function withdrawContribution(uint256 contributionId) external;

    /// @notice Publishes the next version: `merkleRoot` over every approved contribution,
    /// `manifestCID` listing them, `contributionCount` how many the curator built them over (so
    /// a review landing between building and publishing cannot make root and count disagree).
    /// Requirements: caller is a curator or the owner; at least `minApproved` approved;
    /// `contributionCount` equals the approved count; something approved since the previous
    /// version; non-zero root; non-empty manifest CID.
    /// Emits a {VersionPublished} event.
    function publishVersion(
        uint256 datanetId,
        bytes32 merkleRoot,
        string calldata manifestCID,
        uint256 contributionCount
    ) external returns (uint256 version);

    /// @notice Sends the caller its refunded bonds and treasury income. Never paused.
    /// Emits a {Withdrawn} event.
    function withdraw() external returns (uint256 amount);

    /// @notice Datanet `datanetId`.
    function datanet(uint256 datanetId) external view returns (Datanet memory);

    /// @notice Contribution `contributionId`.
    function contribution(uint256 contributionId) external view returns (Contribution memory);

    /// @notice Version `versionNumber` of Datanet `datanetId`.
    function version(uint256 datanetId, uint256 versionNumber) external view returns (Version memory);

    /// @notice The id of the latest registration of `cid` in Datanet `datanetId` (whatever its
    /// status), or 0 when it was never registered there.
    function contributionIdOf(uint256 datanetId, string calldata cid) external view returns (uint256);

    /// @notice Whether `account` is a curator (or the owner) of Datanet `datanetId`.
    function isCurator(uint256 datanetId, address account) external view returns (bool);

    /// @notice Whether contribution `contributionId` with `cid` is in version `versionNumber`, by
    /// `proof`; false for a contribution that is not Approved, whatever the version's root holds.
    function isInVersion(
        uint256 datanetId,
        uint256 versionNumber,
        uint256 contributionId,
        string calldata cid,
        bytes32[] calldata proof
    ) external view returns (bool);

    /// @notice What `account` can withdraw, in OPEN wei.
    function withdrawable(address account) external view returns (uint256);

    /// @notice How many Datanets exist (ids are 1..datanetCount).
    function datanetCount() external view returns (uint256);

    /// @notice How many contributions exist (ids are 1..contributionCount).
    function contributionCount() external view returns (uint256);
}
