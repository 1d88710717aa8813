"""Contract reverts as people read them: ``UnknownDatanet(datanetId=7)`` rather than raw bytes
or a traceback. The error table comes from the ABIs this package ships, so decoding needs no
compiler and no ape."""

from __future__ import annotations

from functools import cache
from typing import Any

from eth_abi import decode
from eth_utils import is_hex_address, keccak, to_checksum_address

from backend.protocol.abi import abi
from backend.protocol.deployments import CONTRACT_NAMES

ERROR_STRING = keccak(text="Error(string)")[:4]
PANIC = keccak(text="Panic(uint256)")[:4]


def _canonical(param: dict[str, Any]) -> str:
    """An ABI parameter's canonical type (tuples spelled out, as selectors need them)."""
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@cache
def error_table() -> dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Every custom error of the six contracts by selector: (name, arg names, arg types)."""
    table = {}
    for name in CONTRACT_NAMES:
        for entry in abi(name):
            if entry.get("type") != "error":
                continue
            types = tuple(_canonical(i) for i in entry["inputs"])
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            table[selector] = (entry["name"], tuple(i["name"] for i in entry["inputs"]), types)
    return table


def format_value(value: Any) -> str:
    """An error argument as written: bytes in hex, addresses checksummed."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and is_hex_address(value):
        return to_checksum_address(value)
    return str(value)


def decode_revert(data: bytes) -> str | None:
    """Revert data as ``ErrorName(arg=value, ...)``, a reason string or a panic code; None
    when no contract of the protocol declares it."""
    selector, body = data[:4], data[4:]
    try:
        if selector == ERROR_STRING:
            return str(decode(["string"], body)[0])
        if selector == PANIC:
            return f"Panic(0x{decode(['uint256'], body)[0]:02x})"
    except Exception:  # malformed standard error: fall through to the raw data
        return None
    known = error_table().get(selector)
    if known is None:
        return None
    name, names, types = known
    try:
        values = decode(list(types), body)
    except Exception:  # undecodable arguments: the name and the raw data
        return f"{name}(0x{body.hex()})"
    args = ", ".join(f"{n}={format_value(v)}" for n, v in zip(names, values, strict=True))
    return f"{name}({args})"


def _hex_bytes(value: Any) -> bytes | None:
    if isinstance(value, bytes | bytearray) and len(value) >= 4:
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x") and len(value) >= 10:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


def revert_data(err: BaseException) -> bytes | None:
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


def describe_revert(err: BaseException) -> str:
    """A revert as ``ErrorName(arg=value, ...)``, or its reason string, or the error's text."""
    data = revert_data(err)
    if data is not None and (decoded := decode_revert(data)) is not None:
        return decoded
    message = str(getattr(err, "revert_message", None) or getattr(err, "message", None) or err)
    return message.strip() or type(err).__name__
