"""Deploy the OpenLedger protocol on any ape network and record it in the deployments file.

    ape run deploy --network ethereum:local:foundry --account TEST::0
    ape run deploy --fresh --min-stake 500 --challenge-window 3600 --network ... --account ...

By default the deployment recorded for the connected chain is reused when its code is there
(``--reuse``); ``--fresh`` always deploys a new one. The record goes to ``$OPENLEDGER_DEPLOYMENTS``
(else ``deployments.json`` at the project root), where ``ape run ol ...`` finds it.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import click
from ape.cli import ConnectedProviderCommand, account_option

from backend.cli.params import ADDRESS, AMOUNT, AMOUNT_OR_ZERO
from backend.protocol.amounts import format_open
from backend.protocol.cli_support import fail
from backend.protocol.contracts import Protocol, deploy_protocol, ensure_protocol
from backend.protocol.deployments import CONTRACT_NAMES, DeploymentStore, ProtocolParams

DEFAULTS = ProtocolParams()
SECONDS = click.IntRange(min=0)
BPS = click.IntRange(min=0, max=10_000)
# ProtocolParams field -> (click type, unit, what it is)
PARAM_OPTIONS: dict[str, tuple[click.ParamType, str, str]] = {
    "min_stake": (AMOUNT, "OPEN", "Minimum bonded stake of an active node"),
    "unbonding_delay": (SECONDS, "s", "Wait from an unbonding request to its withdrawal"),
    "withdrawal_delay": (SECONDS, "s", "Wait from a deposit withdrawal request to its payment"),
    "challenge_window": (SECONDS, "s", "How long a posted attribution epoch can be challenged"),
    "challenge_bond": (AMOUNT_OR_ZERO, "OPEN", "Bond a challenger posts"),
    "slash_amount": (AMOUNT, "OPEN", "Stake an upheld challenge slashes"),
    "claim_period": (SECONDS, "s", "How long an epoch stays claimable after its window"),
    "protocol_bps": (BPS, "bps", "Protocol's share of every payment"),
    "contributors_floor_bps": (BPS, "bps", "Minimum contributors' share of a model's split"),
}


def _param_options(command: Any) -> Any:
    """One option per ProtocolParams field, defaulting to ProtocolParams()."""
    for f in reversed(fields(ProtocolParams)):
        param_type, unit, what = PARAM_OPTIONS[f.name]
        default = getattr(DEFAULTS, f.name)
        shown = format_open(default) if unit == "OPEN" else f"{default} {unit}"
        command = click.option(
            "--" + f.name.replace("_", "-"),
            f.name,
            type=param_type,
            default=default,
            help=f"{what}, in {unit}  [default: {shown}].",
        )(command)
    return command


def _echo_protocol(protocol: Protocol, store: DeploymentStore, deployed_now: bool) -> None:
    d = protocol.deployment
    verb = "deployed" if deployed_now else "reused"
    click.echo(f"{verb} the protocol on chain {d.chain_id} ({d.network or 'unnamed network'})")
    for name in CONTRACT_NAMES:
        click.echo(f"  {name:<22} {d.address(name)}")
    click.echo(f"  {'governance':<22} {d.governance}")
    click.echo(f"  {'treasury':<22} {d.treasury}")
    for key, value in asdict(d.params).items():
        unit = PARAM_OPTIONS[key][1]
        shown = format_open(value) if unit == "OPEN" else f"{value} {unit}"
        click.echo(f"  {key:<22} {shown}")
    click.echo(f"  {'start block':<22} {d.block}")
    click.echo(f"recorded in {store.path}")


@click.command(cls=ConnectedProviderCommand, short_help="Deploy the OpenLedger protocol")
@account_option()
@click.option(
    "--reuse/--fresh",
    default=True,
    show_default=True,
    help="Reuse the deployment recorded for this chain if its code is there, or deploy anew.",
)
@click.option("--governance", type=ADDRESS, help="Owner of every contract [default: deployer].")
@click.option("--treasury", type=ADDRESS, help="Receives the OPEN supply [default: deployer].")
@_param_options
def cli(
    account: Any,
    provider: Any,
    reuse: bool,
    governance: str | None,
    treasury: str | None,
    **params: Any,
) -> None:
    """Deploy the six protocol contracts (or reuse the recorded ones) and record them."""
    ctx = click.get_current_context()
    store = DeploymentStore()
    chosen = ProtocolParams(**params)
    network = provider.network_choice
    if reuse:
        protocol, deployed_now = ensure_protocol(
            account,
            store,
            governance=governance,
            treasury=treasury,
            params=chosen,
            network=network,
        )
        if not deployed_now:
            given = [
                name
                for name in ("governance", "treasury", *params)
                if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
            ]
            recorded = {
                "governance": protocol.deployment.governance.lower(),
                "treasury": protocol.deployment.treasury.lower(),
                **asdict(protocol.deployment.params),
            }
            differing = [
                name
                for name in given
                if recorded[name]
                != (
                    ctx.params[name].lower()
                    if name in ("governance", "treasury")
                    else ctx.params[name]
                )
            ]
            if differing:
                raise fail(
                    "a deployment is recorded for this chain with other "
                    + ", ".join(f"--{n.replace('_', '-')}" for n in differing)
                    + "; pass --fresh to deploy a new one"
                )
    else:
        protocol = deploy_protocol(
            account, governance=governance, treasury=treasury, params=chosen, network=network
        )
        store.save(protocol.deployment)
        deployed_now = True
    _echo_protocol(protocol, store, deployed_now)
    if deployed_now and protocol.deployment.governance.lower() != account.address.lower():
        click.echo(
            f"governance {protocol.deployment.governance} must accept ownership of each "
            "contract: ape run ol accept-governance --account <governance>"
        )
