"""Exact amounts of OPEN: parsed from what people type (``1.5``, ``15wei``) and written back
without rounding. Never float: a wei lost in a conversion is a wei lost to someone."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

OPEN = 10**18  # wei per OPEN
UINT96_MAX = 2**96 - 1  # bonds and prices are uint96 on-chain
UINT256_MAX = 2**256 - 1
INT64_MAX = 2**63 - 1  # the largest id or seed kept anywhere off-chain (SQLite, torch seeds)


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
