"""ModelRegistry: registration with split rules, adapter versions, status, pricing, governance."""

from __future__ import annotations

from typing import Any

import ape
import pytest
from ape import chain

from backend.protocol.contracts import project

OPEN = 10**18
PROTOCOL_BPS = 500
FLOOR_BPS = 1_000
SPLIT = (6_000, 2_000, 1_500, PROTOCOL_BPS)  # developer, contributors, node, protocol
PRICING = (2 * 10**15, 10**12)  # perRequest, perToken (OPEN wei)
ZERO = "0x0000000000000000000000000000000000000000"
NONE, ACTIVE, PAUSED, RETIRED = 0, 1, 2, 3  # ModelStatus
DAY = 86_400  # seconds
SPLIT_CHANGE_DELAY = DAY


@pytest.fixture(scope="module", autouse=True)
def trained_datanet(datanets, curator, contributor) -> int:
    """Datanet 1 with one published version; Datanet 2 exists with no version."""
    datanets.createDatanet("bafkreidatanet", 0, 1, curator, sender=curator)
    datanet = datanets.datanetCount()
    datanets.contribute(datanet, "bafkreia", 10, sender=contributor)
    datanets.review(datanet, [datanets.contributionCount()], [True], sender=curator)
    datanets.publishVersion(datanet, b"\x11" * 32, "bafkreimanifest", 1, sender=curator)
    datanets.createDatanet("bafkreiunpublished", 0, 1, curator, sender=curator)
    return datanet


def pending_split(models: Any, model_id: int) -> tuple[tuple[int, ...], int]:
    """(split, effectiveAt) of ``models.pendingSplit``, as plain tuples."""
    split, effective_at = models.pendingSplit(model_id)
    return tuple(split), effective_at


def spec(trained_datanet: int, attributor: str, **changes: Any) -> tuple:
    """A ModelSpec tuple, with fields overridden by name."""
    fields = {
        "metadataCID": "bafkreimeta",
        "baseModelCID": "bafkreibase",
        "adapterCID": "bafkreiadapter1",
        "trainingManifestCID": "bafkreitraining1",
        "datanetId": trained_datanet,
        "datanetVersion": 1,
        "pricing": PRICING,
        "split": SPLIT,
        "attributor": attributor,
    }
    fields.update(changes)
    return tuple(fields.values())


@pytest.fixture(scope="module", autouse=True)
def registered_model(models, trained_datanet, developer, node) -> int:
    """Model 1, registered by `developer` with `node` as its attributor."""
    models.registerModel(spec(trained_datanet, node.address), sender=developer)
    return models.modelCount()


# registerModel ---------------------------------------------------------------------------


def test_register_model_stores_and_emits(models, trained_datanet, developer, node):
    new_id = models.modelCount() + 1
    tx = models.registerModel(spec(trained_datanet, node.address), sender=developer)
    assert tx.events == [
        models.ModelRegistered(
            modelId=new_id,
            developer=developer.address,
            metadataCID="bafkreimeta",
            baseModelCID="bafkreibase",
            attributor=node.address,
        ),
        models.PricingSet(modelId=new_id, perRequest=PRICING[0], perToken=PRICING[1]),
        models.SplitSet(
            modelId=new_id,
            developer=SPLIT[0],
            contributors=SPLIT[1],
            node=SPLIT[2],
            protocol=SPLIT[3],
        ),
        models.AttributorSet(modelId=new_id, attributor=node.address),
        models.ModelVersionPublished(
            modelId=new_id,
            version=1,
            adapterCID="bafkreiadapter1",
            trainingManifestCID="bafkreitraining1",
            datanetId=trained_datanet,
            datanetVersion=1,
        ),
    ]
    assert models.modelCount() == new_id
    m = models.model(new_id)
    assert m.developer == developer.address
    assert tuple(m.split) == SPLIT
    assert m.status == ACTIVE
    assert m.versionCount == 1
    assert m.attributor == node.address
    assert tuple(m.pricing) == PRICING
    assert m.metadataCID == "bafkreimeta"
    assert m.baseModelCID == "bafkreibase"
    v = models.modelVersion(new_id, 1)
    assert v.adapterCID == "bafkreiadapter1"
    assert v.trainingManifestCID == "bafkreitraining1"
    assert v.datanetId == trained_datanet
    assert v.datanetVersion == 1
    assert v.publishedAt == ape.chain.blocks.head.timestamp
    developer_address, split = models.paymentTerms(new_id)
    assert developer_address == developer.address
    assert tuple(split) == SPLIT
    assert models.attributorOf(new_id) == node.address


