"""Datanets from files: create one from a metadata file, contribute files or folders, list and
review pending contributions, publish versions. On any ape network:

    ape run datanet create datasets/unit-conversions/metadata.json --bond 1 \
        --network ethereum:local:foundry --account TEST::0
    ape run datanet contribute 1 datasets/unit-conversions/data --account TEST::5 ...
    ape run datanet pending 1 ...
    ape run datanet review 1 --approve-all-valid --account TEST::0 ...
    ape run datanet publish 1 --account TEST::0 ...

Files live in a content store: ``--store`` (or ``OPENLEDGER_STORE``) is a directory for the
embedded store (default ``.data/devnet/store``, the demo's) or an IPFS HTTP RPC API. Every
command reads its state from the chain and the store, so each is safe to re-run after a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from ape.cli import ConnectedProviderCommand, account_option

from backend.cli.params import ADDRESS, ID, IDS, UINT64, UINT96_AMOUNT, store_option, unique_ids
from backend.cli.registry import echo_sent
from backend.datanets.contribute import (
    DEFAULT_BATCH_SIZE,
    check_files,
    collect_files,
    register_files,
    split_registered,
    store_files,
)
from backend.datanets.create import create_datanet
from backend.datanets.formats import DatanetMetadata, MetadataError
from backend.datanets.publish import publish_version
from backend.datanets.registry import DatanetError, fetch_metadata, read_datanet, read_history
from backend.datanets.review import (
    DEFAULT_REVIEW_BATCH,
    check_reviewable,
    preview,
    send_reviews,
    validate_pending,
)
from backend.protocol.amounts import format_open
from backend.protocol.cli_support import load_protocol
from backend.protocol.web3_protocol import Web3Protocol
from backend.sdk import OpenLedger, ProtocolError
from backend.storage.base import ContentStore
from backend.storage.open import open_store


@click.group()
def cli() -> None:
    """Datanets from files: create, contribute, pending, review, publish."""


def command(name: str, short_help: str, *, signs: bool = True) -> Callable[..., click.Command]:
    """A subcommand on an ape network (``--network``), with ``--store``. One that sends
    transactions takes a sender (``--account``) and runs with the SDK as that account
    (``ol``); a read-only one gets the deployment (``p``). A refusal becomes ``Error: ...``."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> None:
            protocol = load_protocol()
            if signs:
                kwargs["ol"] = protocol.sdk(kwargs.pop("account"), on_sent=echo_sent)
            else:
                kwargs["p"] = protocol.as_web3()
            try:
                f(*args, **kwargs)
            except (DatanetError, MetadataError, ProtocolError) as why:
                raise click.ClickException(str(why)) from None

        run = store_option(run)
        if signs:
            run = account_option()(run)
        return cli.command(name, cls=ConnectedProviderCommand, short_help=short_help)(run)

    return decorate


def _store(spec: str) -> ContentStore:
    return open_store(spec)


@command("create", "Create a Datanet from a metadata file (or reuse it)")
@click.argument("metadata_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bond", type=UINT96_AMOUNT, default="0", help="OPEN taken per contribution.")
@click.option("--min-approved", type=UINT64, default=1, show_default=True,
              help="Approved contributions needed before the first version.")  # fmt: skip
@click.option("--treasury", type=ADDRESS, help="Receives rejected bonds [default: the sender].")
def create(
    ol: OpenLedger,
    store_spec: str,
    metadata_file: Path,
    bond: int,
    min_approved: int,
    treasury: str | None,
) -> None:
    """Store METADATA_FILE's Datanet metadata and create a Datanet owned by the sender; when
    the sender already created one with the same metadata, reuse it."""
    metadata = DatanetMetadata.from_json(metadata_file.read_bytes())
    created = create_datanet(
        ol, _store(store_spec), metadata, bond=bond, min_approved=min_approved, treasury=treasury
    )
    how = "created" if created.created_now else "reused (already created by the sender)"
    click.echo(f"datanet {created.datanet_id} {how}: metadata {created.metadata_cid}")


@command("contribute", "Contribute a file or a folder of files")
@click.argument("datanet_id", type=ID)
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE,
              show_default=True, help="Files per contributeBatch transaction.")  # fmt: skip
