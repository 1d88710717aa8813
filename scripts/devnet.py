"""The local stack: `ape run devnet demo` (what `make demo` runs) and `ape run devnet up`."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import click
from ape import chain

from backend.devnet.stack import DEFAULT_DATA_DIR, LocalStack, local_stack

OPEN = 10**18


def _open(wei: int) -> str:
    whole, frac = divmod(int(wei), OPEN)
    return f"{whole:,}" + (f".{frac:018d}".rstrip("0") if frac else "") + " OPEN"


def _summary(stack: LocalStack) -> None:
    p = stack.protocol
    d = p.deployment
    state = "deployed now" if stack.deployed_now else "reused from the persisted chain state"
    click.secho(f"OpenLedger on chain {d.chain_id} at {stack.anvil.url} ({state})", bold=True)
    for name, address in d.contracts.items():
        click.echo(f"  {name:<20} {address}")
    click.echo(f"  deployed from block {d.block}; chain head is block {chain.blocks.height}")
    click.secho("Read back from the chain", bold=True)
    click.echo(f"  OPEN total supply      {_open(p.token.totalSupply())}")
    click.echo(f"  treasury balance       {_open(p.token.balanceOf(d.treasury))}")
    click.echo(f"  minimum node stake     {_open(p.nodes.minStake())}")
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
        note = f"  (funded {_open(stack.funded[role])} now)" if role in stack.funded else ""
        click.echo(f"  {role:<14} {account.address}  {_open(p.token.balanceOf(account))}{note}")


@click.group()
def cli() -> None:
    """The local OpenLedger stack (anvil on 127.0.0.1, state under .data/)."""


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Chain state and deployment record.",
)
@click.option("--port", type=int, default=8545, show_default=True)
def demo(data_dir: Path, port: int) -> None:
    """Start the chain, deploy or reuse the protocol, fund accounts, summarise, stop."""
    with local_stack(data_dir, port) as stack:
        _summary(stack)
    click.echo("Stopped the local chain; its state is kept in " + str(data_dir / "chain"))


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Chain state and deployment record.",
)
@click.option("--port", type=int, default=8545, show_default=True)
def up(data_dir: Path, port: int) -> None:
    """Start the local stack and keep it running until interrupted (Ctrl-C)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with local_stack(data_dir, port) as stack:
        _summary(stack)
        click.secho(
            f"Running: RPC {stack.anvil.url}, chain id {stack.protocol.deployment.chain_id}, "
            f"deployments in {data_dir / 'deployments.json'}. Ctrl-C stops it.",
            bold=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    click.echo("Stopped.")