def test_register_model_split_not_10000_reverts(models, trained_datanet, developer, node):
    with ape.reverts(models.SplitTotalNot10000, total=9_999):
        models.registerModel(
            spec(trained_datanet, node.address, split=(5_999, 2_000, 1_500, 500)), sender=developer
        )
    with ape.reverts(models.SplitTotalNot10000, total=10_001):
        models.registerModel(
            spec(trained_datanet, node.address, split=(6_001, 2_000, 1_500, 500)), sender=developer
        )


def test_register_model_protocol_share_mismatch_reverts(models, trained_datanet, developer, node):
    with ape.reverts(models.ProtocolShareMismatch, given=400, required=PROTOCOL_BPS):
        models.registerModel(
            spec(trained_datanet, node.address, split=(6_100, 2_000, 1_500, 400)), sender=developer
        )


def test_register_model_contributors_below_floor_reverts(models, trained_datanet, developer, node):
    with ape.reverts(models.ContributorsShareBelowFloor, given=999, floor=FLOOR_BPS):
        models.registerModel(
            spec(trained_datanet, node.address, split=(7_001, 999, 1_500, 500)), sender=developer
        )


def test_register_model_contributors_at_floor_succeeds(models, trained_datanet, developer, node):
    split = (7_000, FLOOR_BPS, 1_500, PROTOCOL_BPS)
    models.registerModel(spec(trained_datanet, node.address, split=split), sender=developer)
    assert tuple(models.paymentTerms(models.modelCount())[1]) == split


@pytest.mark.parametrize(
    "field", ["metadataCID", "baseModelCID", "adapterCID", "trainingManifestCID"]
)
def test_register_model_empty_cid_reverts(models, trained_datanet, developer, node, field):
    with ape.reverts(models.EmptyModelCID, field=field):
        models.registerModel(spec(trained_datanet, node.address, **{field: ""}), sender=developer)


def test_register_model_zero_attributor_reverts(models, trained_datanet, developer):
    with ape.reverts(models.ModelZeroAddress):
        models.registerModel(spec(trained_datanet, ZERO), sender=developer)


@pytest.mark.parametrize(
    ("datanet", "version"),
    [(1, 0), (1, 2), (2, 1), (0, 1), (99, 1)],
    ids=[
        "version-zero",
        "version-unpublished",
        "datanet-without-version",
        "datanet-zero",
        "datanet-unknown",
    ],
)
def test_register_model_unpublished_datanet_version_reverts(
    models, trained_datanet, developer, node, datanet, version
):
    with ape.reverts(models.UnpublishedDatanetVersion, datanetId=datanet, version=version):
        models.registerModel(
            spec(trained_datanet, node.address, datanetId=datanet, datanetVersion=version),
            sender=developer,
        )


def test_register_model_when_paused_reverts(models, governance, trained_datanet, developer, node):
    models.pause(sender=governance)
    with ape.reverts(models.EnforcedPause):
        models.registerModel(spec(trained_datanet, node.address), sender=developer)


def test_constructor_zero_datanets_reverts(governance):
    with ape.reverts(project().ModelRegistry.ModelZeroAddress):
        governance.deploy(project().ModelRegistry, ZERO, governance, 500, 1_000)


