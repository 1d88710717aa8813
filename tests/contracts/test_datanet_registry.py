"""DatanetRegistry: Datanets, curators, bonded contributions, batch review, versions, withdraw."""

from __future__ import annotations

import ape
import pytest
from ape import chain

from backend.protocol.contracts import project
from backend.protocol.merkle import StandardMerkleTree

OPEN = 10**18
BOND = 10 * OPEN  # OPEN wei per contribution to the main Datanet
MIN_APPROVED = 2
METADATA = "bafkreidatanetmetadata"
MANIFEST = "bafkreimanifest"
ROOT = b"\x11" * 32
ZERO = "0x0000000000000000000000000000000000000000"
LEAF_TYPES = ("uint256", "address", "string")

PENDING, APPROVED, REJECTED, WITHDRAWN = 1, 2, 3, 4  # ContributionStatus
REVIEW_TIMEOUT = 30 * 86_400  # seconds


@pytest.fixture(scope="module")
def datanet_treasury(challenger):
    """Receives the bonds of rejected contributions to the main Datanet."""
    return challenger


@pytest.fixture(scope="module", autouse=True)
def bonded_datanet(datanets, token, curator, contributor, other, datanet_treasury) -> int:
    """Datanet 1, owned by `curator`; `contributor` and `other` approved the registry."""
    datanets.createDatanet(METADATA, BOND, MIN_APPROVED, datanet_treasury, sender=curator)
    token.approve(datanets, 2**256 - 1, sender=contributor)
    token.approve(datanets, 2**256 - 1, sender=other)
    return datanets.datanetCount()


@pytest.fixture
def free_datanet(datanets, bonded_datanet, developer) -> int:
    """Datanet 2, owned by `developer`, free to contribute to (no bond), min 1 approved."""
    datanets.createDatanet("bafkreisecond", 0, 1, developer, sender=developer)
    return datanets.datanetCount()


def contribute(datanets, bonded_datanet: int, account, cids: list[str]) -> list[int]:
    """Contributes `cids` one by one; returns their ids."""
    ids = []
    for cid in cids:
        datanets.contribute(bonded_datanet, cid, 100, sender=account)
        ids.append(datanets.contributionIdOf(bonded_datanet, cid))
    return ids


def publish(datanets, datanet_id: int, curator, rows: list) -> StandardMerkleTree:
    """Publishes the next version of ``datanet_id`` over ``rows`` (its approved count as the
    chain holds it); returns the version's tree, for proofs."""
    tree = StandardMerkleTree.of(rows, LEAF_TYPES)
    approved = datanets.datanet(datanet_id).approvedCount
    datanets.publishVersion(datanet_id, tree.root, MANIFEST, approved, sender=curator)
    return tree


# createDatanet ---------------------------------------------------------------------------


def test_create_datanet_stores_and_emits(datanets, other, datanet_treasury):
    before = datanets.datanetCount()
    tx = datanets.createDatanet("bafkreinew", 7 * OPEN, 3, datanet_treasury, sender=other)
    new_id = before + 1
    assert tx.events == [
        datanets.DatanetCreated(
            datanetId=new_id,
            owner=other.address,
            metadataCID="bafkreinew",
            contributionBond=7 * OPEN,
            minApproved=3,
            treasury=datanet_treasury.address,
        )
    ]
    assert datanets.datanetCount() == new_id
    d = datanets.datanet(new_id)
    assert d.owner == other.address
    assert d.contributionBond == 7 * OPEN
    assert d.treasury == datanet_treasury.address
    assert d.minApproved == 3
    assert d.versionCount == 0
    assert d.approvedCount == 0
    assert d.contributionCount == 0
    assert d.metadataCID == "bafkreinew"
    assert datanets.isCurator(new_id, other) is True


def test_create_datanet_empty_metadata_reverts(datanets, other):
    with ape.reverts(datanets.EmptyCID):
        datanets.createDatanet("", BOND, 1, other, sender=other)


def test_create_datanet_zero_treasury_reverts(datanets, other):
    with ape.reverts(datanets.DatanetZeroAddress):
        datanets.createDatanet(METADATA, BOND, 1, ZERO, sender=other)


def test_create_datanet_when_paused_reverts(datanets, governance, other):
    datanets.pause(sender=governance)
    with ape.reverts(datanets.EnforcedPause):
        datanets.createDatanet(METADATA, BOND, 1, other, sender=other)


def test_datanet_unknown_reverts(datanets, bonded_datanet):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.datanet(99)


def test_constructor_zero_token_reverts(governance):
    with ape.reverts(project().DatanetRegistry.DatanetZeroAddress):
        governance.deploy(project().DatanetRegistry, ZERO, governance)


# curators --------------------------------------------------------------------------------


def test_add_curator_by_owner_emits_and_grants(datanets, bonded_datanet, curator, developer):
    assert datanets.isCurator(bonded_datanet, developer) is False
    tx = datanets.addCurator(bonded_datanet, developer, sender=curator)
    assert tx.events == [datanets.CuratorAdded(datanetId=bonded_datanet, curator=developer.address)]
    assert datanets.isCurator(bonded_datanet, developer) is True


