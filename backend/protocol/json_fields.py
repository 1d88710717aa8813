"""Strict reading of JSON that must be exactly what was written (training manifests, import
records, signed feedback, payment headers): objects with exactly the keys expected, integers
that are integers, sha256 digests; errors name the field and are raised as the caller's
error type."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_uint(value: Any) -> bool:
    """A non-negative integer (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_sha256(value: Any) -> bool:
    """A sha256 digest as 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def exact_keys(
    value: Any, keys: Iterable[str], what: str, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """``value`` if it is an object with exactly ``keys``; else ``error`` naming ``what`` and
    the fields it lacks or does not know."""
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {type(value).__name__}")
    names = sorted(keys) if isinstance(keys, set | frozenset) else list(keys)  # stable messages
    missing = [k for k in names if k not in value]
    if missing:
        raise error(f"{what} lacks field(s) {', '.join(missing)}")
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise error(f"{what} has unknown field(s) {', '.join(unknown)}")
    return value
