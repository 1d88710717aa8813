"""Datanet and model commands."""

from __future__ import annotations

import click

from backend.cli.params import (
    ADDRESS,
    BPS,
    BYTES32,
    CID,
    ID,
    IDS,
    UINT64,
    UINT96_AMOUNT,
    unique_ids,
)
from backend.cli.registry import command
from backend.protocol.amounts import format_open
from backend.sdk import OpenLedger

ZERO_BYTES32 = b"\x00" * 32
IdGroups = tuple[list[int], ...]  # a repeatable --approve/--reject of comma-separated ids


def nonzero_root(root: bytes, hint: str) -> bytes:
    if root == ZERO_BYTES32:
        raise click.BadParameter("the Merkle root is zero", param_hint=hint)
    return root


@command("create-datanet", "Create a Datanet")
@click.argument("metadata_cid", type=CID)
@click.option("--bond", type=UINT96_AMOUNT, default="0", help="OPEN taken per contribution.")
@click.option(
    "--min-approved",
    type=UINT64,
    default=1,
    show_default=True,
    help="Approved contributions needed before the first version.",
)
@click.option("--treasury", type=ADDRESS, help="Receives rejected bonds [default: the sender].")
def create_datanet(
    ol: OpenLedger, metadata_cid: str, bond: int, min_approved: int, treasury: str | None
) -> None:
    """Create a Datanet described by METADATA_CID; the sender owns it."""
    log = ol.create_datanet(metadata_cid, bond, min_approved, treasury)
    click.echo(
        f"datanet {log.datanetId}: bond {format_open(log.contributionBond)}, "
        f"min approved {log.minApproved}, treasury {log.treasury}"
    )


@command("add-curator", "Let an account review and publish a Datanet")
@click.argument("datanet_id", type=ID)
@click.argument("curator", type=ADDRESS)
def add_curator(ol: OpenLedger, datanet_id: int, curator: str) -> None:
    """Make CURATOR a curator of DATANET_ID (the sender must own it)."""
    ol.add_curator(datanet_id, curator)


@command("contribute", "Register a file (by CID) in a Datanet")
@click.argument("datanet_id", type=ID)
@click.argument("cid", type=CID)
@click.argument("size", type=UINT64)
def contribute(ol: OpenLedger, datanet_id: int, cid: str, size: int) -> None:
    """Contribute CID (SIZE bytes) to DATANET_ID, paying its bond (approved first)."""
    log = ol.contribute(datanet_id, cid, size)
    click.echo(f"contribution {log.contributionId}: {size} bytes, bond {format_open(log.bond)}")


@command("withdraw-contribution", "Take back a contribution nobody reviewed in 30 days")
@click.argument("contribution_id", type=ID)
def withdraw_contribution(ol: OpenLedger, contribution_id: int) -> None:
    """Withdraw CONTRIBUTION_ID, left pending past the review timeout: its bond is credited
    back (then `withdraw datanet`) and its CID released."""
    log = ol.withdraw_contribution(contribution_id)
    click.echo(f"bond {format_open(log.bond)} credited: withdraw it with `withdraw datanet`")


@command("review", "Approve or reject pending contributions")
@click.argument("datanet_id", type=ID)
@click.option("--approve", "approved", type=IDS, multiple=True, help="Contribution ids: 1,2,3.")
@click.option("--reject", "rejected", type=IDS, multiple=True, help="Contribution ids: 4,5.")
def review(ol: OpenLedger, datanet_id: int, approved: IdGroups, rejected: IdGroups) -> None:
    """Approve (bond refunded) or reject (bond to the treasury) contributions of DATANET_ID."""
    approve, reject = unique_ids(approved), unique_ids(rejected)
    if not approve and not reject:
        raise click.UsageError("nothing to review: give --approve and/or --reject ids")
    if both := sorted(set(approve) & set(reject)):
        raise click.UsageError(f"contributions {both} are both approved and rejected")
    ol.review(datanet_id, approve, reject)