def test_add_curator_by_non_owner_reverts(datanets, bonded_datanet, governance, developer):
    # Not even governance manages a Datanet's curators.
    with ape.reverts(datanets.NotDatanetOwner, datanetId=bonded_datanet, caller=governance.address):
        datanets.addCurator(bonded_datanet, developer, sender=governance)


def test_add_curator_zero_address_reverts(datanets, bonded_datanet, curator):
    with ape.reverts(datanets.DatanetZeroAddress):
        datanets.addCurator(bonded_datanet, ZERO, sender=curator)


def test_add_curator_unknown_datanet_reverts(datanets, bonded_datanet, curator, developer):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.addCurator(99, developer, sender=curator)


def test_remove_curator_by_owner_emits_and_revokes(
    datanets, bonded_datanet, curator, developer, contributor
):
    datanets.addCurator(bonded_datanet, developer, sender=curator)
    tx = datanets.removeCurator(bonded_datanet, developer, sender=curator)
    assert tx.events == [
        datanets.CuratorRemoved(datanetId=bonded_datanet, curator=developer.address)
    ]
    assert datanets.isCurator(bonded_datanet, developer) is False
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    with ape.reverts(datanets.NotCurator, datanetId=bonded_datanet, caller=developer.address):
        datanets.review(bonded_datanet, [cid_id], [True], sender=developer)


def test_remove_curator_by_non_owner_reverts(datanets, bonded_datanet, curator, developer):
    datanets.addCurator(bonded_datanet, developer, sender=curator)
    with ape.reverts(datanets.NotDatanetOwner, datanetId=bonded_datanet, caller=developer.address):
        datanets.removeCurator(bonded_datanet, developer, sender=developer)
    assert datanets.isCurator(bonded_datanet, developer) is True


def test_remove_curator_unknown_datanet_reverts(datanets, bonded_datanet, curator, developer):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.removeCurator(99, developer, sender=curator)


def test_owner_stays_curator_after_removing_itself(datanets, bonded_datanet, curator):
    datanets.removeCurator(bonded_datanet, curator, sender=curator)
    assert datanets.isCurator(bonded_datanet, curator) is True


# contribute ------------------------------------------------------------------------------


def test_contribute_takes_bond_and_emits(datanets, token, bonded_datanet, contributor):
    balance = token.balanceOf(contributor)
    held = token.balanceOf(datanets)
    count = datanets.contributionCount()
    tx = datanets.contribute(bonded_datanet, "bafkreia", 1234, sender=contributor)
    new_id = count + 1
    assert tx.events.filter(datanets.Contributed) == [
        datanets.Contributed(
            datanetId=bonded_datanet,
            contributionId=new_id,
            contributor=contributor.address,
            cid="bafkreia",
            size=1234,
            bond=BOND,
        )
    ]
    assert token.balanceOf(contributor) == balance - BOND
    assert token.balanceOf(datanets) == held + BOND
    assert datanets.contributionCount() == new_id
    assert datanets.contributionIdOf(bonded_datanet, "bafkreia") == new_id
    assert datanets.datanet(bonded_datanet).contributionCount == 1
    c = datanets.contribution(new_id)
    assert c.contributor == contributor.address
    assert c.bond == BOND
    assert c.datanetId == bonded_datanet
    assert c.size == 1234
    assert c.createdAt == chain.blocks.head.timestamp
    assert c.status == PENDING


def test_contribute_free_datanet_moves_no_tokens(datanets, token, free_datanet, contributor):
    balance = token.balanceOf(contributor)
    tx = datanets.contribute(free_datanet, "bafkreia", 1, sender=contributor)
    assert tx.events.filter(token.Transfer) == []
    assert token.balanceOf(contributor) == balance
    assert datanets.contribution(datanets.contributionCount()).bond == 0


def test_contribute_duplicate_cid_reverts(datanets, bonded_datanet, contributor, other):
    [first] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    with ape.reverts(
        datanets.DuplicateContribution,
        datanetId=bonded_datanet,
        cid="bafkreia",
        contributionId=first,
    ):
        datanets.contribute(bonded_datanet, "bafkreia", 100, sender=other)


def test_contribute_duplicate_of_an_approved_cid_reverts(
    datanets, bonded_datanet, curator, contributor, other
):
    [first] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [first], [True], sender=curator)
    with ape.reverts(datanets.DuplicateContribution, contributionId=first):
        datanets.contribute(bonded_datanet, "bafkreia", 100, sender=other)


