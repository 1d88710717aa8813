"""Check off-chain claims against the chain, read-only, on any ape network:

    ape run audit datanet 1 --network ethereum:local:foundry

``datanet N`` recomputes every published version of Datanet N from the chain's events, compares
it with the manifest stored under the version's CID and with the on-chain Merkle root, and
verifies every contribution's bytes in the content store (``--store``, as ``ape run datanet``).
It exits 1 listing every difference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from ape.cli import ConnectedProviderCommand

from backend.cli.params import ID, store_option
from backend.datanets.audit import AuditReport, audit_datanet
from backend.datanets.registry import DatanetError
from backend.protocol.cli_support import load_protocol
from backend.storage.open import open_store


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
@store_option
def datanet(datanet_id: int, store_spec: str) -> None:
    """Audit every published version of DATANET_ID and every file it contains."""
    p = load_protocol().as_web3()
    try:
        report = audit_datanet(p, open_store(store_spec), datanet_id)
    except DatanetError as why:
        raise click.ClickException(str(why)) from None
    echo_report(report)
    if not report.ok:
        click.echo(f"audit FAILED: {len(report.findings)} difference(s)")
        sys.exit(1)
    click.echo("audit passed: every version matches the chain and the store")


@cli.command("attribution", cls=ConnectedProviderCommand)
@click.argument("model_id", type=ID)
@click.argument("epoch_id", type=ID, required=False)
@store_option
@click.option(
    "--reveal", "reveals", multiple=True, metavar="CID",
    help="A reveal file of answers' token ids (`openledger-node reveal`): their full records "
    "are recomputed, sketches included, and refused where the ids disprove them. Repeatable.",
)  # fmt: skip
@click.option(
    "--base-model", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="The base model folder the revealed answers' gradients are recomputed with "
    "(default: the embedded SmolLM2).",
)  # fmt: skip
@click.option("--challenge", is_flag=True, help="Challenge a failing epoch (posts the bond).")
@click.option("--account", "account_alias", help="Account that challenges (with --challenge).")
def attribution(
    model_id: int, epoch_id: int | None, store_spec: str, reveals: tuple[str, ...],
    base_model: Path | None, challenge: bool, account_alias: str | None,
) -> None:  # fmt: skip
    """Recompute EPOCH_ID of MODEL_ID (default: its latest) from public inputs alone and
    compare it with the posted report and root; exit 1 listing every account paid
    differently. With --challenge, file the evidence by CID and challenge the epoch."""
    from backend.attribution.attributor import AttributionError
    from backend.attribution.epoch_audit import audit_epoch
    from backend.attribution.epoch_inputs import EpochInputsError
    from backend.attribution.epoch_report import to_bytes
    from backend.attribution.reveal import (
        Revealed,
        RevealError,
        chain_attributors,
        parse_reveal,
        refute_full_records,
    )
    from backend.models.base_models import ensure_smollm2
    from backend.protocol.amounts import format_open
    from backend.protocol.deployments import PROJECT_ROOT
    from backend.storage.base import ContentStoreError

    p = load_protocol()
    w3p = p.as_web3()
    store = open_store(store_spec)
    if epoch_id is None:
        posted = (
            w3p["AttributionRewards"]
            .events.EpochPosted()
            .get_logs(from_block=w3p.deployment.block, argument_filters={"modelId": model_id})
        )
        if not posted:
            raise click.ClickException(f"model {model_id} has no posted epoch")
        epoch_id = max(e.args.epochId for e in posted)
    refute = None
    if reveals:
        revealed: dict[bytes, Revealed] = {}
        for cid in reveals:
            try:
                revealed |= parse_reveal(store.get(cid), f"reveal {cid}")
            except (RevealError, ContentStoreError) as why:
                raise click.ClickException(str(why)) from None
        base_dir = base_model or ensure_smollm2(PROJECT_ROOT / ".data")
        attributors = chain_attributors(w3p, store, base_dir, PROJECT_ROOT / ".data" / "audit")

        def refute(redemption):  # type: ignore[no-untyped-def]
            return refute_full_records(redemption, revealed, attributors)

    try:
        audit = audit_epoch(w3p, store, epoch_id, refute=refute)
    except (EpochInputsError, AttributionError) as why:
        raise click.ClickException(str(why)) from None
    if audit.model_id != model_id:
        raise click.ClickException(f"epoch {epoch_id} is of model {audit.model_id}")
    click.echo(
        f"epoch {epoch_id} of model {model_id} by {audit.poster}: posted "
        f"{format_open(audit.posted_total)}, recomputed {format_open(audit.recomputed_total)}; "
        f"report {audit.report_cid}"
    )
    for problem in audit.problems:
        click.echo(f"  PROBLEM {problem}")
    for receipt, why in audit.refuted.items():
        click.echo(f"  REFUTED receipt {receipt}: {'; '.join(why)}")
    for d in audit.differences:
        click.echo(
            f"  DIFFERENCE {d.account}: posted {format_open(d.posted)}, recomputed "
            f"{format_open(d.recomputed)} ({'+' if d.delta > 0 else ''}{format_open(d.delta)})"
        )
    if audit.passed:
        click.echo("audit passed: the epoch pays exactly what the rule says")
        return
    click.echo(f"audit FAILED: {len(audit.differences)} account(s) paid differently")
    if challenge:
        from ape import accounts

        from backend.cli.registry import echo_sent
        from backend.sdk import ProtocolError

        if account_alias is None:
            raise click.UsageError("--challenge needs --account")
        account = (
            accounts.test_accounts[int(account_alias.removeprefix("TEST::"))]
            if account_alias.startswith("TEST::")
            else accounts.load(account_alias)
        )
        evidence = store.put(to_bytes(audit.evidence()))
        click.echo(f"evidence stored as {evidence}")
        try:
            p.sdk(account, on_sent=echo_sent).challenge(epoch_id, evidence)
        except ProtocolError as why:
            raise click.ClickException(str(why)) from None
    sys.exit(1)
