"""The command line's typed parameters: amounts of OPEN, addresses, hashes, CIDs, ids and
timestamps, each refused with a message that names what is wrong before anything is sent."""

from __future__ import annotations

from typing import Any

import click
from eth_utils import is_hex_address, to_checksum_address

from backend.protocol.amounts import UINT96_MAX, format_open, parse_amount
from backend.storage.open import STORE_ENV, default_store_spec


class AmountType(click.ParamType):
    """An amount of OPEN (``1.5``) or of wei (``15wei``), converted to OPEN wei."""

    name = "amount"

    def __init__(self, *, positive: bool = True, maximum: int | None = None) -> None:
        self.positive = positive
        self.maximum = maximum  # the on-chain type's largest value (uint96 bonds and prices)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            wei = parse_amount(str(value))
        except ValueError as why:
            self.fail(f"{why}; give OPEN such as 1.5, or wei such as 1500wei", param, ctx)
        if self.positive and wei == 0:
            self.fail(f"{value!r} is zero; a positive amount is needed", param, ctx)
        if self.maximum is not None and wei > self.maximum:
            self.fail(f"{format_open(wei)} is above the largest allowed here (uint96)", param, ctx)
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


def unique_ids(groups: tuple[list[int], ...]) -> list[int]:
    """The ids of a repeatable :data:`IDS` option (``--approve 1,2 --approve 3``), each once,
    in the order given."""
    return list(dict.fromkeys(i for group in groups for i in group))


AMOUNT = AmountType()
AMOUNT_OR_ZERO = AmountType(positive=False)
ADDRESS = AddressType()
BYTES32 = Bytes32Type()
CID = CIDType()
IDS = IdListType()
ID = click.IntRange(min=1)
UINT96_AMOUNT = AmountType(positive=False, maximum=UINT96_MAX)  # bonds and prices
UINT64 = click.IntRange(min=0, max=2**64 - 1)
BPS = click.IntRange(min=0, max=10_000)


def timestamp_option(name: str, relative: str, what: str, default_in: int) -> Any:
    """``--<relative> SECONDS`` (from now, default ``default_in``) or ``--<name> TIMESTAMP``."""

    def decorate(f: Any) -> Any:
        f = click.option(
            f"--{name}",
            type=click.IntRange(min=1),
            help=f"The {what} as a unix timestamp (instead of --{relative}).",
        )(f)
        return click.option(
            f"--{relative}",
            type=click.IntRange(min=1),
            help=f"Seconds from now to the {what}  [default: {default_in}].",
        )(f)

    return decorate


def resolve_timestamp(
    absolute: int | None, relative: int | None, default_in: int, what: str, now: int
) -> int:
    """The timestamp a :func:`timestamp_option` pair gives, ``now`` being the chain's time."""
    if absolute is not None and relative is not None:
        raise click.UsageError(f"give the {what} as a timestamp or as seconds from now, not both")
    if absolute is not None:
        if absolute <= now:
            raise click.ClickException(f"the {what} {absolute} is not in the future (now is {now})")
        return absolute
    return now + (relative if relative is not None else default_in)


def store_option(f: Any) -> Any:
    """``--store`` (or ``OPENLEDGER_STORE``): where a command reads and writes content."""
    return click.option(
        "--store",
        "store_spec",
        default=default_store_spec,
        envvar=STORE_ENV,
        show_default=".data/devnet/store",
        help="Content store: a directory, or an IPFS HTTP RPC API (http://127.0.0.1:5001).",
    )(f)