def test_rejected_squat_frees_the_cid_for_its_author(
    datanets, token, bonded_datanet, curator, contributor, other, datanet_treasury
):
    """Issue 13, point 4: a front-runner registered the author's CID first; once curators
    rejected the squat the author could never contribute the file."""
    [squat] = contribute(datanets, bonded_datanet, other, ["bafkreiauthor"])
    datanets.review(bonded_datanet, [squat], [False], sender=curator)
    [authored] = contribute(datanets, bonded_datanet, contributor, ["bafkreiauthor"])
    assert authored == squat + 1
    assert datanets.contributionIdOf(bonded_datanet, "bafkreiauthor") == authored
    assert datanets.contribution(authored).contributor == contributor.address
    assert datanets.contribution(squat).status == REJECTED
    assert datanets.withdrawable(datanet_treasury) == BOND  # the squatter paid for it
    datanets.review(bonded_datanet, [authored], [True], sender=curator)
    assert datanets.datanet(bonded_datanet).approvedCount == 1


def test_contribute_batch_over_a_rejected_cid_succeeds(
    datanets, bonded_datanet, curator, contributor, other
):
    [squat] = contribute(datanets, bonded_datanet, other, ["bafkreia"])
    datanets.review(bonded_datanet, [squat], [False], sender=curator)
    datanets.contributeBatch(bonded_datanet, ["bafkreia", "bafkreib"], [1, 2], sender=contributor)
    assert datanets.contributionIdOf(bonded_datanet, "bafkreia") == squat + 1


def test_contribute_same_cid_in_another_datanet_succeeds(
    datanets, bonded_datanet, free_datanet, contributor
):
    [first] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    [second] = contribute(datanets, free_datanet, contributor, ["bafkreia"])
    assert second == first + 1
    assert datanets.contributionIdOf(bonded_datanet, "bafkreia") == first
    assert datanets.contributionIdOf(free_datanet, "bafkreia") == second
    assert datanets.contribution(second).datanetId == free_datanet


def test_contribute_empty_cid_reverts(datanets, bonded_datanet, contributor):
    with ape.reverts(datanets.EmptyCID):
        datanets.contribute(bonded_datanet, "", 100, sender=contributor)


def test_contribute_unknown_datanet_reverts(datanets, bonded_datanet, contributor):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.contribute(99, "bafkreia", 100, sender=contributor)


def test_contribute_without_allowance_reverts(datanets, token, bonded_datanet, payer):
    with ape.reverts(
        token.ERC20InsufficientAllowance, spender=datanets.address, allowance=0, needed=BOND
    ):
        datanets.contribute(bonded_datanet, "bafkreia", 100, sender=payer)


def test_contribute_when_paused_reverts(datanets, governance, bonded_datanet, contributor):
    datanets.pause(sender=governance)
    with ape.reverts(datanets.EnforcedPause):
        datanets.contribute(bonded_datanet, "bafkreia", 100, sender=contributor)


def test_contribution_unknown_reverts(datanets, bonded_datanet):
    with ape.reverts(datanets.UnknownContribution, contributionId=99):
        datanets.contribution(99)


def test_contribution_id_of_unknown_cid_is_zero(datanets, bonded_datanet):
    assert datanets.contributionIdOf(bonded_datanet, "bafkreinothere") == 0


# contributeBatch -------------------------------------------------------------------------


def test_contribute_batch_registers_consecutive_ids_with_one_transfer(
    datanets, token, bonded_datanet, contributor
):
    cids = ["bafkreia", "bafkreib", "bafkreic"]
    balance = token.balanceOf(contributor)
    first = datanets.contributionCount() + 1
    tx = datanets.contributeBatch(bonded_datanet, cids, [1, 2, 3], sender=contributor)
    assert tx.events.filter(datanets.Contributed) == [
        datanets.Contributed(
            datanetId=bonded_datanet,
            contributionId=first + i,
            contributor=contributor.address,
            cid=cid,
            size=i + 1,
            bond=BOND,
        )
        for i, cid in enumerate(cids)
    ]
    assert tx.events.filter(token.Transfer) == [
        token.Transfer(contributor.address, datanets.address, 3 * BOND)
    ]
    assert token.balanceOf(contributor) == balance - 3 * BOND
    assert datanets.contributionCount() == first + 2
    assert datanets.datanet(bonded_datanet).contributionCount == 3
    assert [datanets.contributionIdOf(bonded_datanet, cid) for cid in cids] == [
        first,
        first + 1,
        first + 2,
    ]
    assert [datanets.contribution(first + i).size for i in range(3)] == [1, 2, 3]


def test_contribute_batch_duplicate_inside_batch_reverts(datanets, bonded_datanet, contributor):
    first = datanets.contributionCount() + 1
    with ape.reverts(
        datanets.DuplicateContribution,
        datanetId=bonded_datanet,
        cid="bafkreia",
        contributionId=first,
    ):
        datanets.contributeBatch(
            bonded_datanet, ["bafkreia", "bafkreib", "bafkreia"], [1, 2, 3], sender=contributor
        )
    assert datanets.contributionCount() == first - 1


