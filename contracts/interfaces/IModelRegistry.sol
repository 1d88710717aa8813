// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IModelRegistry
/// @notice LoRA models: a base model, a chain of adapter versions each trained on a published
/// Datanet version, a price list and the split of every payment among the developer, the data
/// contributors (the model's attribution pool), the serving node and the protocol.
/// The protocol's share and a floor for the contributors' share are set by governance; a split
/// is checked against them when it is set and then stays as set.
interface IModelRegistry {
    enum ModelStatus {
        None,
        Active,
        Paused,
        Retired
    }

    /// @notice Shares of each payment, in basis points summing to 10,000.
    struct Split {
        uint16 developer;
        uint16 contributors;
        uint16 node;
        uint16 protocol;
    }

    /// @notice What a node quotes; enforced off-chain by the node, vouchers carry the amounts.
    struct Pricing {
        uint96 perRequest; // OPEN wei per inference
        uint96 perToken; // OPEN wei per token in or out
    }

    /// @notice What a developer gives to register a model.
    struct ModelSpec {
        string metadataCID; // name, description, license, prompt format
        string baseModelCID; // the base model the adapters apply to
        string adapterCID; // version 1: PEFT adapter (adapter_config.json + safetensors)
        string trainingManifestCID; // version 1: every training example -> its contribution
        uint64 datanetId; // version 1 was trained on this Datanet ...
        uint64 datanetVersion; // ... at this published version
        Pricing pricing;
        Split split;
        address attributor; // posts attribution epochs; must be staked in the NodeRegistry
    }

    /// @notice A model. Slot 1: developer | split | status | versionCount (one read for payments).
    struct Model {
        address developer;
        Split split;
        ModelStatus status;
        uint16 versionCount; // adapter versions are numbered 1..versionCount
        address attributor;
        Pricing pricing;
        string metadataCID;
        string baseModelCID;
    }

    /// @notice One adapter version of a model: immutable once written.
    struct ModelVersion {
        string adapterCID;
        string trainingManifestCID;
        uint64 datanetId;
        uint64 datanetVersion;
        uint40 publishedAt; // unix seconds
    }

    /// @notice No model with id `modelId` exists.
    error UnknownModel(uint256 modelId);
    /// @notice Model `modelId` has no version `version`.
    error UnknownModelVersion(uint256 modelId, uint256 version);
    /// @notice `caller` is not the developer of model `modelId`.
    error NotModelDeveloper(uint256 modelId, address caller);
    /// @notice Model `modelId` is retired; nothing about it can change.
    error ModelIsRetired(uint256 modelId);
    /// @notice `status` cannot be set (only Active, Paused or Retired can).
    error InvalidStatus(ModelStatus status);
    /// @notice A split's shares add up to `total` bps instead of 10,000.
    error SplitTotalNot10000(uint256 total);
    /// @notice A split gives the protocol `given` bps; governance requires `required`.
    error ProtocolShareMismatch(uint256 given, uint256 required);
    /// @notice A split gives the contributors `given` bps, below the floor of `floor`.
    error ContributorsShareBelowFloor(uint256 given, uint256 floor);
    /// @notice Governance parameters whose sum `total` exceeds 10,000 bps.
    error ProtocolParametersTooHigh(uint256 total);
    /// @notice Datanet `datanetId` has no published version `version` to train on.
    error UnpublishedDatanetVersion(uint256 datanetId, uint256 version);
    /// @notice An empty CID was given for `field`.
    error EmptyModelCID(string field);
    /// @notice The zero address was given where an account is required.
    error ModelZeroAddress();
    /// @notice A model can hold at most 65,535 versions.
    error TooManyVersions(uint256 modelId);

