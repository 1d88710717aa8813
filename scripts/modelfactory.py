"""ModelFactory from the command line: train a LoRA adapter on a published Datanet version
(SFT, or DPO from a Datanet of preference pairs), then publish it as a model on-chain; or
import an adapter trained elsewhere (docs/import-adapter.md).

    ape run modelfactory train 1 1 --workdir .data/jobs/first --steps 40 \
        --network ethereum:local:foundry
    ape run modelfactory publish .data/jobs/first --name unit-conversions \
        --price-per-request 0.01 --price-per-token 0.0001 --split 5000,3000,1500,500 \
        --attributor 0x... --network ethereum:local:foundry --account TEST::3
    ape run modelfactory train 2 1 --method dpo --model 1 --workdir .data/jobs/dpo ...
    ape run modelfactory import ./my-adapter 1 1 --data train.jsonl --name my-model \
        --attributor 0x... --network ethereum:local:foundry --account TEST::3

``train`` reads the chain and the content store and writes everything into the work folder
(adapter, training manifest, eval report, loss curve JSON + PNG); ``publish`` stores those by
CID and sends one transaction; re-running it after a crash sends nothing twice. ``import``
checks a PEFT adapter folder against the base model and the Datanet version (matching the
training data given to the version's contributions), then stores and registers it the same way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from ape.cli import ConnectedProviderCommand, account_option

from backend.cli.params import ADDRESS, ID, UINT96_AMOUNT, store_option
from backend.cli.registry import echo_sent
from backend.modelfactory.adapter_check import AdapterCheckError
from backend.modelfactory.chain import ChainLookupError
from backend.modelfactory.dataset import DatasetError
from backend.modelfactory.import_adapter import AdapterImportError, import_adapter
from backend.modelfactory.import_record import ImportRecord
from backend.modelfactory.jobs import JobError, run_job
from backend.modelfactory.provenance import ProvenanceError
from backend.modelfactory.publish import (
    Artifacts,
    Pricing,
    Published,
    PublishError,
    Split,
    publish_job,
)
from backend.modelfactory.spec import (
    BUILTIN_BASE,
    DEVICES,
    METHODS,
    PROJECTIONS,
    JobSpec,
    JobSpecError,
    LoraSettings,
    TrainSettings,
)
from backend.protocol.cli_support import load_protocol
from backend.protocol.deployments import PROJECT_ROOT
from backend.sdk import OpenLedger, ProtocolError
from backend.storage.open import open_store

ERRORS = (
    JobSpecError, JobError, DatasetError, ChainLookupError, PublishError, AdapterCheckError,
    AdapterImportError, ProvenanceError, ProtocolError,
)  # fmt: skip


@click.group()
def cli() -> None:
    """ModelFactory: train (SFT / DPO) on a Datanet version, publish the model."""


def command(name: str, short_help: str, *, signs: bool) -> Callable[..., click.Command]:
    """A subcommand on an ape network with ``--store``; our errors become ``Error: ...``."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                f(*args, **kwargs)
            except ERRORS as why:
                raise click.ClickException(str(why)) from None

        run = store_option(run)
        if signs:
            run = account_option()(run)
        return cli.command(name, cls=ConnectedProviderCommand, short_help=short_help)(run)

    return decorate


LORA, TRAIN = LoraSettings(), TrainSettings()  # the options' defaults are the spec's


def _job_spec(options: dict[str, Any]) -> JobSpec:
    """The job spec of ``train``'s options (named as its fields); a refusal names the option."""
    lora = {f.name: options.pop(f.name) for f in fields(LoraSettings)}
    targets = lora["target_modules"].split(",")
    lora["target_modules"] = tuple(t.strip() for t in targets if t.strip())
    train = {f.name: options.pop(f.name) for f in fields(TrainSettings)}
    try:
        return JobSpec(**options, lora=LoraSettings(**lora), train=TrainSettings(**train))
    except JobSpecError as why:
        ctx = click.get_current_context()
        field = why.problems[0][0].rpartition(".")[2]
        named = [p.get_error_hint(ctx) for p in ctx.command.params if p.name == field]
        message = f"Invalid value for {named[0]}: {why}" if named else str(why)
        raise click.ClickException(message) from None


