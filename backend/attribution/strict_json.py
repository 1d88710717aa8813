"""Strict reading of attribution JSON (records, index manifests): exactly the keys expected,
integers that are integers; errors name the field, raised as the caller's error type."""

from __future__ import annotations

from typing import Any


def exact_object(value: Any, keys: set[str], what: str, error: type[Exception]) -> dict[str, Any]:
    """``value`` if it is an object with exactly ``keys``; else ``error`` naming ``what``."""
    if not isinstance(value, dict) or set(value) != keys:
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise error(f"{what} must be an object with keys {sorted(keys)}, not {found}")
    return value


def uint(value: Any, what: str, error: type[Exception]) -> int:
    """``value`` if it is a non-negative integer (not a bool); else ``error``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise error(f"{what} must be a non-negative integer, not {value!r}")
    return value
