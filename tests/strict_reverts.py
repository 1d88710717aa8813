"""Makes ``ape.reverts(SomeContract.SomeError, arg=value)`` check what it says.

ape 0.8 accepts any revert when the error comes from a contract whose ABI the called contract
lacks (it cannot decode it), skips the check when the expected class is not bound to a contract
instance, and silently ignores expected arguments the error does not have. Tests here rely on
the error and its arguments being checked, so this wraps ape's check: the revert data must carry
the expected error's selector and every expected argument must exist and match.
"""

from __future__ import annotations

import ast
from typing import Any

from ape.exceptions import CustomError
from ape.pytest.contextmanagers import RevertsContextManager
from eth_abi import decode
from eth_utils import keccak, to_checksum_address

_ape_exit = RevertsContextManager.__exit__


def _normalise(value: Any) -> Any:
    if hasattr(value, "address"):
        value = value.address
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(_normalise(v) for v in value)
    return value


def _actual_inputs(expected: type[CustomError], exc: BaseException) -> dict[str, Any]:
    abi = expected.abi
    if isinstance(exc, CustomError):
        if exc.abi.selector != abi.selector:
            raise AssertionError(f"expected {abi.selector} but got {exc.abi.selector} {exc.inputs}")
        return dict(exc.inputs)
    raw = getattr(exc, "revert_message", "") or ""
    if raw.startswith("0x"):
        data = bytes.fromhex(raw[2:])
    elif raw.startswith(("b'", 'b"')):  # ape sometimes gives the repr of the raw bytes
        data = ast.literal_eval(raw)
    else:
        data = b""
    selector = keccak(text=abi.selector)[:4]
    if data[:4] != selector:
        raise AssertionError(f"expected {abi.selector} but the revert was {raw or exc!r}")
    values = decode([i.canonical_type for i in abi.inputs], data[4:])
    return {i.name: v for i, v in zip(abi.inputs, values, strict=True)}


def _strict_exit(self: RevertsContextManager, exc_type: Any, exc_value: Any, tb: Any) -> bool:
    handled = _ape_exit(self, exc_type, exc_value, tb)
    expected = self.expected_message
    if isinstance(expected, type) and issubclass(expected, CustomError):
        actual = _actual_inputs(expected, exc_value)
        wrong = []
        for name, want in self.error_inputs.items():
            if name not in actual:
                wrong.append(f"{expected.abi.selector} has no input {name!r}")
            elif _normalise(actual[name]) != _normalise(want):
                wrong.append(f"input {name!r} was {actual[name]!r}, expected {want!r}")
        if wrong:
            raise AssertionError("; ".join(wrong))
    return handled


def install() -> None:
    RevertsContextManager.__exit__ = _strict_exit  # type: ignore[method-assign]