def test_constructor_parameters_too_high_reverts(governance, datanets):
    with ape.reverts(project().ModelRegistry.ProtocolParametersTooHigh, total=10_001):
        governance.deploy(project().ModelRegistry, datanets, governance, 5_000, 5_001)


# publishVersion --------------------------------------------------------------------------


def test_publish_version_appends_and_emits(models, trained_datanet, registered_model, developer):
    tx = models.publishVersion(
        registered_model,
        "bafkreiadapter2",
        "bafkreitraining2",
        trained_datanet,
        1,
        sender=developer,
    )
    assert tx.events == [
        models.ModelVersionPublished(
            modelId=registered_model,
            version=2,
            adapterCID="bafkreiadapter2",
            trainingManifestCID="bafkreitraining2",
            datanetId=trained_datanet,
            datanetVersion=1,
        )
    ]
    assert models.model(registered_model).versionCount == 2
    assert models.modelVersion(registered_model, 2).adapterCID == "bafkreiadapter2"
    assert models.modelVersion(registered_model, 1).adapterCID == "bafkreiadapter1"


def test_publish_version_by_non_developer_reverts(models, trained_datanet, registered_model, other):
    with ape.reverts(models.NotModelDeveloper, modelId=registered_model, caller=other.address):
        models.publishVersion(
            registered_model, "bafkreia2", "bafkreit2", trained_datanet, 1, sender=other
        )


def test_publish_version_unknown_model_reverts(
    models, trained_datanet, registered_model, developer
):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.publishVersion(99, "bafkreia2", "bafkreit2", trained_datanet, 1, sender=developer)


def test_publish_version_retired_reverts(models, trained_datanet, registered_model, developer):
    models.setStatus(registered_model, RETIRED, sender=developer)
    with ape.reverts(models.ModelIsRetired, modelId=registered_model):
        models.publishVersion(
            registered_model, "bafkreia2", "bafkreit2", trained_datanet, 1, sender=developer
        )


def test_publish_version_empty_cids_revert(models, trained_datanet, registered_model, developer):
    with ape.reverts(models.EmptyModelCID, field="adapterCID"):
        models.publishVersion(
            registered_model, "", "bafkreit2", trained_datanet, 1, sender=developer
        )
    with ape.reverts(models.EmptyModelCID, field="trainingManifestCID"):
        models.publishVersion(
            registered_model, "bafkreia2", "", trained_datanet, 1, sender=developer
        )


def test_publish_version_unpublished_datanet_version_reverts(
    models, trained_datanet, registered_model, developer
):
    with ape.reverts(models.UnpublishedDatanetVersion, datanetId=trained_datanet, version=2):
        models.publishVersion(
            registered_model, "bafkreia2", "bafkreit2", trained_datanet, 2, sender=developer
        )


def test_publish_version_when_paused_reverts(
    models, governance, trained_datanet, registered_model, developer
):
    models.pause(sender=governance)
    with ape.reverts(models.EnforcedPause):
        models.publishVersion(
            registered_model, "bafkreia2", "bafkreit2", trained_datanet, 1, sender=developer
        )


def test_model_version_unknown_reverts(models, registered_model):
    with ape.reverts(models.UnknownModelVersion, modelId=registered_model, version=2):
        models.modelVersion(registered_model, 2)
    with ape.reverts(models.UnknownModelVersion, modelId=registered_model, version=0):
        models.modelVersion(registered_model, 0)


def test_model_version_of_unknown_model_reverts(models, registered_model):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.modelVersion(99, 1)


# setStatus -------------------------------------------------------------------------------


def test_set_status_pause_and_reactivate_emit(models, registered_model, developer):
    tx = models.setStatus(registered_model, PAUSED, sender=developer)
    assert tx.events == [models.ModelStatusChanged(modelId=registered_model, status=PAUSED)]
    assert models.model(registered_model).status == PAUSED
    tx = models.setStatus(registered_model, ACTIVE, sender=developer)
    assert tx.events == [models.ModelStatusChanged(modelId=registered_model, status=ACTIVE)]
    assert models.model(registered_model).status == ACTIVE