def contribute(
    ol: OpenLedger, store_spec: str, datanet_id: int, paths: tuple[Path, ...], batch_size: int
) -> None:
    """Validate every file of PATHS against DATANET_ID's format, store them, and register the
    ones the Datanet does not hold yet (bonds approved first)."""
    store = _store(store_spec)
    datanet = read_datanet(ol.protocol, datanet_id)
    metadata = fetch_metadata(store, str(datanet.metadataCID))
    files = collect_files(paths)
    checked = check_files(metadata, files)
    click.echo(
        f"{len(checked)} file(s), {sum(f.records for f in checked)} records, "
        f"valid {metadata.format.value} data for {metadata.name!r}"
    )
    with click.progressbar(store_files(store, checked), length=len(checked),
                           label="storing") as bar:  # fmt: skip
        stored = list(bar)
    done, todo = split_registered(ol.protocol, datanet_id, stored, ol.address)
    for r in done:
        click.echo(f"  {r.path}: already contribution {r.contribution_id}, skipped")
    if not todo:
        click.echo(f"nothing new to register in datanet {datanet_id}")
        return
    bond = int(datanet.contributionBond)
    click.echo(f"registering {len(todo)} file(s), bond {format_open(bond * len(todo))} in all")
    registered = []
    with click.progressbar(length=len(todo), label="registering") as bar:
        batches = register_files(ol, datanet_id, todo, batch_size=batch_size)
        for batch in batches:
            registered.extend(batch)
            bar.update(len(batch))
    for r in registered:
        click.echo(f"  {r.path}: contribution {r.contribution_id} ({r.cid}, {r.size} bytes)")


@command("pending", "List pending contributions with previews", signs=False)
@click.argument("datanet_id", type=ID)
@click.option("--lines", type=click.IntRange(min=0), default=3, show_default=True,
              help="Preview lines per contribution.")  # fmt: skip
def pending(p: Web3Protocol, store_spec: str, datanet_id: int, lines: int) -> None:
    """List the contributions of DATANET_ID waiting for review, with their first lines."""
    read_datanet(p, datanet_id)
    store = _store(store_spec)
    waiting = read_history(p, datanet_id).pending()
    click.echo(f"datanet {datanet_id}: {len(waiting)} pending contribution(s)")
    for c in waiting:
        click.echo(f"#{c.id} {c.cid} {c.size} bytes from {c.contributor}")
        for line in preview(store, c.cid, lines) if lines else []:
            click.echo(f"    {line}")


@command("review", "Approve or reject pending contributions")
@click.argument("datanet_id", type=ID)
@click.option("--approve", "approved", type=IDS, multiple=True, help="Contribution ids: 1,2,3.")
@click.option("--reject", "rejected", type=IDS, multiple=True, help="Contribution ids: 4,5.")
@click.option(
    "--approve-all-valid",
    is_flag=True,
    help="Re-validate every other pending file: approve the valid, reject the invalid.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_REVIEW_BATCH,
              show_default=True, help="Contributions per review transaction.")  # fmt: skip
def review(
    ol: OpenLedger,
    store_spec: str,
    datanet_id: int,
    approved: tuple[list[int], ...],
    rejected: tuple[list[int], ...],
    approve_all_valid: bool,
    batch_size: int,
) -> None:
    """Review contributions of DATANET_ID: approve (bond refunded) or reject (bond to the
    treasury) by id, and/or re-validate every pending file with --approve-all-valid."""
    approve_ids, reject_ids = unique_ids(approved), unique_ids(rejected)
    if not (approve_ids or reject_ids or approve_all_valid):
        raise click.UsageError(
            "nothing to review: give --approve/--reject ids or --approve-all-valid"
        )
    datanet = read_datanet(ol.protocol, datanet_id)
    history = read_history(ol.protocol, datanet_id)
    check_reviewable(history, [*approve_ids, *reject_ids])
    if approve_all_valid:
        store = _store(store_spec)
        named = set(approve_ids) | set(reject_ids)
        others = [c for c in history.pending() if c.id not in named]
        verdicts = validate_pending(fetch_metadata(store, str(datanet.metadataCID)), store, others)
        approve_ids += verdicts.approve
        reject_ids += list(verdicts.reject)
        for cid_id, why in verdicts.reject.items():
            click.echo(f"  rejecting #{cid_id}: {why}")
        for cid_id, why in verdicts.unavailable.items():
            click.echo(f"  left #{cid_id} pending: {why}")
    if not approve_ids and not reject_ids:
        click.echo(f"datanet {datanet_id}: nothing pending to review")
        return
    send_reviews(ol, datanet_id, approve_ids, reject_ids, batch_size=batch_size)
    click.echo(
        f"datanet {datanet_id}: approved {sorted(approve_ids) or 'none'}, "
        f"rejected {sorted(reject_ids) or 'none'}"
    )


@command("publish", "Publish a version of the approved contributions")
@click.argument("datanet_id", type=ID)
def publish(ol: OpenLedger, store_spec: str, datanet_id: int) -> None:
    """Build DATANET_ID's manifest of approved contributions, store it, and publish its Merkle
    root as the next version; nothing is sent when nothing changed since the last version."""
    result = publish_version(ol, _store(store_spec), datanet_id)
    state = "published" if result.published_now else "unchanged since"
    click.echo(
        f"datanet {datanet_id} {state} version {result.version}: "
        f"{result.contribution_count} contributions, root 0x{result.merkle_root.hex()}, "
        f"manifest {result.manifest_cid}"
    )
