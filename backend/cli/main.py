"""``openledger``: the protocol's commands over plain web3, for any chain with a recorded
deployment. The same commands as ``ape run ol`` (:mod:`backend.cli.registry`), without ape's
start-up: a read answers in well under a second.

    openledger status --account TEST::1
    openledger contribute 1 bafkrei... 1000 --account TEST::5 --rpc http://127.0.0.1:8545

``--account`` is ``TEST::n`` (the public test mnemonic, for dev chains), an address the RPC
node unlocks, a keystore file or an ape account alias (``~/.ape/accounts/NAME.json``, unlocked
with ``--password-file``), or a private key; ``OPENLEDGER_ACCOUNT`` and ``OPENLEDGER_RPC``
give defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from backend.cli.registry import CommandSpec, all_commands, echo_sent
from backend.protocol.deployments import DeploymentNotFoundError
from backend.protocol.web3_protocol import ChainMismatchError
from backend.sdk import OpenLedger, SignerError, resolve_signer

DEFAULT_RPC = "http://127.0.0.1:8545"  # anvil's, and `make up`'s


def _connection_params() -> list[click.Parameter]:
    return [
        click.Option(
            ["--rpc"],
            envvar="OPENLEDGER_RPC",
            default=DEFAULT_RPC,
            show_default=True,
            help="JSON-RPC URL of the chain [env OPENLEDGER_RPC].",
        ),
        click.Option(
            ["--account"],
            envvar="OPENLEDGER_ACCOUNT",
            required=True,
            help="TEST::n, an unlocked address, a keystore file or ape alias, or a private key"
            " [env OPENLEDGER_ACCOUNT].",
        ),
        click.Option(
            ["--password-file"],
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="The keystore's password, in a file.",
        ),
    ]


def connect(rpc: str, account: str, password_file: Path | None) -> OpenLedger:
    """The SDK on the deployment recorded for the chain at ``rpc``, as ``account``."""
    password = password_file.read_text().rstrip("\n") if password_file else None
    try:
        return OpenLedger.connect(
            rpc, lambda w3: resolve_signer(w3, account, password=password), on_sent=echo_sent
        )
    except DeploymentNotFoundError as why:
        raise click.ClickException(f"{why}; deploy first: ape run deploy (or make demo)") from None
    except (ConnectionError, ChainMismatchError, SignerError) as why:
        raise click.ClickException(str(why)) from None


def _bind(spec: CommandSpec) -> click.Command:
    def callback(rpc: str, account: str, password_file: Path | None, **params: Any) -> None:
        spec.run(connect(rpc, account, password_file), **params)

    return click.Command(
        spec.name,
        callback=callback,
        params=[*spec.params, *_connection_params()],
        help=spec.help,
        short_help=spec.short_help,
    )


@click.group()
@click.version_option(package_name="openledger")
def cli() -> None:
    """OpenLedger protocol actions: Datanets, models, nodes, payments and attribution rewards."""


for _spec in all_commands():
    cli.add_command(_bind(_spec))


def main() -> None:
    cli()
