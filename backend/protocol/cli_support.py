"""What the ape scripts that send through ape's contract objects share (``scripts/deploy.py``,
``datanet.py``, ``modelfactory.py``): the recorded deployment, and transactions simulated first
whose reverts read as the contract's custom error (``UnknownDatanet(datanetId=7)``) instead of
a traceback. The protocol's one-action commands go through the SDK instead (:mod:`backend.sdk`);
amounts and click parameters are re-exported from :mod:`backend.protocol.amounts` and
:mod:`backend.cli.params`, where they live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

from backend.cli.params import (  # noqa: F401  (re-exported: the scripts' one import)
    ADDRESS,
    AMOUNT,
    AMOUNT_OR_ZERO,
    BYTES32,
    CID,
    ID,
    IDS,
    AddressType,
    AmountType,
    Bytes32Type,
    CIDType,
    IdListType,
)
from backend.protocol.amounts import OPEN, UINT256_MAX, format_open, parse_amount  # noqa: F401
from backend.protocol.contracts import Protocol
from backend.protocol.deployments import DeploymentNotFoundError, DeploymentStore
from backend.sdk.reverts import describe_revert as sdk_describe_revert
from backend.sdk.reverts import format_value

ZERO_BYTES32 = b"\x00" * 32


# --- chain access ----------------------------------------------------------------------------


def load_protocol(store: DeploymentStore | None = None) -> Protocol:
    """The deployment recorded for the connected chain, or a click error saying how to get one."""
    try:
        return Protocol.load(store)
    except DeploymentNotFoundError as why:
        raise click.ClickException(f"{why}; deploy first: ape run deploy --network ...") from None


def fail(message: str) -> click.ClickException:
    """A usage error to ``raise``: printed as ``Error: message``, exit status 1."""
    return click.ClickException(message)


def describe_revert(err: Exception, protocol: Protocol | None = None) -> str:
    """A contract revert as ``ErrorName(arg=value, ...)``, or its reason string (``protocol``
    is unused: the shipped ABIs name every error)."""
    from ape.exceptions import CustomError

    if isinstance(err, CustomError):
        args = ", ".join(f"{k}={format_value(v)}" for k, v in err.inputs.items())
        return f"{err.name}({args})"
    return sdk_describe_revert(err)


def preflight(method: Any, *args: Any, sender: Any, protocol: Protocol | None = None) -> None:
    """Runs ``method(*args)`` as a call from ``sender`` against the next block; raises the
    decoded revert as a click error. Nothing is sent, so a failing command costs no gas."""
    from ape import networks
    from web3.exceptions import ContractLogicError as Web3ContractLogicError

    contract = method.contract
    call = {"from": sender.address, "to": contract.address, "data": method.encode_input(*args)}
    try:
        networks.provider.web3.eth.call(call, "pending")
    except Web3ContractLogicError as err:
        raise fail(describe_revert(err, protocol)) from None


def transact(
    action: str,
    method: Callable[..., Any],
    *args: Any,
    sender: Any,
    protocol: Protocol | None = None,
) -> Any:
    """Sends ``method(*args)`` from ``sender``; echoes ``action`` and the transaction hash.

    The transaction is simulated first; a revert, then or when sent, becomes a click error
    naming the contract's custom error and its arguments.
    """
    from ape.exceptions import ContractLogicError, TransactionError

    try:
        preflight(method, *args, sender=sender, protocol=protocol)
    except click.ClickException as err:
        raise fail(f"{action} would revert: {err.message}") from None
    try:
        receipt = method(*args, sender=sender)
    except ContractLogicError as err:
        raise fail(f"{action} reverted: {describe_revert(err, protocol)}") from None
    except TransactionError as err:
        raise fail(f"{action} failed: {describe_revert(err, protocol)}") from None
    click.echo(f"{action}: tx {receipt.txn_hash}")
    return receipt


def unique(ids: Iterable[int]) -> list[int]:
    """``ids`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(ids))