def test_contribute_batch_duplicate_of_earlier_contribution_reverts(
    datanets, bonded_datanet, contributor
):
    [earlier] = contribute(datanets, bonded_datanet, contributor, ["bafkreib"])
    with ape.reverts(
        datanets.DuplicateContribution,
        datanetId=bonded_datanet,
        cid="bafkreib",
        contributionId=earlier,
    ):
        datanets.contributeBatch(
            bonded_datanet, ["bafkreia", "bafkreib"], [1, 2], sender=contributor
        )


def test_contribute_batch_same_cids_in_another_datanet_succeed(
    datanets, bonded_datanet, free_datanet, contributor
):
    datanets.contributeBatch(bonded_datanet, ["bafkreia", "bafkreib"], [1, 2], sender=contributor)
    datanets.contributeBatch(free_datanet, ["bafkreia", "bafkreib"], [1, 2], sender=contributor)
    assert datanets.datanet(free_datanet).contributionCount == 2
    assert datanets.contributionIdOf(free_datanet, "bafkreib") == datanets.contributionCount()


def test_contribute_batch_empty_reverts(datanets, bonded_datanet, contributor):
    with ape.reverts(datanets.EmptyBatch):
        datanets.contributeBatch(bonded_datanet, [], [], sender=contributor)


def test_contribute_batch_length_mismatch_reverts(datanets, bonded_datanet, contributor):
    with ape.reverts(datanets.LengthMismatch, a=2, b=1):
        datanets.contributeBatch(bonded_datanet, ["bafkreia", "bafkreib"], [1], sender=contributor)


def test_contribute_batch_empty_cid_reverts(datanets, bonded_datanet, contributor):
    with ape.reverts(datanets.EmptyCID):
        datanets.contributeBatch(bonded_datanet, ["bafkreia", ""], [1, 2], sender=contributor)


def test_contribute_batch_unknown_datanet_reverts(datanets, bonded_datanet, contributor):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.contributeBatch(99, ["bafkreia"], [1], sender=contributor)


def test_contribute_batch_when_paused_reverts(datanets, governance, bonded_datanet, contributor):
    datanets.pause(sender=governance)
    with ape.reverts(datanets.EnforcedPause):
        datanets.contributeBatch(bonded_datanet, ["bafkreia"], [1], sender=contributor)


# review ----------------------------------------------------------------------------------


def test_review_batch_approves_and_rejects(
    datanets, bonded_datanet, curator, contributor, other, datanet_treasury
):
    ids = contribute(datanets, bonded_datanet, contributor, ["bafkreia", "bafkreib"])
    ids += contribute(datanets, bonded_datanet, other, ["bafkreic"])
    tx = datanets.review(bonded_datanet, ids, [True, False, True], sender=curator)
    assert tx.events == [
        datanets.Reviewed(
            datanetId=bonded_datanet, contributionId=cid_id, curator=curator.address, approved=ok
        )
        for cid_id, ok in zip(ids, [True, False, True], strict=True)
    ]
    assert [datanets.contribution(i).status for i in ids] == [APPROVED, REJECTED, APPROVED]
    assert [datanets.contribution(i).bond for i in ids] == [0, 0, 0]
    # Approval refunds the bond to the contributor, rejection credits the Datanet's treasury.
    assert datanets.withdrawable(contributor) == BOND
    assert datanets.withdrawable(other) == BOND
    assert datanets.withdrawable(datanet_treasury) == BOND
    assert datanets.datanet(bonded_datanet).approvedCount == 2


def test_review_by_added_curator_succeeds(
    datanets, bonded_datanet, curator, developer, contributor
):
    datanets.addCurator(bonded_datanet, developer, sender=curator)
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    tx = datanets.review(bonded_datanet, [cid_id], [False], sender=developer)
    assert tx.events == [
        datanets.Reviewed(
            datanetId=bonded_datanet,
            contributionId=cid_id,
            curator=developer.address,
            approved=False,
        )
    ]
    assert datanets.datanet(bonded_datanet).approvedCount == 0


def test_review_by_non_curator_reverts(datanets, bonded_datanet, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    with ape.reverts(datanets.NotCurator, datanetId=bonded_datanet, caller=contributor.address):
        datanets.review(bonded_datanet, [cid_id], [True], sender=contributor)


def test_review_already_reviewed_reverts_not_pending(
    datanets, bonded_datanet, curator, contributor
):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [cid_id], [True], sender=curator)
    with ape.reverts(datanets.ContributionNotPending, contributionId=cid_id, status=APPROVED):
        datanets.review(bonded_datanet, [cid_id], [False], sender=curator)
    assert datanets.withdrawable(contributor) == BOND


def test_review_rejected_reverts_not_pending(datanets, bonded_datanet, curator, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [cid_id], [False], sender=curator)
    with ape.reverts(datanets.ContributionNotPending, contributionId=cid_id, status=REJECTED):
        datanets.review(bonded_datanet, [cid_id], [True], sender=curator)


def test_review_same_id_twice_in_batch_reverts_not_pending(
    datanets, bonded_datanet, curator, contributor
):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    with ape.reverts(datanets.ContributionNotPending, contributionId=cid_id, status=APPROVED):
        datanets.review(bonded_datanet, [cid_id, cid_id], [True, True], sender=curator)


