"""What the ape scripts share beyond the SDK and the command parameters: the deployment
recorded for the chain ape is connected to, and a click error to raise. Transactions go through
the SDK (:mod:`backend.sdk`, :meth:`Protocol.sdk`); amounts live in
:mod:`backend.protocol.amounts`, click parameters in :mod:`backend.cli.params`."""

from __future__ import annotations

import click

from backend.protocol.contracts import Protocol
from backend.protocol.deployments import DeploymentNotFoundError, DeploymentStore


def load_protocol(store: DeploymentStore | None = None) -> Protocol:
    """The deployment recorded for the connected chain, or a click error saying how to get one."""
    try:
        return Protocol.load(store)
    except DeploymentNotFoundError as why:
        raise click.ClickException(f"{why}; deploy first: ape run deploy --network ...") from None


def fail(message: str) -> click.ClickException:
    """A usage error to ``raise``: printed as ``Error: message``, exit status 1."""
    return click.ClickException(message)