def test_set_status_retired_is_final(models, registered_model, developer):
    tx = models.setStatus(registered_model, RETIRED, sender=developer)
    assert tx.events == [models.ModelStatusChanged(modelId=registered_model, status=RETIRED)]
    assert models.model(registered_model).status == RETIRED
    for status in (ACTIVE, PAUSED, RETIRED):
        with ape.reverts(models.ModelIsRetired, modelId=registered_model):
            models.setStatus(registered_model, status, sender=developer)
    # A retired model stays readable.
    assert models.paymentTerms(registered_model)[0] == developer.address


def test_set_status_none_reverts_invalid(models, registered_model, developer):
    with ape.reverts(models.InvalidStatus, status=NONE):
        models.setStatus(registered_model, NONE, sender=developer)


def test_set_status_by_non_developer_reverts(models, registered_model, governance):
    with ape.reverts(models.NotModelDeveloper, modelId=registered_model, caller=governance.address):
        models.setStatus(registered_model, PAUSED, sender=governance)


def test_set_status_unknown_model_reverts(models, registered_model, developer):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.setStatus(99, PAUSED, sender=developer)


# setPricing ------------------------------------------------------------------------------


def test_set_pricing_stores_and_emits(models, registered_model, developer):
    tx = models.setPricing(registered_model, (5 * OPEN, 7), sender=developer)
    assert tx.events == [
        models.PricingSet(modelId=registered_model, perRequest=5 * OPEN, perToken=7)
    ]
    assert tuple(models.model(registered_model).pricing) == (5 * OPEN, 7)


def test_set_pricing_by_non_developer_reverts(models, registered_model, other):
    with ape.reverts(models.NotModelDeveloper, modelId=registered_model, caller=other.address):
        models.setPricing(registered_model, (1, 1), sender=other)


def test_set_pricing_retired_reverts(models, registered_model, developer):
    models.setStatus(registered_model, RETIRED, sender=developer)
    with ape.reverts(models.ModelIsRetired, modelId=registered_model):
        models.setPricing(registered_model, (1, 1), sender=developer)


def test_set_pricing_unknown_model_reverts(models, registered_model, developer):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.setPricing(99, (1, 1), sender=developer)


# setSplit --------------------------------------------------------------------------------


def test_set_split_schedules_and_emits(models, registered_model, developer):
    split = (4_000, 4_000, 1_500, PROTOCOL_BPS)
    tx = models.setSplit(registered_model, split, sender=developer)

    effective_at = tx.timestamp + SPLIT_CHANGE_DELAY
    assert tx.events == [
        models.SplitScheduled(
            modelId=registered_model,
            developer=4_000,
            contributors=4_000,
            node=1_500,
            protocol=PROTOCOL_BPS,
            effectiveAt=effective_at,
        )
    ]
    assert models.SPLIT_CHANGE_DELAY() == SPLIT_CHANGE_DELAY
    assert pending_split(models, registered_model) == (split, effective_at)
    # The split in effect does not move until the delay has passed.
    assert tuple(models.paymentTerms(registered_model)[1]) == SPLIT
    assert tuple(models.model(registered_model).split) == SPLIT


def test_set_split_takes_effect_after_split_change_delay(models, registered_model, developer):
    split = (4_000, 4_000, 1_500, PROTOCOL_BPS)
    effective_at = models.setSplit(registered_model, split, sender=developer).timestamp + DAY

    chain.mine(timestamp=effective_at - 1)
    assert tuple(models.paymentTerms(registered_model)[1]) == SPLIT
    chain.mine(timestamp=effective_at)
    assert tuple(models.paymentTerms(registered_model)[1]) == split
    assert tuple(models.model(registered_model).split) == split
    assert pending_split(models, registered_model) == (split, effective_at)  # in the past


