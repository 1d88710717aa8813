// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {Governed} from "./governance/Governed.sol";
import {IDatanetRegistry} from "./interfaces/IDatanetRegistry.sol";

/// @title DatanetRegistry
/// @notice Datanets, their contributions, curation and immutable versions.
contract DatanetRegistry is IDatanetRegistry, Governed, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;

    /// @notice How long a contribution waits for review before its contributor may withdraw it.
    uint256 public constant REVIEW_TIMEOUT = 30 days;

    uint256 private _datanetCount;
    uint256 private _contributionCount;
    mapping(uint256 datanetId => Datanet) private _datanets;
    mapping(uint256 contributionId => Contribution) private _contributions;
    mapping(uint256 datanetId => mapping(uint256 versionNumber => Version)) private _versions;
    mapping(uint256 datanetId => mapping(bytes32 cidHash => uint256 contributionId)) private _idOfCid;
    mapping(uint256 datanetId => mapping(address account => bool)) private _curators;
    mapping(address account => uint256 amount) private _withdrawable; // OPEN wei

    constructor(IERC20 token_, address governance) Governed(governance) {
        if (address(token_) == address(0)) revert DatanetZeroAddress();
        token = token_;
    }

    /// @inheritdoc IDatanetRegistry
    function createDatanet(
        string calldata metadataCID,
        uint96 contributionBond,
        uint64 minApproved,
        address treasury
    ) external whenNotPaused returns (uint256 datanetId) {
        if (bytes(metadataCID).length == 0) revert EmptyCID();
        if (treasury == address(0)) revert DatanetZeroAddress();
        datanetId = ++_datanetCount;
        Datanet storage d = _datanets[datanetId];
        d.owner = msg.sender;
        d.contributionBond = contributionBond;
        d.treasury = treasury;
        d.minApproved = minApproved;
        d.metadataCID = metadataCID;
        emit DatanetCreated(datanetId, msg.sender, metadataCID, contributionBond, minApproved, treasury);
    }

    /// @inheritdoc IDatanetRegistry
    function addCurator(uint256 datanetId, address curator) external {
        _requireOwner(datanetId);
        if (curator == address(0)) revert DatanetZeroAddress();
        _curators[datanetId][curator] = true;
        emit CuratorAdded(datanetId, curator);
    }

    /// @inheritdoc IDatanetRegistry
    function removeCurator(uint256 datanetId, address curator) external {
        _requireOwner(datanetId);
        _curators[datanetId][curator] = false;
        emit CuratorRemoved(datanetId, curator);
    }

    /// @inheritdoc IDatanetRegistry
    function contribute(uint256 datanetId, string calldata cid, uint64 size)
        external
        whenNotPaused
        returns (uint256 contributionId)
    {
        Datanet storage d = _requireDatanet(datanetId);
        uint96 bond = d.contributionBond;
        contributionId = ++_contributionCount;
        _register(datanetId, contributionId, cid, size, bond);
        d.contributionCount += 1;
        if (bond != 0) token.safeTransferFrom(msg.sender, address(this), bond);
    }

    /// @inheritdoc IDatanetRegistry
    function contributeBatch(uint256 datanetId, string[] calldata cids, uint64[] calldata sizes)
        external
        whenNotPaused
        returns (uint256 firstContributionId)
    {
        uint256 n = cids.length;
        if (n == 0) revert EmptyBatch();
        if (n != sizes.length) revert LengthMismatch(n, sizes.length);
        Datanet storage d = _requireDatanet(datanetId);
        uint96 bond = d.contributionBond;
        uint256 lastId = _contributionCount;
        firstContributionId = lastId + 1;
        for (uint256 i; i < n; ++i) {
            _register(datanetId, ++lastId, cids[i], sizes[i], bond);
        }
        _contributionCount = lastId;
        d.contributionCount += uint64(n);
        if (bond != 0) token.safeTransferFrom(msg.sender, address(this), uint256(bond) * n);
    }

    /// @inheritdoc IDatanetRegistry
    function review(uint256 datanetId, uint256[] calldata contributionIds, bool[] calldata approve)
        external
    {
        uint256 n = contributionIds.length;
        if (n == 0) revert EmptyBatch();
        if (n != approve.length) revert LengthMismatch(n, approve.length);
        Datanet storage d = _requireDatanet(datanetId);
        _requireCurator(datanetId, d);
        uint256 approved;
        uint256 rejectedBonds;
        for (uint256 i; i < n; ++i) {
            uint256 id = contributionIds[i];
            Contribution storage c = _contributions[id];
            ContributionStatus status = c.status;
            if (status == ContributionStatus.None) revert UnknownContribution(id);
            if (c.datanetId != datanetId) revert ContributionNotInDatanet(id, datanetId, c.datanetId);
            if (status != ContributionStatus.Pending) revert ContributionNotPending(id, status);
            uint96 bond = c.bond;
            c.bond = 0;
            if (approve[i]) {
                c.status = ContributionStatus.Approved;
                ++approved;
                if (bond != 0) _withdrawable[c.contributor] += bond;
            } else {
                c.status = ContributionStatus.Rejected;
                rejectedBonds += bond;
            }
            emit Reviewed(datanetId, id, msg.sender, approve[i]);
        }
        if (approved != 0) d.approvedCount += uint64(approved);
        if (rejectedBonds != 0) _withdrawable[d.treasury] += rejectedBonds;
    }

    /// @inheritdoc IDatanetRegistry
    function withdrawContribution(uint256 contributionId) external {
        Contribution storage c = _contributions[contributionId];
        ContributionStatus status = c.status;
        if (status == ContributionStatus.None) revert UnknownContribution(contributionId);
        if (c.contributor != msg.sender) revert NotContributor(contributionId, msg.sender);
        if (status != ContributionStatus.Pending) revert ContributionNotPending(contributionId, status);
        uint256 deadline = uint256(c.createdAt) + REVIEW_TIMEOUT;
        if (block.timestamp < deadline) revert ReviewTimeoutNotReached(contributionId, deadline, block.timestamp);
        uint96 bond = c.bond;
        c.bond = 0;
        c.status = ContributionStatus.Withdrawn; // releases the CID (see _register)
        if (bond != 0) _withdrawable[msg.sender] += bond;
        emit ContributionWithdrawn(c.datanetId, contributionId, msg.sender, bond);
    }

    /// @inheritdoc IDatanetRegistry
    function publishVersion(
        uint256 datanetId,
        bytes32 merkleRoot,
        string calldata manifestCID,
        uint256 contributionCount
    ) external returns (uint256 versionNumber) {
        Datanet storage d = _requireDatanet(datanetId);
        _requireCurator(datanetId, d);
        if (merkleRoot == bytes32(0)) revert ZeroMerkleRoot();
        if (bytes(manifestCID).length == 0) revert EmptyCID();
        uint64 approved = d.approvedCount;
        if (approved == 0 || approved < d.minApproved) {
            revert NotEnoughApproved(datanetId, approved, d.minApproved);
        }
        if (contributionCount != approved) revert ApprovedCountChanged(datanetId, contributionCount, approved);
        uint32 previous = d.versionCount;
        if (previous != 0 && _versions[datanetId][previous].contributionCount == approved) {
            revert NoChangeSinceVersion(datanetId, previous);
        }
        versionNumber = previous + 1;
        d.versionCount = uint32(versionNumber);
        _versions[datanetId][versionNumber] = Version({
            merkleRoot: merkleRoot,
            contributionCount: approved,
            publishedAt: uint40(block.timestamp),
            manifestCID: manifestCID
        });
        emit VersionPublished(datanetId, versionNumber, merkleRoot, approved, manifestCID);
    }

    /// @inheritdoc IDatanetRegistry
    function withdraw() external nonReentrant returns (uint256 amount) {
        amount = _withdrawable[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _withdrawable[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IDatanetRegistry
    function datanet(uint256 datanetId) external view returns (Datanet memory) {
        return _requireDatanet(datanetId);
    }

    /// @inheritdoc IDatanetRegistry
    function contribution(uint256 contributionId) external view returns (Contribution memory c) {
        c = _contributions[contributionId];
        if (c.status == ContributionStatus.None) revert UnknownContribution(contributionId);
    }

    /// @inheritdoc IDatanetRegistry
    function version(uint256 datanetId, uint256 versionNumber) external view returns (Version memory) {
        return _requireVersion(datanetId, versionNumber);
    }

    /// @inheritdoc IDatanetRegistry
    function contributionIdOf(uint256 datanetId, string calldata cid) external view returns (uint256) {
        return _idOfCid[datanetId][keccak256(bytes(cid))];
    }

    /// @inheritdoc IDatanetRegistry
    function isCurator(uint256 datanetId, address account) public view returns (bool) {
        return _curators[datanetId][account] || _datanets[datanetId].owner == account;
    }

    /// @inheritdoc IDatanetRegistry
    function isInVersion(
        uint256 datanetId,
        uint256 versionNumber,
        uint256 contributionId,
        string calldata cid,
        bytes32[] calldata proof
    ) external view returns (bool) {
        bytes32 root = _requireVersion(datanetId, versionNumber).merkleRoot;
        if (_idOfCid[datanetId][keccak256(bytes(cid))] != contributionId) return false;
        Contribution storage c = _contributions[contributionId];
        // A curator's root could include anything: only an approved contribution is in a version.
        if (c.status != ContributionStatus.Approved) return false;
        address contributor = c.contributor;
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(contributionId, contributor, cid))));
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @inheritdoc IDatanetRegistry
    function withdrawable(address account) external view returns (uint256) {
        return _withdrawable[account];
    }

    /// @inheritdoc IDatanetRegistry
    function datanetCount() external view returns (uint256) {
        return _datanetCount;
    }

    /// @inheritdoc IDatanetRegistry
    function contributionCount() external view returns (uint256) {
        return _contributionCount;
    }

    /// @dev Records one contribution; the caller transfers the bond and counts it.
    function _register(uint256 datanetId, uint256 id, string calldata cid, uint64 size, uint96 bond)
        private
    {
        if (bytes(cid).length == 0) revert EmptyCID();
        bytes32 cidHash = keccak256(bytes(cid));
        uint256 existing = _idOfCid[datanetId][cidHash];
        if (existing != 0) {
            // Only a pending or approved contribution holds its CID: a squatter's rejected (or a
            // withdrawn) registration must not keep the real author out forever.
            ContributionStatus held = _contributions[existing].status;
            if (held == ContributionStatus.Pending || held == ContributionStatus.Approved) {
                revert DuplicateContribution(datanetId, cid, existing);
            }
        }
        _idOfCid[datanetId][cidHash] = id;
        _contributions[id] = Contribution({
            contributor: msg.sender,
            bond: bond,
            datanetId: uint64(datanetId),
            size: size,
            createdAt: uint40(block.timestamp),
            status: ContributionStatus.Pending
        });
        emit Contributed(datanetId, id, msg.sender, cid, size, bond);
    }

    function _requireDatanet(uint256 datanetId) private view returns (Datanet storage d) {
        d = _datanets[datanetId];
        if (d.owner == address(0)) revert UnknownDatanet(datanetId);
    }

    function _requireOwner(uint256 datanetId) private view {
        if (_requireDatanet(datanetId).owner != msg.sender) revert NotDatanetOwner(datanetId, msg.sender);
    }

    function _requireCurator(uint256 datanetId, Datanet storage d) private view {
        if (d.owner != msg.sender && !_curators[datanetId][msg.sender]) {
            revert NotCurator(datanetId, msg.sender);
        }
    }

    function _requireVersion(uint256 datanetId, uint256 versionNumber)
        private
        view
        returns (Version storage v)
    {
        _requireDatanet(datanetId);
        v = _versions[datanetId][versionNumber];
        if (v.publishedAt == 0) revert UnknownVersion(datanetId, versionNumber);
    }
}
