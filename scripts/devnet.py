"""The local stack: `ape run devnet demo` (what `make demo` runs) and `ape run devnet up`.

The demo's inference half (training, the paid node, attribution, epochs, DPO) is narrated by
`scripts/_devnet_inference.py`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from ape import chain
from ape.logging import LogLevel, logger

from backend.devnet.datanet_demo import WRONG_FILES, DatanetDemo, run_datanet_demo
from backend.devnet.serve import serve_stack
from backend.devnet.services import api_server, index_chain
from backend.devnet.stack import DEFAULT_DATA_DIR, LocalStack, local_stack
from scripts._devnet_inference import open_text, run_inference

FC = TypeVar("FC", bound=Callable[..., object])


def _data_dir_option(what: str) -> Callable[[FC], FC]:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help=what,
    )


_port_option = click.option("--port", type=int, default=8545, show_default=True)
_api_port_option = click.option("--api-port", type=int, default=8000, show_default=True)
_node_port_option = click.option("--node-port", type=int, default=8100, show_default=True)


def _summary(stack: LocalStack) -> None:
    p = stack.protocol
    d = p.deployment
    state = "deployed now" if stack.deployed_now else "reused from the persisted chain state"
    click.secho(f"OpenLedger on chain {d.chain_id} at {stack.anvil.url} ({state})", bold=True)
    for name, address in d.contracts.items():
        click.echo(f"  {name:<20} {address}")
    click.echo(f"  deployed from block {d.block}; chain head is block {chain.blocks.height}")
    click.secho("Read back from the chain", bold=True)
    click.echo(f"  OPEN total supply      {open_text(p.token.totalSupply())}")
    click.echo(f"  treasury balance       {open_text(p.token.balanceOf(d.treasury))}")
    click.echo(f"  minimum node stake     {open_text(p.nodes.minStake())}")
    click.echo(f"  withdrawal delay       {p.payments.withdrawalDelay()} s")
    click.echo(f"  challenge window       {p.rewards.challengeWindow()} s")
    click.echo(
        f"  protocol share         {p.models.protocolBps()} bps; "
        f"contributors' floor {p.models.contributorsFloorBps()} bps"
    )
    click.echo(
        f"  datanets {p.datanets.datanetCount()}, contributions {p.datanets.contributionCount()}, "
        f"models {p.models.modelCount()}, epochs {p.rewards.epochCount()}, "
        f"usage proofs {p.payments.usageProofCount()}"
    )
    click.secho("Local accounts", bold=True)
    for role, account in stack.roles.items():
        note = f"  (funded {open_text(stack.funded[role])} now)" if role in stack.funded else ""
        click.echo(f"  {role:<14} {account.address}  {open_text(p.token.balanceOf(account))}{note}")


def _datanet_summary(demo: DatanetDemo, stack: LocalStack) -> None:
    m, d, v = demo.metadata, demo.datanet, demo.publication
    state = "created now" if d.created_now else "reused: created by an earlier run"
    click.secho(f"Datanet {d.datanet_id}: {m.name} ({state})", bold=True)
    click.echo(f"  licence {m.license}, format {m.format.value}, metadata {d.metadata_cid}")
    click.echo(f"  content store {stack.store.root}")
    for f in demo.files:
        how = "registered now" if f.registered_now else "already registered, skipped"
        click.echo(
            f"  {f.role:<12} {f.file:<26} contribution {f.contribution_id:<3} {how}; {f.status}"
        )
    if demo.approved_now or demo.rejected_now:
        click.echo(
            f"  curator {stack.roles['governance'].address} approved {demo.approved_now or 'none'}"
            f", rejected {demo.rejected_now or 'none'} (wrong answers: {', '.join(WRONG_FILES)})"
        )
    else:
        click.echo("  review: nothing pending")
    state = "published now" if v.published_now else "unchanged, not republished"
    click.echo(
        f"  version {v.version} ({state}): {v.contribution_count} contributions, "
        f"root 0x{v.merkle_root.hex()}"
    )
    click.echo(f"  manifest {v.manifest_cid}")
    a = demo.audit
    if a.ok:
        click.secho(
            f"  audit passed: {len(a.versions)} version(s) recomputed from chain events, "
            f"manifests and roots match, {a.files_checked} files verified by CID",
            fg="green",
        )
    else:
        for finding in a.findings:
            click.echo(f"  DIFFERENCE {finding}")
        raise click.ClickException(f"the audit of datanet {d.datanet_id} found differences")


def _serve_and_query(stack: LocalStack, demo_run: DatanetDemo, data_dir: Path, port: int) -> None:
    """Indexes the chain, starts the API on it and reads the demo's Datanet back through it."""
    d = stack.protocol.deployment
    result = index_chain(data_dir / "index.db", d, stack.anvil.url)
    click.secho("Indexer and API", bold=True)
    click.echo(
        f"  indexed blocks {result.from_block}..{result.to_block} into {data_dir / 'index.db'}"
    )
    datanet_id = demo_run.datanet.datanet_id
    version = demo_run.publication.version
    with api_server(data_dir / "index.db", stack.store.root, port) as api:
        detail = api.get(f"/datanets/{datanet_id}")
        members = api.get(f"/datanets/{datanet_id}/versions/{version}/contributions?limit=1")
        first = members["items"][0]["id"]
        proof = api.get(f"/datanets/{datanet_id}/versions/{version}/proofs/{first}")
        siblings = [bytes.fromhex(h.removeprefix("0x")) for h in proof["proof"]]
        cid = proof["leaf"]["cid"]
        on_chain = stack.protocol.datanets.isInVersion(datanet_id, version, first, cid, siblings)
        click.echo(f"  API {api.url}: datanet {datanet_id} (metadata {detail['metadata_cid']}) "
                   f"has {members['total']} contributions in version {version}")  # fmt: skip
        click.echo(
            f"  Merkle proof of contribution {first} from the API verifies on-chain: {on_chain}"
        )