def test_set_split_again_replaces_the_scheduled_change_and_restarts_the_delay(
    models, registered_model, developer
):
    first = (4_000, 4_000, 1_500, PROTOCOL_BPS)
    second = (3_000, 5_000, 1_500, PROTOCOL_BPS)
    models.setSplit(registered_model, first, sender=developer)
    chain.pending_timestamp += DAY // 2
    effective_at = models.setSplit(registered_model, second, sender=developer).timestamp + DAY

    chain.mine(timestamp=effective_at - 1)  # past the first change's time: it never applies
    assert tuple(models.paymentTerms(registered_model)[1]) == SPLIT
    chain.mine(timestamp=effective_at)
    assert tuple(models.paymentTerms(registered_model)[1]) == second


def test_set_split_after_a_change_took_effect_keeps_it_until_the_next(
    models, registered_model, developer
):
    first = (4_000, 4_000, 1_500, PROTOCOL_BPS)
    second = (3_000, 5_000, 1_500, PROTOCOL_BPS)
    models.setSplit(registered_model, first, sender=developer)
    chain.pending_timestamp += DAY
    effective_at = models.setSplit(registered_model, second, sender=developer).timestamp + DAY

    # The first change is in effect (not rolled back to the registered split) ...
    assert tuple(models.paymentTerms(registered_model)[1]) == first
    assert tuple(models.model(registered_model).split) == first
    # ... until the second one's time.
    chain.mine(timestamp=effective_at)
    assert tuple(models.paymentTerms(registered_model)[1]) == second


def test_pending_split_without_change_is_zero(models, registered_model):
    assert pending_split(models, registered_model) == ((0, 0, 0, 0), 0)


def test_pending_split_unknown_model_reverts(models, registered_model):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.pendingSplit(99)


def test_set_split_invalid_reverts(models, registered_model, developer):
    with ape.reverts(models.SplitTotalNot10000, total=9_000):
        models.setSplit(registered_model, (5_000, 2_000, 1_500, 500), sender=developer)
    with ape.reverts(models.ProtocolShareMismatch, given=0, required=PROTOCOL_BPS):
        models.setSplit(registered_model, (6_500, 2_000, 1_500, 0), sender=developer)
    with ape.reverts(models.ContributorsShareBelowFloor, given=0, floor=FLOOR_BPS):
        models.setSplit(registered_model, (8_000, 0, 1_500, 500), sender=developer)
    assert tuple(models.paymentTerms(registered_model)[1]) == SPLIT
    assert pending_split(models, registered_model) == ((0, 0, 0, 0), 0)


def test_set_split_checks_current_governance_parameters(
    models, governance, registered_model, developer
):
    models.setProtocolParameters(800, 2_500, sender=governance)
    # The existing split stays as set ...
    assert tuple(models.paymentTerms(registered_model)[1]) == SPLIT
    # ... but a new one must follow the new parameters.
    with ape.reverts(models.ProtocolShareMismatch, given=PROTOCOL_BPS, required=800):
        models.setSplit(registered_model, SPLIT, sender=developer)
    with ape.reverts(models.ContributorsShareBelowFloor, given=2_000, floor=2_500):
        models.setSplit(registered_model, (5_700, 2_000, 1_500, 800), sender=developer)
    tx = models.setSplit(registered_model, (5_200, 2_500, 1_500, 800), sender=developer)
    assert pending_split(models, registered_model) == (
        (5_200, 2_500, 1_500, 800),
        tx.timestamp + SPLIT_CHANGE_DELAY,
    )


def test_set_split_by_non_developer_reverts(models, registered_model, other):
    with ape.reverts(models.NotModelDeveloper, modelId=registered_model, caller=other.address):
        models.setSplit(registered_model, SPLIT, sender=other)