@command("train", "Train an adapter on a published Datanet version", signs=False)
@click.argument("datanet_id", type=ID)
@click.argument("version", type=ID)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    required=True,
    help="A new folder for the adapter, manifest, eval report and loss curve.",
)
@click.option("--method", type=click.Choice(METHODS), default="sft", show_default=True)
@click.option("--model", "model_id", type=ID, help="DPO: the model whose adapter it improves.")
@click.option(
    "--base",
    "base_model",
    default=BUILTIN_BASE,
    show_default=True,
    help=f"'{BUILTIN_BASE}' or a Hugging Face model folder.",
)
@click.option("--rank", type=int, default=LORA.rank, show_default=True)
@click.option("--alpha", type=float, default=LORA.alpha, show_default=True)
@click.option("--dropout", type=float, default=LORA.dropout, show_default=True)
@click.option(
    "--targets",
    "target_modules",
    default=",".join(LORA.target_modules),
    show_default=True,
    help=f"Comma-separated, among {', '.join(PROJECTIONS)}.",
)
@click.option("--epochs", type=int, default=TRAIN.epochs, show_default=True)
@click.option("--batch-size", type=int, default=TRAIN.batch_size, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=TRAIN.learning_rate, show_default=True)
@click.option("--max-length", type=int, default=TRAIN.max_length, show_default=True)
@click.option("--seed", type=int, default=TRAIN.seed, show_default=True)
@click.option("--eval-fraction", type=float, default=TRAIN.eval_fraction, show_default=True)
@click.option("--steps", "max_steps", type=int, help="Stop after this many steps.")
@click.option("--beta", type=float, default=TRAIN.beta, show_default=True, help="DPO's beta.")
@click.option(
    "--device", type=click.Choice(DEVICES), default=TRAIN.device, show_default=True,
    help="Where to train (CPU runs are byte-reproducible).",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(store_spec: str, workdir: Path, quiet: bool, **options: Any) -> None:
    """Train on DATANET_ID's published VERSION and write the results into --workdir."""
    spec = _job_spec(options)
    job = run_job(spec, load_protocol().as_web3(), open_store(store_spec), workdir,
                  PROJECT_ROOT / ".data", progress=not quiet)  # fmt: skip
    click.echo(
        f"trained on {job.train_examples} examples ({job.skipped_rows} malformed rows "
        f"skipped, {job.eval_examples} held out) at {job.tokens_per_second:.0f} tokens/s"
    )
    report = job.eval_report
    if spec.method == "sft":
        click.echo(
            f"held-out loss {report['base_loss']:.3f} (base) -> "
            f"{report['adapter_loss']:.3f} (adapter), perplexity "
            f"{report['base_perplexity']:.1f} -> {report['adapter_perplexity']:.1f}"
        )
    else:
        before, after = (report["held_out_preferences"][k] for k in ("before", "after"))
        click.echo(
            f"held-out preference accuracy {before['accuracy']:.2f} -> "
            f"{after['accuracy']:.2f}, reward margin {before['mean_margin']:.3f} -> "
            f"{after['mean_margin']:.3f}"
        )
    click.echo(f"work folder {workdir}: adapter/, training_manifest.json, eval_report.json, "
               f"loss_curve.json, loss_curve.png")  # fmt: skip


def _split(text: str) -> Split:
    try:
        parts = [int(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: four basis points, e.g. 5000,3000,1500,500") from None
    if len(parts) != 4:
        raise click.BadParameter(f"{text!r}: developer,contributors,node,protocol basis points")
    return Split(*parts)


def listing_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """How a published model is listed (metadata, pricing, split, attributor): the options
    of ``publish`` and ``import``."""
    options = [
        click.option("--name", required=True, help="The model's name in its metadata."),
        click.option("--description", default=""),
        click.option("--license", "license_", default="", help="SPDX identifier of the adapter."),
        click.option("--price-per-request", type=UINT96_AMOUNT, default="0"),
        click.option("--price-per-token", type=UINT96_AMOUNT, default="0"),
        click.option(
            "--split",
            "split_text",
            default="5000,3000,1500,500",
            show_default=True,
            help="developer,contributors,node,protocol basis points (sum 10000).",
        ),
        click.option(
            "--attributor", type=ADDRESS, help="Posts attribution epochs (a staked node)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def listing(new_model: bool, name: str, description: str, license_: str,
            price_per_request: int, price_per_token: int, split_text: str,
            attributor: str | None) -> dict[str, Any]:  # fmt: skip
    """The keyword arguments of ``publish_job`` / ``import_adapter`` from the listing options."""
    if new_model and attributor is None:
        raise click.UsageError("a new model needs --attributor (a staked node's address)")
    return {"name": name, "description": description, "license": license_,
            "pricing": Pricing(price_per_request, price_per_token), "split": _split(split_text),
            "attributor": attributor}  # fmt: skip


def as_sender(account: Any) -> OpenLedger:
    """The SDK over ape's connection, acting as the ``--account``."""
    return load_protocol().sdk(account, on_sent=echo_sent)


def echo_published(artifacts: Artifacts, published: Published) -> None:
    what = "registered" if published.registered_now else "published"
    if not published.sent_now:
        what = "already on-chain as"
    report = "" if artifacts.eval_report is None else f", eval report {artifacts.eval_report}"
    click.echo(
        f"{what} model {published.model_id} version {published.version}: adapter "
        f"{artifacts.adapter}, training manifest {artifacts.training_manifest}{report}"
    )


@command("publish", "Store a trained job's artifacts and register the model", signs=True)
@click.argument("workdir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@listing_options
def publish(account: Any, store_spec: str, workdir: Path, **options: Any) -> None:
    """Store WORKDIR's adapter, manifest and reports by CID and register the model (or, for a
    job that names a model, publish its next version)."""
    spec = json.loads((workdir / "job.json").read_text())["spec"] if (
        workdir / "job.json").is_file() else {}  # fmt: skip
    new_model = spec.get("model_id") is None
    artifacts, published = publish_job(
        workdir, as_sender(account), open_store(store_spec), **listing(new_model, **options)
    )
    echo_published(artifacts, published)


@command("import", "Check and register a PEFT adapter trained elsewhere", signs=True)
@click.argument("adapter_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("datanet_id", type=ID)
@click.argument("version", type=ID)
@click.option(
    "--data", "data_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
    help="A training data file in the Datanet's format (repeat for more): each example is "
    "matched to the version's contributions by content.",
)  # fmt: skip
@click.option(
    "--unverified", is_flag=True,
    help="No data: record the Datanet version as your declaration alone, with no examples.",
)  # fmt: skip
@click.option(
    "--method", type=click.Choice(METHODS), default="sft", show_default=True,
    help="How the adapter was trained on the examples (the attribution of its answers uses it).",
)  # fmt: skip
@click.option(
    "--base", "base_model", default=BUILTIN_BASE, show_default=True,
    help=f"'{BUILTIN_BASE}' or a Hugging Face model folder: the base the adapter was trained on.",
)  # fmt: skip
@click.option(
    "--base-alias",
    help="Accept this base_model_name_or_path of adapter_config.json as naming --base (the "
    "same weights under another name or path).",
)
@click.option("--model", "model_id", type=ID, help="Publish as the next version of this model.")
@listing_options
def import_(account: Any, store_spec: str, adapter_dir: Path, datanet_id: int, version: int,
            data_files: tuple[Path, ...], unverified: bool, method: str, base_model: str,
            base_alias: str | None, model_id: int | None, **options: Any) -> None:  # fmt: skip
    """Check the PEFT adapter in ADAPTER_DIR (trained outside ModelFactory) against the base
    model and VERSION of DATANET_ID, store it and register it as a model (or, with --model, as
    that model's next version)."""
    done = import_adapter(
        adapter_dir, as_sender(account), open_store(store_spec), datanet_id=datanet_id,
        version=version, data_files=data_files, unverified=unverified, method=method,
        base_model=base_model, base_alias=base_alias, data_dir=PROJECT_ROOT / ".data",
        model_id=model_id, **listing(model_id is None, **options),
    )  # fmt: skip
    config = done.config
    click.echo(f"adapter: rank {config.rank}, alpha {config.alpha:g}, targets "
               f"{','.join(sorted(config.target_modules))}: served as PEFT serves it")  # fmt: skip
    for line in match_report(done.record):
        click.echo(line)
    if done.record.evidence == "declared_unverified":
        click.echo(f"training data: none given; Datanet {datanet_id} version {version} is "
                   "recorded as declared by the developer, unverified")  # fmt: skip
    else:
        click.echo(
            f"training manifest: {done.examples} examples of Datanet {datanet_id} version "
            f"{version} matched by content, {done.record.unmatched} unmatched"
        )
    echo_published(done.artifacts, done.published)


def match_report(record: ImportRecord) -> list[str]:
    """One line per data file: how many of its examples matched, and which lines did not."""
    lines = []
    for f in record.data_files:
        listed = ", ".join(map(str, f.unmatched_lines))
        more = " ..." if len(f.unmatched_lines) < f.unmatched else ""
        unmatched = f" (lines {listed}{more})" if f.unmatched else ""
        lines.append(
            f"{f.name}: {f.matched} of {f.examples} examples matched, {f.unmatched} unmatched"
            f"{unmatched}, {f.repeated} repeated, {f.malformed} malformed rows skipped"
        )
    return lines
