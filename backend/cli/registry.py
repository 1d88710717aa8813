"""The protocol's commands, written once over the SDK (:class:`backend.sdk.OpenLedger`) and
served two ways: ``ape run ol ...`` (any ape network and account, ``scripts/ol.py``) and the
``openledger`` console script over plain web3 (:mod:`backend.cli.main`), which starts in a
fraction of the time.

A command parses its input, calls one SDK method and prints what the chain recorded. It checks
nothing the contracts check: the SDK simulates every transaction and a refusal prints as the
contract's custom error (``would revert: NotCurator(datanetId=1, caller=0x...)``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import click

from backend.sdk import OpenLedger, ProtocolError, SignerError

MODULES = ("datanets", "payments", "rewards", "status")  # backend/cli/commands_<name>.py


@dataclass(frozen=True)
class CommandSpec:
    """A command as written here; each front end binds it to its own way of connecting."""

    name: str
    short_help: str
    callback: Callable[..., None]  # (ol: OpenLedger, **parameters)
    params: tuple[click.Parameter, ...]
    help: str | None

    def run(self, ol: OpenLedger, **params: object) -> None:
        """Runs the command; what the SDK refuses becomes ``Error: <why>``, exit status 1."""
        try:
            self.callback(ol, **params)
        except (ProtocolError, SignerError) as why:
            raise click.ClickException(str(why)) from None


_COMMANDS: list[CommandSpec] = []


def command(name: str, short_help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Registers a command; its click parameters come from the decorators below this one."""

    def decorate(f: Callable[..., None]) -> Callable[..., None]:
        params = tuple(reversed(getattr(f, "__click_params__", [])))
        _COMMANDS.append(CommandSpec(name, short_help, f, params, inspect.getdoc(f)))
        return f

    return decorate


def all_commands() -> list[CommandSpec]:
    """Every command, in the order ``--help`` lists them."""
    for name in MODULES:
        importlib.import_module(f"backend.cli.commands_{name}")
    return list(_COMMANDS)


def echo_sent(action: str, tx_hash: str) -> None:
    """How a command line reports each transaction: what it did and its hash."""
    click.echo(f"{action}: tx {tx_hash}")
