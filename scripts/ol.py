"""OpenLedger from the command line under ape: one command per protocol action, on any ape
network and with any ape account (keyfile, hardware wallet, test account).

    ape run ol create-datanet bafy...meta --bond 1.5 --network ethereum:local:foundry \
        --account TEST::0
    ape run ol status --network ethereum:local:foundry --account TEST::0

The commands are written once (:mod:`backend.cli.registry`) over the SDK
(:mod:`backend.sdk`); the ``openledger`` console script serves the same ones over plain web3
and starts faster. Amounts are OPEN with up to 18 decimals (``1.5``) or wei (``1500wei``);
every transaction is simulated first and a refusal prints as the contract's custom error.
"""

from __future__ import annotations

from typing import Any

import click
from ape.cli import ConnectedProviderCommand, account_option

from backend.cli.registry import CommandSpec, all_commands, echo_sent
from backend.protocol.cli_support import load_protocol
from backend.sdk import OpenLedger


@click.group()
def cli() -> None:
    """OpenLedger protocol actions: Datanets, models, nodes, payments and attribution rewards."""


def connect(account: Any) -> OpenLedger:
    """The SDK over ape's connection to the deployment recorded for its chain, as ``account``."""
    return load_protocol().sdk(account, on_sent=echo_sent)


def _bind(spec: CommandSpec) -> None:
    def callback(account: Any, **params: Any) -> None:
        spec.run(connect(account), **params)

    callback.__doc__ = spec.help
    cli.command(
        spec.name, cls=ConnectedProviderCommand, short_help=spec.short_help, params=[*spec.params]
    )(account_option()(callback))


for _spec in all_commands():
    _bind(_spec)
