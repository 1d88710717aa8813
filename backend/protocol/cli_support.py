"""What the ape scripts (``scripts/deploy.py``, ``scripts/ol.py``) share: exact OPEN amounts,
typed click parameters, the recorded deployment, and transactions whose reverts read as the
contract's custom error (``UnknownDatanet(datanetId=7)``) instead of a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

import click
from eth_abi import decode
from eth_utils import is_hex_address, keccak, to_checksum_address

from backend.protocol.contracts import Protocol
from backend.protocol.deployments import DeploymentNotFoundError, DeploymentStore

OPEN = 10**18  # wei per OPEN
UINT256_MAX = 2**256 - 1
ZERO_BYTES32 = b"\x00" * 32


# --- amounts ---------------------------------------------------------------------------------


def parse_amount(text: str) -> int:
    """OPEN wei of ``text``: OPEN with up to 18 decimals (``"1.5"``), or wei (``"15wei"``).

    Exact (``Decimal``, never float). Raises ``ValueError`` naming what is wrong.
    """
    raw = text.strip().replace("_", "")
    lowered = raw.lower()
    unit, scale = ("wei", 1) if lowered.endswith("wei") else ("OPEN", OPEN)
    if lowered.endswith("wei"):
        raw = raw[:-3].strip()
    elif lowered.endswith("open"):
        raw = raw[:-4].strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of {unit}") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite amount")
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    if value.adjusted() > 78:  # more digits than any uint256 holds
        raise ValueError(f"{text!r} is larger than any amount of OPEN")
    with localcontext() as ctx:
        ctx.prec = 200  # exact: at most 79 integer digits plus 18 decimals
        wei = value * scale
    if wei != wei.to_integral_value():
        limit = "whole wei" if unit == "wei" else "at most 18 decimals"
        raise ValueError(f"{text!r} is not a whole number of wei ({unit} takes {limit})")
    if wei > UINT256_MAX:
        raise ValueError(f"{text!r} is larger than any amount of OPEN")
    return int(wei)


def format_open(wei: int) -> str:
    """``wei`` as OPEN, exactly, without trailing zeros: ``1500000000000000000`` -> ``1.5 OPEN``."""
    with localcontext() as ctx:
        ctx.prec = 200
        text = f"{Decimal(int(wei)).scaleb(-18):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} OPEN"


# --- click parameter types -------------------------------------------------------------------


class AmountType(click.ParamType):
    """An amount of OPEN (``1.5``) or of wei (``15wei``), converted to OPEN wei."""

    name = "amount"

    def __init__(self, *, positive: bool = True) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            wei = parse_amount(str(value))
        except ValueError as why:
            self.fail(f"{why}; give OPEN such as 1.5, or wei such as 1500wei", param, ctx)
        if self.positive and wei == 0:
            self.fail(f"{value!r} is zero; a positive amount is needed", param, ctx)
        return wei


class AddressType(click.ParamType):
    """A 20-byte hex address, checksummed."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not is_hex_address(text):
            self.fail(f"{text!r} is not an address (0x and 40 hex digits)", param, ctx)
        return to_checksum_address(text)


class Bytes32Type(click.ParamType):
    """A 32-byte hex value (Merkle roots, proof hashes)."""

    name = "bytes32"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> bytes:
        if isinstance(value, bytes) and len(value) == 32:
            return value
        text = str(value).strip()
        digits = text.removeprefix("0x").removeprefix("0X")
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = b""
        if len(raw) != 32 or len(digits) != 64:
            self.fail(f"{text!r} is not 32 bytes of hex (0x and 64 hex digits)", param, ctx)
        return raw


class CIDType(click.ParamType):
    """A content identifier: any non-empty text without spaces."""

    name = "cid"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not text or any(c.isspace() for c in text):
            self.fail(f"{value!r} is not a CID (non-empty, no spaces)", param, ctx)
        return text


class IdListType(click.ParamType):
    """Positive integer ids, comma-separated (``1,2,3``); the option may also be repeated."""

    name = "ids"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list):
            return value
        ids: list[int] = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or int(part) == 0:
                self.fail(f"{part!r} is not a positive integer id", param, ctx)
            ids.append(int(part))
        return ids


AMOUNT = AmountType()
AMOUNT_OR_ZERO = AmountType(positive=False)
ADDRESS = AddressType()
BYTES32 = Bytes32Type()
CID = CIDType()
IDS = IdListType()
ID = click.IntRange(min=1)


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


def _error_abis(protocol: Protocol) -> dict[bytes, Any]:
    """Every custom error of the six contracts, by 4-byte selector."""
    errors: dict[bytes, Any] = {}
    for contract in (
        protocol.token,
        protocol.datanets,
        protocol.models,
        protocol.nodes,
        protocol.rewards,
        protocol.payments,
    ):
        for abi in contract.contract_type.errors:
            errors[keccak(text=abi.selector)[:4]] = abi
    return errors


def _hex_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray) and len(value) >= 4:
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x") and len(value) >= 10:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


def _revert_data(err: Exception) -> bytes | None:
    """The raw revert data carried by ``err`` (or an exception it wraps), if any."""
    seen: set[int] = set()
    current: Any = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (getattr(current, "data", None), *getattr(current, "args", ())):
            if isinstance(candidate, dict):
                candidate = candidate.get("data")
            if (data := _hex_bytes(candidate)) is not None:
                return data
        current = getattr(current, "base_err", None) or current.__cause__
    return None


def _format_value(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


ERROR_STRING = keccak(text="Error(string)")[:4]
PANIC = keccak(text="Panic(uint256)")[:4]


def decode_revert(data: bytes, protocol: Protocol | None = None) -> str | None:
    """Revert data as ``ErrorName(arg=value, ...)``, a reason string or a panic code."""
    selector, body = data[:4], data[4:]
    try:
        if selector == ERROR_STRING:
            return str(decode(["string"], body)[0])
        if selector == PANIC:
            return f"Panic(0x{decode(['uint256'], body)[0]:02x})"
    except Exception:  # malformed standard error: fall through to the raw data
        return None
    abi = _error_abis(protocol).get(selector) if protocol is not None else None
    if abi is None:
        return None
    try:
        values = decode([i.canonical_type for i in abi.inputs], body)
    except Exception:  # undecodable arguments: the name and the raw data
        return f"{abi.name}(0x{body.hex()})"
    args = ", ".join(
        f"{i.name}={_format_value(v)}" for i, v in zip(abi.inputs, values, strict=True)
    )
    return f"{abi.name}({args})"


def describe_revert(err: Exception, protocol: Protocol | None = None) -> str:
    """A contract revert as ``ErrorName(arg=value, ...)``, or its reason string."""
    from ape.exceptions import CustomError

    if isinstance(err, CustomError):
        args = ", ".join(f"{k}={_format_value(v)}" for k, v in err.inputs.items())
        return f"{err.name}({args})"
    data = _revert_data(err)
    if data is not None and (decoded := decode_revert(data, protocol)) is not None:
        return decoded
    message = str(getattr(err, "revert_message", None) or getattr(err, "message", None) or err)
    return message.strip() or type(err).__name__


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