    /// @notice Model `modelId` was registered by `developer` with adapter version 1.
    event ModelRegistered(
        uint256 indexed modelId,
        address indexed developer,
        string metadataCID,
        string baseModelCID,
        address attributor
    );
    /// @notice Version `version` of model `modelId` was published (version 1 at registration).
    event ModelVersionPublished(
        uint256 indexed modelId,
        uint256 indexed version,
        string adapterCID,
        string trainingManifestCID,
        uint256 datanetId,
        uint256 datanetVersion
    );
    /// @notice The status of model `modelId` changed.
    event ModelStatusChanged(uint256 indexed modelId, ModelStatus status);
    /// @notice The pricing of model `modelId` changed.
    event PricingSet(uint256 indexed modelId, uint256 perRequest, uint256 perToken);
    /// @notice The split of model `modelId` changed.
    event SplitSet(uint256 indexed modelId, uint256 developer, uint256 contributors, uint256 node, uint256 protocol);
    /// @notice The split of model `modelId` will change to the one given at `effectiveAt`.
    event SplitScheduled(
        uint256 indexed modelId,
        uint256 developer,
        uint256 contributors,
        uint256 node,
        uint256 protocol,
        uint256 effectiveAt
    );
    /// @notice The attributor of model `modelId` changed.
    event AttributorSet(uint256 indexed modelId, address indexed attributor);
    /// @notice Governance set the protocol's share of every new split, in bps.
    event ProtocolBpsSet(uint256 protocolBps);
    /// @notice Governance set the floor of the contributors' share of every new split, in bps.
    event ContributorsFloorBpsSet(uint256 contributorsFloorBps);

    /// @notice Registers a model with its first adapter version; the caller is its developer.
    /// Requirements: not paused; non-empty CIDs; the Datanet version is published; a valid split
    /// (sums to 10,000, protocol share as set by governance, contributors at or above the floor);
    /// a non-zero attributor.
    /// Emits {ModelRegistered}, {ModelVersionPublished}, {PricingSet}, {SplitSet}, {AttributorSet}.
    function registerModel(ModelSpec calldata spec) external returns (uint256 modelId);

    /// @notice Publishes the next adapter version of model `modelId`.
    /// Requirements: caller is the developer; the model is not retired; non-empty CIDs; the
    /// Datanet version is published. Emits a {ModelVersionPublished} event.
    function publishVersion(
        uint256 modelId,
        string calldata adapterCID,
        string calldata trainingManifestCID,
        uint64 datanetId,
        uint64 datanetVersion
    ) external returns (uint256 version);

    /// @notice Sets the status to Active, Paused or Retired (final).
    /// Requirements: caller is the developer; the model is not retired. Emits {ModelStatusChanged}.
    function setStatus(uint256 modelId, ModelStatus status) external;

    /// @notice Sets the pricing. Requirements: developer; not retired. Emits a {PricingSet} event.
    function setPricing(uint256 modelId, Pricing calldata pricing) external;

    /// @notice Schedules a new split, checked against the current governance parameters; it
    /// takes effect SPLIT_CHANGE_DELAY from now (replacing any change still scheduled), so
    /// vouchers nodes accepted under the old split can be redeemed under it.
    /// Requirements: developer; not retired; valid split. Emits a {SplitScheduled} event.
    function setSplit(uint256 modelId, Split calldata split) external;

    /// @notice The split change scheduled for model `modelId` and when it takes effect (0: none
    /// pending; a time in the past: already in effect).
    function pendingSplit(uint256 modelId) external view returns (Split memory split, uint256 effectiveAt);

    /// @notice Sets the attributor. Requirements: developer; not retired; non-zero.
    /// Emits an {AttributorSet} event.
    function setAttributor(uint256 modelId, address attributor) external;

    /// @notice Model `modelId`.
    function model(uint256 modelId) external view returns (Model memory);

    /// @notice Version `version` of model `modelId`.
    function modelVersion(uint256 modelId, uint256 version) external view returns (ModelVersion memory);

    /// @notice What a redemption needs: the developer and the split in effect now.
    /// Reverts with {UnknownModel} for an unknown id.
    function paymentTerms(uint256 modelId) external view returns (address developer, Split memory split);

    /// @notice The attributor of model `modelId`. Reverts with {UnknownModel} for an unknown id.
    function attributorOf(uint256 modelId) external view returns (address);

    /// @notice How many models exist (ids are 1..modelCount).
    function modelCount() external view returns (uint256);

    /// @notice The protocol's share of every new split, in bps.
    function protocolBps() external view returns (uint256);

    /// @notice The minimum contributors' share of every new split, in bps.
    function contributorsFloorBps() external view returns (uint256);
}
