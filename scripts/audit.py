"""Check off-chain claims against the chain, read-only, on any ape network:

    ape run audit datanet 1 --network ethereum:local:foundry

``datanet N`` recomputes every published version of Datanet N from the chain's events, compares
it with the manifest stored under the version's CID and with the on-chain Merkle root, and
verifies every contribution's bytes in the content store (``--store``, as ``ape run datanet``).
It exits 1 listing every difference.
"""

from __future__ import annotations

import sys

import click
from ape.cli import ConnectedProviderCommand

from backend.datanets.audit import AuditReport, audit_datanet
from backend.datanets.registry import DatanetError
from backend.datanets.store import STORE_ENV, default_store_spec, open_store
from backend.protocol.cli_support import ID, load_protocol


@click.group()
def cli() -> None:
    """Audit off-chain claims against the chain."""


def echo_report(report: AuditReport) -> None:
    """The report, one line per version and one per difference."""
    click.echo(f"datanet {report.datanet_id}: {len(report.versions)} published version(s)")
    for v in report.versions:
        state = "ok" if not v.findings else f"{len(v.findings)} difference(s)"
        click.echo(
            f"  version {v.version}: {v.contribution_count} contributions, "
            f"root 0x{v.merkle_root.hex()}, manifest {v.manifest_cid}: {state}"
        )
    click.echo(
        f"  files: {report.files_checked} verified against their CIDs"
        + (f", {len(report.file_findings)} problem(s)" if report.file_findings else "")
    )
    for finding in report.findings:
        click.echo(f"  DIFFERENCE {finding}")


@cli.command("datanet", cls=ConnectedProviderCommand)
@click.argument("datanet_id", type=ID)
@click.option(
    "--store",
    "store_spec",
    default=default_store_spec,
    envvar=STORE_ENV,
    show_default=".data/devnet/store",
    help="Content store: a directory, or an IPFS HTTP RPC API (http://127.0.0.1:5001).",
)
def datanet(datanet_id: int, store_spec: str) -> None:
    """Audit every published version of DATANET_ID and every file it contains."""
    p = load_protocol()
    try:
        report = audit_datanet(p, open_store(store_spec), datanet_id)
    except DatanetError as why:
        raise click.ClickException(str(why)) from None
    echo_report(report)
    if not report.ok:
        click.echo(f"audit FAILED: {len(report.findings)} difference(s)")
        sys.exit(1)
    click.echo("audit passed: every version matches the chain and the store")