@command("publish-version", "Publish a Datanet version")
@click.argument("datanet_id", type=ID)
@click.argument("merkle_root", type=BYTES32)
@click.argument("manifest_cid", type=CID)
@click.argument("contribution_count", type=click.IntRange(min=1))
def publish_version(
    ol: OpenLedger, datanet_id: int, merkle_root: bytes, manifest_cid: str, contribution_count: int
) -> None:
    """Publish the next version of DATANET_ID: MERKLE_ROOT over its CONTRIBUTION_COUNT approved
    contributions (leaves: contributionId, contributor, cid) and MANIFEST_CID listing them."""
    root = nonzero_root(merkle_root, "MERKLE_ROOT")
    log = ol.publish_version(datanet_id, root, manifest_cid, contribution_count)
    click.echo(
        f"datanet {datanet_id} version {log.version}: {log.contributionCount} contributions, "
        f"root 0x{bytes(log.merkleRoot).hex()}"
    )


@command("register-model", "Register a LoRA model with its first adapter version")
@click.option("--metadata-cid", type=CID, required=True, help="Name, description, license.")
@click.option("--base-model-cid", type=CID, required=True, help="The base model.")
@click.option("--adapter-cid", type=CID, required=True, help="Version 1's PEFT adapter.")
@click.option(
    "--training-manifest-cid",
    type=CID,
    required=True,
    help="Version 1's training examples -> contributions.",
)
@click.option("--datanet-id", type=ID, required=True, help="Datanet version 1 was trained on.")
@click.option("--datanet-version", type=ID, required=True, help="Its published version.")
@click.option("--price-per-request", type=UINT96_AMOUNT, default="0", help="OPEN per inference.")
@click.option("--price-per-token", type=UINT96_AMOUNT, default="0", help="OPEN per token.")
@click.option("--developer-bps", type=BPS, required=True, help="Developer's share of payments.")
@click.option("--contributors-bps", type=BPS, required=True, help="Data contributors' share.")
@click.option("--node-bps", type=BPS, required=True, help="Serving node's share.")
@click.option("--protocol-bps", type=BPS, help="Protocol's share [default: governance's].")
@click.option("--attributor", type=ADDRESS, help="Posts attribution epochs [default: sender].")
def register_model(
    ol: OpenLedger,
    metadata_cid: str,
    base_model_cid: str,
    adapter_cid: str,
    training_manifest_cid: str,
    datanet_id: int,
    datanet_version: int,
    price_per_request: int,
    price_per_token: int,
    developer_bps: int,
    contributors_bps: int,
    node_bps: int,
    protocol_bps: int | None,
    attributor: str | None,
) -> None:
    """Register a model; the sender is its developer."""
    log = ol.register_model(
        metadata_cid=metadata_cid,
        base_model_cid=base_model_cid,
        adapter_cid=adapter_cid,
        training_manifest_cid=training_manifest_cid,
        datanet_id=datanet_id,
        datanet_version=datanet_version,
        pricing=(price_per_request, price_per_token),
        split=(developer_bps, contributors_bps, node_bps, protocol_bps),
        attributor=attributor,
    )
    click.echo(f"model {log.modelId}: attributor {log.attributor}")


@command("publish-model-version", "Publish the next adapter version of a model")
@click.argument("model_id", type=ID)
@click.argument("adapter_cid", type=CID)
@click.argument("training_manifest_cid", type=CID)
@click.option("--datanet-id", type=ID, required=True, help="Datanet it was trained on.")
@click.option("--datanet-version", type=ID, required=True, help="Its published version.")
def publish_model_version(
    ol: OpenLedger,
    model_id: int,
    adapter_cid: str,
    training_manifest_cid: str,
    datanet_id: int,
    datanet_version: int,
) -> None:
    """Publish ADAPTER_CID (trained as TRAINING_MANIFEST_CID lists) as MODEL_ID's next version."""
    log = ol.publish_model_version(
        model_id, adapter_cid, training_manifest_cid, datanet_id, datanet_version
    )
    click.echo(f"model {model_id} version {log.version}")