def test_review_unknown_contribution_reverts(datanets, bonded_datanet, curator):
    with ape.reverts(datanets.UnknownContribution, contributionId=99):
        datanets.review(bonded_datanet, [99], [True], sender=curator)


def test_review_contribution_of_other_datanet_reverts(
    datanets, bonded_datanet, free_datanet, curator, contributor
):
    [cid_id] = contribute(datanets, free_datanet, contributor, ["bafkreia"])
    with ape.reverts(
        datanets.ContributionNotInDatanet,
        contributionId=cid_id,
        datanetId=bonded_datanet,
        actualDatanetId=free_datanet,
    ):
        datanets.review(bonded_datanet, [cid_id], [True], sender=curator)


def test_review_empty_batch_reverts(datanets, bonded_datanet, curator):
    with ape.reverts(datanets.EmptyBatch):
        datanets.review(bonded_datanet, [], [], sender=curator)


def test_review_length_mismatch_reverts(datanets, bonded_datanet, curator, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    with ape.reverts(datanets.LengthMismatch, a=1, b=2):
        datanets.review(bonded_datanet, [cid_id], [True, False], sender=curator)


def test_review_unknown_datanet_reverts(datanets, bonded_datanet, curator):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.review(99, [1], [True], sender=curator)


# publishVersion and isInVersion ----------------------------------------------------------


@pytest.fixture
def approved_rows(
    datanets, bonded_datanet, curator, contributor, other
) -> list[tuple[int, str, str]]:
    """Three approved contributions of Datanet 1 as Merkle rows (id, contributor, cid)."""
    rows = [
        (1, contributor.address, "bafkreia"),
        (2, other.address, "bafkreib"),
        (3, contributor.address, "bafkreic"),
    ]
    for (cid_id, _, cid), account in zip(rows, [contributor, other, contributor], strict=True):
        datanets.contribute(bonded_datanet, cid, 10, sender=account)
        assert datanets.contributionIdOf(bonded_datanet, cid) == cid_id
    datanets.review(bonded_datanet, [1, 2, 3], [True, True, True], sender=curator)
    return rows


def test_publish_version_stores_and_emits(datanets, bonded_datanet, curator, approved_rows):
    tree = StandardMerkleTree.of(approved_rows, LEAF_TYPES)
    tx = datanets.publishVersion(bonded_datanet, tree.root, MANIFEST, 3, sender=curator)
    assert tx.events == [
        datanets.VersionPublished(
            datanetId=bonded_datanet,
            version=1,
            merkleRoot=tree.root,
            contributionCount=3,
            manifestCID=MANIFEST,
        )
    ]
    v = datanets.version(bonded_datanet, 1)
    assert bytes(v.merkleRoot) == tree.root
    assert v.contributionCount == 3
    assert v.publishedAt == chain.blocks.head.timestamp
    assert v.manifestCID == MANIFEST
    assert datanets.datanet(bonded_datanet).versionCount == 1


def test_publish_version_below_min_approved_reverts(datanets, bonded_datanet, curator, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [cid_id], [True], sender=curator)
    with ape.reverts(
        datanets.NotEnoughApproved,
        datanetId=bonded_datanet,
        approved=1,
        minApproved=MIN_APPROVED,
    ):
        datanets.publishVersion(
            bonded_datanet,
            ROOT,
            MANIFEST,
            datanets.datanet(bonded_datanet).approvedCount,
            sender=curator,
        )


def test_publish_version_nothing_approved_reverts_even_without_minimum(
    datanets, no_minimum_datanet, developer
):
    with ape.reverts(
        datanets.NotEnoughApproved, datanetId=no_minimum_datanet, approved=0, minApproved=0
    ):
        datanets.publishVersion(
            no_minimum_datanet,
            ROOT,
            MANIFEST,
            datanets.datanet(no_minimum_datanet).approvedCount,
            sender=developer,
        )


@pytest.fixture
def no_minimum_datanet(datanets, developer) -> int:
    """A Datanet with no minimum of approved contributions."""
    datanets.createDatanet("bafkreinomin", 0, 0, developer, sender=developer)
    return datanets.datanetCount()


def test_publish_version_without_change_reverts(datanets, bonded_datanet, curator, approved_rows):
    datanets.publishVersion(
        bonded_datanet,
        ROOT,
        MANIFEST,
        datanets.datanet(bonded_datanet).approvedCount,
        sender=curator,
    )
    with ape.reverts(datanets.NoChangeSinceVersion, datanetId=bonded_datanet, version=1):
        datanets.publishVersion(
            bonded_datanet,
            b"\x22" * 32,
            "bafkreimanifest2",
            datanets.datanet(bonded_datanet).approvedCount,
            sender=curator,
        )


def test_publish_version_after_only_rejections_reverts(
    datanets, bonded_datanet, curator, contributor, approved_rows
):
    datanets.publishVersion(
        bonded_datanet,
        ROOT,
        MANIFEST,
        datanets.datanet(bonded_datanet).approvedCount,
        sender=curator,
    )
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreid"])
    datanets.review(bonded_datanet, [cid_id], [False], sender=curator)
    with ape.reverts(datanets.NoChangeSinceVersion, datanetId=bonded_datanet, version=1):
        datanets.publishVersion(
            bonded_datanet,
            b"\x22" * 32,
            "bafkreimanifest2",
            datanets.datanet(bonded_datanet).approvedCount,
            sender=curator,
        )


def test_publish_version_over_a_stale_approved_count_reverts(
    datanets, bonded_datanet, curator, contributor, approved_rows
):
    built_over = datanets.datanet(bonded_datanet).approvedCount  # the curator builds the root
    [late] = contribute(datanets, bonded_datanet, contributor, ["bafkreilate"])
    datanets.review(bonded_datanet, [late], [True], sender=curator)  # lands before publishing
    with ape.reverts(
        datanets.ApprovedCountChanged,
        datanetId=bonded_datanet,
        expected=built_over,
        approved=built_over + 1,
    ):
        datanets.publishVersion(bonded_datanet, ROOT, MANIFEST, built_over, sender=curator)
    assert datanets.datanet(bonded_datanet).versionCount == 0


def test_publish_version_zero_root_reverts(datanets, bonded_datanet, curator, approved_rows):
    with ape.reverts(datanets.ZeroMerkleRoot):
        datanets.publishVersion(
            bonded_datanet,
            b"\x00" * 32,
            MANIFEST,
            datanets.datanet(bonded_datanet).approvedCount,
            sender=curator,
        )


def test_publish_version_empty_manifest_reverts(datanets, bonded_datanet, curator, approved_rows):
    with ape.reverts(datanets.EmptyCID):
        datanets.publishVersion(
            bonded_datanet, ROOT, "", datanets.datanet(bonded_datanet).approvedCount, sender=curator
        )


def test_publish_version_by_non_curator_reverts(datanets, bonded_datanet, other, approved_rows):
    with ape.reverts(datanets.NotCurator, datanetId=bonded_datanet, caller=other.address):
        datanets.publishVersion(
            bonded_datanet,
            ROOT,
            MANIFEST,
            datanets.datanet(bonded_datanet).approvedCount,
            sender=other,
        )


def test_publish_version_by_added_curator_succeeds(
    datanets, bonded_datanet, curator, developer, approved_rows
):
    datanets.addCurator(bonded_datanet, developer, sender=curator)
    datanets.publishVersion(
        bonded_datanet,
        ROOT,
        MANIFEST,
        datanets.datanet(bonded_datanet).approvedCount,
        sender=developer,
    )
    assert datanets.datanet(bonded_datanet).versionCount == 1


def test_publish_version_unknown_datanet_reverts(datanets, bonded_datanet, curator):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.publishVersion(99, ROOT, MANIFEST, 1, sender=curator)


def test_published_version_is_immutable(
    datanets, bonded_datanet, curator, contributor, approved_rows
):
    datanets.publishVersion(
        bonded_datanet,
        ROOT,
        MANIFEST,
        datanets.datanet(bonded_datanet).approvedCount,
        sender=curator,
    )
    first = datanets.version(bonded_datanet, 1)
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreid"])
    datanets.review(bonded_datanet, [cid_id], [True], sender=curator)
    tx = datanets.publishVersion(
        bonded_datanet,
        b"\x22" * 32,
        "bafkreimanifest2",
        datanets.datanet(bonded_datanet).approvedCount,
        sender=curator,
    )
    assert tx.events == [
        datanets.VersionPublished(
            datanetId=bonded_datanet,
            version=2,
            merkleRoot=b"\x22" * 32,
            contributionCount=4,
            manifestCID="bafkreimanifest2",
        )
    ]
    assert datanets.version(bonded_datanet, 1) == first
    assert bytes(datanets.version(bonded_datanet, 1).merkleRoot) == ROOT
    assert datanets.version(bonded_datanet, 1).contributionCount == 3
    assert datanets.version(bonded_datanet, 2).contributionCount == 4


def test_version_unknown_reverts(datanets, bonded_datanet, curator, approved_rows):
    datanets.publishVersion(
        bonded_datanet,
        ROOT,
        MANIFEST,
        datanets.datanet(bonded_datanet).approvedCount,
        sender=curator,
    )
    with ape.reverts(datanets.UnknownVersion, datanetId=bonded_datanet, version=2):
        datanets.version(bonded_datanet, 2)
    with ape.reverts(datanets.UnknownVersion, datanetId=bonded_datanet, version=0):
        datanets.version(bonded_datanet, 0)


def test_version_of_unknown_datanet_reverts(datanets, bonded_datanet):
    with ape.reverts(datanets.UnknownDatanet, datanetId=99):
        datanets.version(99, 1)


def test_is_in_version_true_for_every_proven_contribution(
    datanets, bonded_datanet, curator, approved_rows
):
    tree = publish(datanets, bonded_datanet, curator, approved_rows)
    for i, (cid_id, _, cid) in enumerate(approved_rows):
        assert datanets.isInVersion(bonded_datanet, 1, cid_id, cid, tree.proof(i)) is True


def test_is_in_version_is_false_for_a_rejected_contribution_in_the_root(
    datanets, bonded_datanet, curator, contributor, approved_rows
):
    """Issue 13, point 3: a curator's root that also holds a rejected contribution used to make
    isInVersion confirm it as "in the version"; only Approved contributions are."""
    datanets.contribute(bonded_datanet, "bafkreid", 10, sender=contributor)
    datanets.review(bonded_datanet, [4], [False], sender=curator)
    rows = [*approved_rows, (4, contributor.address, "bafkreid")]
    tree = StandardMerkleTree.of(rows, LEAF_TYPES)
    approved = datanets.datanet(bonded_datanet).approvedCount
    datanets.publishVersion(bonded_datanet, tree.root, MANIFEST, approved, sender=curator)
    assert datanets.isInVersion(bonded_datanet, 1, 1, "bafkreia", tree.proof(0)) is True
    assert datanets.isInVersion(bonded_datanet, 1, 4, "bafkreid", tree.proof(3)) is False


def test_is_in_version_wrong_cid_is_false(datanets, bonded_datanet, curator, approved_rows):
    tree = publish(datanets, bonded_datanet, curator, approved_rows)
    # Another registered CID, and one that is not registered at all.
    assert datanets.isInVersion(bonded_datanet, 1, 1, "bafkreib", tree.proof(0)) is False
    assert datanets.isInVersion(bonded_datanet, 1, 1, "bafkreizzz", tree.proof(0)) is False


def test_is_in_version_wrong_id_is_false(datanets, bonded_datanet, curator, approved_rows):
    tree = publish(datanets, bonded_datanet, curator, approved_rows)
    assert datanets.isInVersion(bonded_datanet, 1, 2, "bafkreia", tree.proof(0)) is False
    assert datanets.isInVersion(bonded_datanet, 1, 99, "bafkreia", tree.proof(0)) is False


def test_is_in_version_wrong_proof_is_false(datanets, bonded_datanet, curator, approved_rows):
    tree = publish(datanets, bonded_datanet, curator, approved_rows)
    assert datanets.isInVersion(bonded_datanet, 1, 1, "bafkreia", tree.proof(1)) is False
    assert datanets.isInVersion(bonded_datanet, 1, 1, "bafkreia", []) is False


def test_is_in_version_later_contribution_is_false(
    datanets, bonded_datanet, curator, contributor, approved_rows
):
    publish(datanets, bonded_datanet, curator, approved_rows)
    [later] = contribute(datanets, bonded_datanet, contributor, ["bafkreid"])
    datanets.review(bonded_datanet, [later], [True], sender=curator)
    rows = [*approved_rows, (later, contributor.address, "bafkreid")]
    tree2 = StandardMerkleTree.of(rows, LEAF_TYPES)
    datanets.publishVersion(
        bonded_datanet,
        tree2.root,
        "bafkreimanifest2",
        datanets.datanet(bonded_datanet).approvedCount,
        sender=curator,
    )
    assert datanets.isInVersion(bonded_datanet, 2, later, "bafkreid", tree2.proof(3)) is True
    assert datanets.isInVersion(bonded_datanet, 1, later, "bafkreid", tree2.proof(3)) is False


def test_is_in_version_unknown_version_reverts(datanets, bonded_datanet, approved_rows):
    with ape.reverts(datanets.UnknownVersion, datanetId=bonded_datanet, version=1):
        datanets.isInVersion(bonded_datanet, 1, 1, "bafkreia", [])


# withdraw --------------------------------------------------------------------------------


# withdrawContribution (issue 13, point 4) ------------------------------------------------


def test_unreviewed_contribution_withdrawn_after_the_timeout(
    datanets, token, bonded_datanet, contributor, other
):
    """Issue 13, point 4: a contribution nobody reviewed used to lock its bond forever."""
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    created = datanets.contribution(cid_id).createdAt
    chain.pending_timestamp = created + REVIEW_TIMEOUT
    tx = datanets.withdrawContribution(cid_id, sender=contributor)
    assert tx.events == [
        datanets.ContributionWithdrawn(
            datanetId=bonded_datanet, contributionId=cid_id, contributor=contributor.address,
            bond=BOND,
        )
    ]  # fmt: skip
    c = datanets.contribution(cid_id)
    assert (c.status, c.bond) == (WITHDRAWN, 0)
    assert datanets.withdrawable(contributor) == BOND
    before = token.balanceOf(contributor)
    datanets.withdraw(sender=contributor)
    assert token.balanceOf(contributor) == before + BOND
    # The CID is free again, and the withdrawn contribution can no longer be reviewed.
    [again] = contribute(datanets, bonded_datanet, other, ["bafkreia"])
    assert again == cid_id + 1


def test_withdraw_contribution_before_the_timeout_reverts(datanets, bonded_datanet, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    deadline = datanets.contribution(cid_id).createdAt + REVIEW_TIMEOUT
    chain.pending_timestamp = deadline - 1
    with ape.reverts(
        datanets.ReviewTimeoutNotReached, contributionId=cid_id, reviewDeadline=deadline
    ):
        datanets.withdrawContribution(cid_id, sender=contributor)
    assert datanets.contribution(cid_id).status == PENDING


def test_withdraw_contribution_by_another_account_reverts(
    datanets, bonded_datanet, contributor, other
):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    chain.pending_timestamp += REVIEW_TIMEOUT
    with ape.reverts(datanets.NotContributor, contributionId=cid_id, caller=other.address):
        datanets.withdrawContribution(cid_id, sender=other)


def test_withdraw_reviewed_contribution_reverts(datanets, bonded_datanet, curator, contributor):
    ids = contribute(datanets, bonded_datanet, contributor, ["bafkreia", "bafkreib"])
    datanets.review(bonded_datanet, ids, [True, False], sender=curator)
    chain.pending_timestamp += REVIEW_TIMEOUT
    for cid_id, status in zip(ids, (APPROVED, REJECTED), strict=True):
        with ape.reverts(datanets.ContributionNotPending, contributionId=cid_id, status=status):
            datanets.withdrawContribution(cid_id, sender=contributor)
    assert datanets.withdrawable(contributor) == BOND  # the approved bond only


def test_withdraw_contribution_twice_reverts(datanets, bonded_datanet, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    chain.pending_timestamp += REVIEW_TIMEOUT
    datanets.withdrawContribution(cid_id, sender=contributor)
    with ape.reverts(datanets.ContributionNotPending, contributionId=cid_id, status=WITHDRAWN):
        datanets.withdrawContribution(cid_id, sender=contributor)
    assert datanets.withdrawable(contributor) == BOND


def test_review_after_withdrawal_reverts(datanets, bonded_datanet, curator, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    chain.pending_timestamp += REVIEW_TIMEOUT
    datanets.withdrawContribution(cid_id, sender=contributor)
    with ape.reverts(datanets.ContributionNotPending, contributionId=cid_id, status=WITHDRAWN):
        datanets.review(bonded_datanet, [cid_id], [True], sender=curator)


def test_withdraw_unknown_contribution_reverts(datanets, contributor):
    with ape.reverts(datanets.UnknownContribution, contributionId=999):
        datanets.withdrawContribution(999, sender=contributor)


def test_withdraw_contribution_works_while_paused(
    datanets, governance, bonded_datanet, contributor
):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.pause(sender=governance)
    chain.pending_timestamp += REVIEW_TIMEOUT
    datanets.withdrawContribution(cid_id, sender=contributor)
    assert datanets.contribution(cid_id).status == WITHDRAWN


def test_withdraw_pays_refunded_bonds(datanets, token, bonded_datanet, curator, contributor):
    ids = contribute(datanets, bonded_datanet, contributor, ["bafkreia", "bafkreib"])
    datanets.review(bonded_datanet, ids, [True, True], sender=curator)
    balance = token.balanceOf(contributor)
    tx = datanets.withdraw(sender=contributor)
    assert tx.events.filter(datanets.Withdrawn) == [
        datanets.Withdrawn(account=contributor.address, amount=2 * BOND)
    ]
    assert tx.events.filter(token.Transfer) == [
        token.Transfer(datanets.address, contributor.address, 2 * BOND)
    ]
    assert token.balanceOf(contributor) == balance + 2 * BOND
    assert datanets.withdrawable(contributor) == 0


def test_withdraw_pays_treasury_rejected_bonds(
    datanets, token, bonded_datanet, curator, contributor, datanet_treasury
):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [cid_id], [False], sender=curator)
    balance = token.balanceOf(datanet_treasury)
    datanets.withdraw(sender=datanet_treasury)
    assert token.balanceOf(datanet_treasury) == balance + BOND
    assert datanets.withdrawable(contributor) == 0


def test_withdraw_nothing_reverts(datanets, contributor):
    with ape.reverts(datanets.NothingToWithdraw, account=contributor.address):
        datanets.withdraw(sender=contributor)


def test_withdraw_twice_reverts(datanets, bonded_datanet, curator, contributor):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [cid_id], [True], sender=curator)
    datanets.withdraw(sender=contributor)
    with ape.reverts(datanets.NothingToWithdraw, account=contributor.address):
        datanets.withdraw(sender=contributor)


def test_withdraw_when_paused_succeeds(
    datanets, token, governance, bonded_datanet, curator, contributor
):
    [cid_id] = contribute(datanets, bonded_datanet, contributor, ["bafkreia"])
    datanets.review(bonded_datanet, [cid_id], [True], sender=curator)
    datanets.pause(sender=governance)
    balance = token.balanceOf(contributor)
    datanets.withdraw(sender=contributor)
    assert token.balanceOf(contributor) == balance + BOND
