"""Strict reading of the JSON ModelFactory writes (training manifests and their import
records): objects with exactly the keys expected, integers that are integers, sha256 digests;
errors name the field and are raised as the caller's error type."""

from __future__ import annotations

import re
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_uint(value: Any) -> bool:
    """A non-negative integer (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_sha256(value: Any) -> bool:
    """A sha256 digest as 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def exact_keys(value: Any, keys: set[str], what: str, error: type[Exception]) -> dict[str, Any]:
    """``value`` if it is an object with exactly ``keys``; else ``error`` naming ``what`` and
    the keys missing or unknown."""
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    if set(value) != keys:
        missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
        raise error(f"{what}: missing {missing}, unknown {extra}")
    return value