def test_set_split_retired_reverts(models, registered_model, developer):
    models.setStatus(registered_model, RETIRED, sender=developer)
    with ape.reverts(models.ModelIsRetired, modelId=registered_model):
        models.setSplit(registered_model, SPLIT, sender=developer)


def test_set_split_unknown_model_reverts(models, registered_model, developer):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.setSplit(99, SPLIT, sender=developer)


# setAttributor ---------------------------------------------------------------------------


def test_set_attributor_stores_and_emits(models, registered_model, developer, second_node):
    tx = models.setAttributor(registered_model, second_node, sender=developer)
    assert tx.events == [
        models.AttributorSet(modelId=registered_model, attributor=second_node.address)
    ]
    assert models.attributorOf(registered_model) == second_node.address
    assert models.model(registered_model).attributor == second_node.address


def test_set_attributor_zero_reverts(models, registered_model, developer):
    with ape.reverts(models.ModelZeroAddress):
        models.setAttributor(registered_model, ZERO, sender=developer)


def test_set_attributor_by_non_developer_reverts(models, registered_model, node):
    with ape.reverts(models.NotModelDeveloper, modelId=registered_model, caller=node.address):
        models.setAttributor(registered_model, node, sender=node)


def test_set_attributor_retired_reverts(models, registered_model, developer, second_node):
    models.setStatus(registered_model, RETIRED, sender=developer)
    with ape.reverts(models.ModelIsRetired, modelId=registered_model):
        models.setAttributor(registered_model, second_node, sender=developer)


def test_set_attributor_unknown_model_reverts(models, registered_model, developer, second_node):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.setAttributor(99, second_node, sender=developer)


# views of unknown models -----------------------------------------------------------------


def test_model_unknown_reverts(models, registered_model):
    with ape.reverts(models.UnknownModel, modelId=0):
        models.model(0)


def test_payment_terms_unknown_model_reverts(models, registered_model):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.paymentTerms(99)


def test_attributor_of_unknown_model_reverts(models, registered_model):
    with ape.reverts(models.UnknownModel, modelId=99):
        models.attributorOf(99)


# setProtocolParameters -------------------------------------------------------------------


def test_protocol_parameters_set_at_deployment(models, protocol):
    assert models.protocolBps() == PROTOCOL_BPS
    assert models.contributorsFloorBps() == FLOOR_BPS
    height = ape.chain.blocks.height
    start = protocol.deployment.block
    assert [log.protocolBps for log in models.ProtocolBpsSet.range(start, height + 1)] == [
        PROTOCOL_BPS
    ]
    assert [
        log.contributorsFloorBps for log in models.ContributorsFloorBpsSet.range(start, height + 1)
    ] == [FLOOR_BPS]


def test_set_protocol_parameters_stores_and_emits(models, governance):
    tx = models.setProtocolParameters(300, 2_000, sender=governance)
    assert tx.events == [
        models.ProtocolBpsSet(protocolBps=300),
        models.ContributorsFloorBpsSet(contributorsFloorBps=2_000),
    ]
    assert models.protocolBps() == 300
    assert models.contributorsFloorBps() == 2_000


def test_set_protocol_parameters_sum_10000_succeeds(models, governance):
    models.setProtocolParameters(4_000, 6_000, sender=governance)
    assert (models.protocolBps(), models.contributorsFloorBps()) == (4_000, 6_000)


def test_set_protocol_parameters_sum_above_10000_reverts(models, governance):
    with ape.reverts(models.ProtocolParametersTooHigh, total=10_001):
        models.setProtocolParameters(4_000, 6_001, sender=governance)
    assert models.protocolBps() == PROTOCOL_BPS


def test_set_protocol_parameters_by_non_owner_reverts(models, developer):
    with ape.reverts(models.OwnableUnauthorizedAccount, account=developer.address):
        models.setProtocolParameters(0, 0, sender=developer)
