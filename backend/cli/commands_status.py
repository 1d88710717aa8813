"""The read-only summary: the deployment, protocol counts and the sender's position."""

from __future__ import annotations

import click

from backend.cli.params import ADDRESS
from backend.cli.registry import command
from backend.protocol.amounts import format_open
from backend.protocol.deployments import CONTRACT_NAMES
from backend.sdk import OpenLedger


@command("status", "Summarize the deployment and the sender's position")
@click.option("--node", "channel_nodes", type=ADDRESS, multiple=True, help="Show this channel.")
def status(ol: OpenLedger, channel_nodes: tuple[str, ...]) -> None:
    """Print the deployment, protocol counts and the sender's balances, read from the chain
    (and its payment channels with each --node)."""
    d, who = ol.protocol.deployment, ol.address
    datanets, models, nodes = ol.datanets.functions, ol.models.functions, ol.nodes.functions
    payments, rewards, token = ol.payments.functions, ol.rewards.functions, ol.token.functions
    click.echo(f"chain {d.chain_id} ({d.network or 'unnamed network'}), block {ol.head()}")
    for name in CONTRACT_NAMES:
        click.echo(f"  {name:<22} {d.address(name)}")
    click.echo(f"  {'governance':<22} {datanets.owner().call()}")
    click.echo(f"  {'treasury':<22} {payments.treasury().call()}")
    click.echo(f"OPEN supply           {format_open(token.totalSupply().call())}")
    click.echo(
        f"datanets {datanets.datanetCount().call()}, "
        f"contributions {datanets.contributionCount().call()}, "
        f"models {models.modelCount().call()}, epochs {rewards.epochCount().call()}, "
        f"usage proofs {payments.usageProofCount().call()}"
    )
    node = nodes.nodeInfo(who).call()
    click.echo(f"account {who}")
    click.echo(f"  OPEN balance        {format_open(token.balanceOf(who).call())}")
    for channel_node in channel_nodes:
        ch = payments.channel(who, channel_node).call()
        pending = (
            f" (withdrawal of {format_open(ch.pendingWithdrawal)} "
            f"unlocks at {ch.withdrawalUnlockAt})"
            if int(ch.pendingWithdrawal)
            else ""
        )
        click.echo(f"  channel with {channel_node}: {format_open(ch.balance)}{pending}")
    click.echo(f"  earnings            {format_open(payments.earnings(who).call())}")
    click.echo(
        f"  stake               {format_open(node.bonded)} bonded, "
        f"{format_open(node.unbonding)} unbonding, "
        f"{'active' if nodes.isActive(who).call() else 'inactive'}"
        + (f", endpoint {node.endpoint}" if node.endpoint else "")
    )
    if int(node.heldUntil) > ol.now() or int(node.openDisputes):
        click.echo(
            f"  stake held          until {node.heldUntil} (challenge windows), "
            f"{node.openDisputes} open dispute(s)"
        )
    click.echo(
        f"  withdrawable        datanet {format_open(datanets.withdrawable(who).call())}, "
        f"rewards {format_open(rewards.withdrawable(who).call())}"
    )
