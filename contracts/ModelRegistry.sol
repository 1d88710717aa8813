// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Governed} from "./governance/Governed.sol";
import {IDatanetRegistry} from "./interfaces/IDatanetRegistry.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title ModelRegistry
/// @notice Registered LoRA models, their adapter versions, pricing and payment splits.
contract ModelRegistry is IModelRegistry, Governed {
    uint256 private constant _BPS = 10_000;
    /// @notice How long a split change waits: nodes redeem what they served under the old one.
    uint256 public constant SPLIT_CHANGE_DELAY = 1 days;

    IDatanetRegistry public immutable datanets;

    uint256 private _modelCount;
    uint16 private _protocolBps;
    uint16 private _contributorsFloorBps;
    mapping(uint256 modelId => Model) private _models;
    mapping(uint256 modelId => mapping(uint256 version => ModelVersion)) private _versions;
    mapping(uint256 modelId => ScheduledSplit) private _scheduledSplits;

    /// @dev A split change and when it takes effect (0: none).
    struct ScheduledSplit {
        Split split;
        uint64 effectiveAt;
    }

    constructor(
        IDatanetRegistry datanets_,
        address governance,
        uint16 protocolBps_,
        uint16 contributorsFloorBps_
    ) Governed(governance) {
        if (address(datanets_) == address(0)) revert ModelZeroAddress();
        datanets = datanets_;
        _setProtocolParameters(protocolBps_, contributorsFloorBps_);
    }

    /// @inheritdoc IModelRegistry
    function registerModel(ModelSpec calldata spec) external whenNotPaused returns (uint256 modelId) {
        if (bytes(spec.metadataCID).length == 0) revert EmptyModelCID("metadataCID");
        if (bytes(spec.baseModelCID).length == 0) revert EmptyModelCID("baseModelCID");
        if (spec.attributor == address(0)) revert ModelZeroAddress();
        _checkSplit(spec.split);
        modelId = ++_modelCount;
        Model storage m = _models[modelId];
        m.developer = msg.sender;
        m.split = spec.split;
        m.status = ModelStatus.Active;
        m.attributor = spec.attributor;
        m.pricing = spec.pricing;
        m.metadataCID = spec.metadataCID;
        m.baseModelCID = spec.baseModelCID;
        emit ModelRegistered(modelId, msg.sender, spec.metadataCID, spec.baseModelCID, spec.attributor);
        emit PricingSet(modelId, spec.pricing.perRequest, spec.pricing.perToken);
        _emitSplit(modelId, spec.split);
        emit AttributorSet(modelId, spec.attributor);
        _addVersion(
            modelId, m, spec.adapterCID, spec.trainingManifestCID, spec.datanetId, spec.datanetVersion
        );
    }

    /// @inheritdoc IModelRegistry
    function publishVersion(
        uint256 modelId,
        string calldata adapterCID,
        string calldata trainingManifestCID,
        uint64 datanetId,
        uint64 datanetVersion
    ) external whenNotPaused returns (uint256 version) {
        Model storage m = _requireDeveloper(modelId);
        version = _addVersion(modelId, m, adapterCID, trainingManifestCID, datanetId, datanetVersion);
    }

    /// @inheritdoc IModelRegistry
    function setStatus(uint256 modelId, ModelStatus status) external {
        Model storage m = _requireDeveloper(modelId);
        if (status == ModelStatus.None) revert InvalidStatus(status);
        m.status = status;
        emit ModelStatusChanged(modelId, status);
    }

    /// @inheritdoc IModelRegistry
    function setPricing(uint256 modelId, Pricing calldata pricing) external {
        _requireDeveloper(modelId).pricing = pricing;
        emit PricingSet(modelId, pricing.perRequest, pricing.perToken);
    }

    /// @inheritdoc IModelRegistry
    function setSplit(uint256 modelId, Split calldata split) external {
        Model storage m = _requireDeveloper(modelId);
        _checkSplit(split);
        ScheduledSplit storage scheduled = _scheduledSplits[modelId];
        if (scheduled.effectiveAt != 0 && scheduled.effectiveAt <= block.timestamp) m.split = scheduled.split;
        uint64 effectiveAt = uint64(block.timestamp + SPLIT_CHANGE_DELAY);
        scheduled.split = split;
        scheduled.effectiveAt = effectiveAt;
        emit SplitScheduled(modelId, split.developer, split.contributors, split.node, split.protocol, effectiveAt);
    }

    /// @inheritdoc IModelRegistry
    function pendingSplit(uint256 modelId) external view returns (Split memory split, uint256 effectiveAt) {
        _requireModel(modelId);
        ScheduledSplit storage scheduled = _scheduledSplits[modelId];
        return (scheduled.split, scheduled.effectiveAt);
    }

    /// @inheritdoc IModelRegistry
    function setAttributor(uint256 modelId, address attributor) external {
        Model storage m = _requireDeveloper(modelId);
        if (attributor == address(0)) revert ModelZeroAddress();
        m.attributor = attributor;
        emit AttributorSet(modelId, attributor);
    }

    /// @notice Sets the protocol's share and the contributors' floor for new splits (bps).
    /// Requirements: their sum is at most 10,000.
    /// Emits {ProtocolBpsSet} and {ContributorsFloorBpsSet} events.
    function setProtocolParameters(uint16 protocolBps_, uint16 contributorsFloorBps_)
        external
        onlyOwner
    {
        _setProtocolParameters(protocolBps_, contributorsFloorBps_);
    }

    /// @inheritdoc IModelRegistry
    function model(uint256 modelId) external view returns (Model memory m) {
        m = _requireModel(modelId);
        m.split = _splitNow(modelId, m.split);
    }

    /// @inheritdoc IModelRegistry
    function modelVersion(uint256 modelId, uint256 version) external view returns (ModelVersion memory v) {
        _requireModel(modelId);
        v = _versions[modelId][version];
        if (v.publishedAt == 0) revert UnknownModelVersion(modelId, version);
    }

    /// @inheritdoc IModelRegistry
    function paymentTerms(uint256 modelId) external view returns (address developer, Split memory split) {
        Model storage m = _requireModel(modelId);
        return (m.developer, _splitNow(modelId, m.split));
    }

    /// @inheritdoc IModelRegistry
    function attributorOf(uint256 modelId) external view returns (address) {
        return _requireModel(modelId).attributor;
    }

    /// @inheritdoc IModelRegistry
    function modelCount() external view returns (uint256) {
        return _modelCount;
    }

    /// @inheritdoc IModelRegistry
    function protocolBps() external view returns (uint256) {
        return _protocolBps;
    }

    /// @inheritdoc IModelRegistry
    function contributorsFloorBps() external view returns (uint256) {
        return _contributorsFloorBps;
    }

    function _addVersion(
        uint256 modelId,
        Model storage m,
        string calldata adapterCID,
        string calldata trainingManifestCID,
        uint64 datanetId,
        uint64 datanetVersion
    ) private returns (uint256 version) {
        if (bytes(adapterCID).length == 0) revert EmptyModelCID("adapterCID");
        if (bytes(trainingManifestCID).length == 0) revert EmptyModelCID("trainingManifestCID");
        _requirePublishedDatanetVersion(datanetId, datanetVersion);
        if (m.versionCount == type(uint16).max) revert TooManyVersions(modelId);
        version = m.versionCount + 1;
        m.versionCount = uint16(version);
        _versions[modelId][version] = ModelVersion({
            adapterCID: adapterCID,
            trainingManifestCID: trainingManifestCID,
            datanetId: datanetId,
            datanetVersion: datanetVersion,
            publishedAt: uint40(block.timestamp)
        });
        emit ModelVersionPublished(
            modelId, version, adapterCID, trainingManifestCID, datanetId, datanetVersion
        );
    }

    function _requirePublishedDatanetVersion(uint64 datanetId, uint64 datanetVersion) private view {
        if (
            datanetId == 0 || datanetId > datanets.datanetCount() || datanetVersion == 0
                || datanetVersion > datanets.datanet(datanetId).versionCount
        ) revert UnpublishedDatanetVersion(datanetId, datanetVersion);
    }

    function _checkSplit(Split calldata split) private view {
        uint256 total =
            uint256(split.developer) + split.contributors + split.node + split.protocol;
        if (total != _BPS) revert SplitTotalNot10000(total);
        if (split.protocol != _protocolBps) revert ProtocolShareMismatch(split.protocol, _protocolBps);
        if (split.contributors < _contributorsFloorBps) {
            revert ContributorsShareBelowFloor(split.contributors, _contributorsFloorBps);
        }
    }

    function _emitSplit(uint256 modelId, Split calldata split) private {
        emit SplitSet(modelId, split.developer, split.contributors, split.node, split.protocol);
    }

    function _setProtocolParameters(uint16 protocolBps_, uint16 contributorsFloorBps_) private {
        uint256 total = uint256(protocolBps_) + contributorsFloorBps_;
        if (total > _BPS) revert ProtocolParametersTooHigh(total);
        _protocolBps = protocolBps_;
        _contributorsFloorBps = contributorsFloorBps_;
        emit ProtocolBpsSet(protocolBps_);
        emit ContributorsFloorBpsSet(contributorsFloorBps_);
    }

    /// @dev The split in effect now: the scheduled one once its time has come, else `current`.
    function _splitNow(uint256 modelId, Split memory current) private view returns (Split memory) {
        ScheduledSplit storage scheduled = _scheduledSplits[modelId];
        uint256 effectiveAt = scheduled.effectiveAt;
        return effectiveAt != 0 && effectiveAt <= block.timestamp ? scheduled.split : current;
    }

    function _requireModel(uint256 modelId) private view returns (Model storage m) {
        m = _models[modelId];
        if (m.status == ModelStatus.None) revert UnknownModel(modelId);
    }

    function _requireDeveloper(uint256 modelId) private view returns (Model storage m) {
        m = _requireModel(modelId);
        if (m.developer != msg.sender) revert NotModelDeveloper(modelId, msg.sender);
        if (m.status == ModelStatus.Retired) revert ModelIsRetired(modelId);
    }
}