@click.group()
def cli() -> None:
    """The local OpenLedger stack (anvil on 127.0.0.1, state under .data/)."""


@cli.command()
@_data_dir_option("Chain state, deployment record and content store.")
@_port_option
@_api_port_option
@_node_port_option
@click.option(
    "--train-steps", type=int, default=60, show_default=True,
    help="SFT steps (batch 8) of the demo model when it is trained; DPO takes a quarter.",
)  # fmt: skip
@click.option(
    "--inference/--no-inference", default=True, show_default=True,
    help="Also train, register, serve and pay for the demo model.",
)  # fmt: skip
@click.option(
    "--serve/--no-serve", default=None,
    help="At the end, keep the stack and the web app running until Ctrl-C [default: when "
    "the output is a terminal].",
)  # fmt: skip
def demo(
    data_dir: Path,
    port: int,
    api_port: int,
    node_port: int,
    train_steps: int,
    inference: bool,
    serve: bool | None,
) -> None:
    """Start the chain, deploy or reuse the protocol, fund accounts, run the Datanet flow on the
    project's dataset (create, contribute, review, publish, audit), then train or reuse a LoRA
    adapter on it, serve it on an inference node and pay for answers; summarise, stop."""
    with local_stack(data_dir, port) as stack:
        _summary(stack)
        logger.set_level(LogLevel.WARNING)  # not a line per confirmed transaction
        demo_run = run_datanet_demo(stack.protocol, stack.store, stack.roles)
        _datanet_summary(demo_run, stack)
        _serve_and_query(stack, demo_run, data_dir, api_port)
        if inference:
            run_inference(stack, demo_run, data_dir, node_port, train_steps)
        if serve if serve is not None else sys.stdout.isatty():
            _serve_until_stopped(stack, data_dir, api_port, node_port)
        else:
            click.secho(f"Web app: run `make up` and open http://127.0.0.1:{api_port}/ (explorer, "
                        "contributor rewards, paid chat)", bold=True)  # fmt: skip
    click.echo("Stopped the node, the API and the local chain; state is kept in " + str(data_dir))


@cli.command()
@_data_dir_option("Chain state and deployment record.")
@_port_option
@_api_port_option
@_node_port_option
def up(data_dir: Path, port: int, api_port: int, node_port: int) -> None:
    """Start the local stack (chain, indexer following it, API with the web app, and the
    inference node once the demo registered a model) and keep it running until interrupted
    (Ctrl-C)."""
    with local_stack(data_dir, port) as stack:
        _summary(stack)
        _serve_until_stopped(stack, data_dir, api_port, node_port)
    click.echo("Stopped.")


def _serve_until_stopped(stack: LocalStack, data_dir: Path, api_port: int, node_port: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo("Starting the indexer, the API and the node (the node loads SmolLM2: ~10 s) ...")
    with serve_stack(stack, data_dir, api_port, node_port) as served:
        node = (
            f"node {served.node_url} (models {', '.join(map(str, served.models))})"
            if served.node_url
            else "no node (no model registered yet: run `make demo`)"
        )
        click.secho("Running", bold=True)
        click.echo(f"  RPC {served.rpc_url} (chain id {served.chain_id}); API {served.api.url} "
                   f"(docs at {served.api.origin}/docs); {node}")  # fmt: skip
        click.echo(f"  deployments in {data_dir / 'deployments.json'}, content in "
                   f"{stack.store.root}")  # fmt: skip
        accounts = ", ".join(f"#{i} {role}" for i, role in enumerate(stack.roles))
        click.echo(f"  local test accounts (pick one in the page's header): {accounts}")
        click.secho(f"Web app: {served.webapp_url}  (Ctrl-C stops everything)", bold=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
