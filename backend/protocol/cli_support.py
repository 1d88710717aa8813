"""What the ape scripts (``scripts/deploy.py``, ``scripts/ol.py``) share: exact OPEN amounts,
typed click parameters, the recorded deployment, and transactions whose reverts read as the
contract's custom error (``UnknownDatanet(datanetId=7)``) instead of a traceback.
"""

from __future__ import annotations

import time
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


def chain_now() -> int:
    """Unix seconds as the next block will see them (the chain's clock can run ahead of ours)."""
    from ape import chain

    return max(int(chain.blocks.head.timestamp), int(time.time()))


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


def ensure_allowance(protocol: Protocol, owner: Any, spender: Any, amount: int) -> None:
    """Approves ``spender`` for ``amount`` OPEN wei of ``owner``'s when the allowance is lower,
    after checking that ``owner`` holds that much."""
    balance = int(protocol.token.balanceOf(owner.address))
    if balance < amount:
        raise fail(f"{owner.address} holds {format_open(balance)}, needs {format_open(amount)}")
    if int(protocol.token.allowance(owner.address, spender.address)) < amount:
        transact(
            f"approved {format_open(amount)} to {spender.address}",
            protocol.token.approve,
            spender.address,
            amount,
            sender=owner,
            protocol=protocol,
        )


def one_event(receipt: Any, event: Any) -> Any:
    """The single ``event`` log of ``receipt``."""
    logs = list(event.from_receipt(receipt))
    if len(logs) != 1:
        raise fail(f"expected one {event.name} event in {receipt.txn_hash}, found {len(logs)}")
    return logs[0]


def unique(ids: Iterable[int]) -> list[int]:
    """``ids`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(ids))


def send_challenge(protocol: Protocol, account: Any, epoch_id: int, reason_cid: str) -> Any:
    """Challenges epoch ``epoch_id`` with ``reason_cid``, approving the bond first."""
    bond = int(protocol.rewards.challengeBond())
    if bond:
        ensure_allowance(protocol, account, protocol.rewards, bond)
    return transact(
        f"challenged epoch {epoch_id} with a bond of {format_open(bond)}",
        protocol.rewards.challenge,
        epoch_id,
        reason_cid,
        sender=account,
        protocol=protocol,
    )
