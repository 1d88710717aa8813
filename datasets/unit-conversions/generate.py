"""Generates the unit-conversions Datanet dataset: instruction pairs whose answers are computed
exactly (``decimal``, from the exact definitions of the imperial and US customary units).

    python datasets/unit-conversions/generate.py [OUTPUT_DIR]

Deterministic: the same code writes the same bytes (a fixed seed, sorted output). Writes
``data/<kind>.jsonl`` (correct pairs, one file per kind of quantity) and
``bad/wrong-factors.jsonl`` (well-formed pairs with deliberately wrong conversion factors, for a
curator to reject). Every answer to metric from imperial is exact; the other direction is exact
when the quotient terminates, else rounded half-up to 4 decimal places and said so.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20_240_501
PLACES = 4  # decimal places of rounded answers


@dataclass(frozen=True)
class Unit:
    singular: str
    plural: str

    def name(self, value: Decimal) -> str:
        return self.singular if value == 1 else self.plural


@dataclass(frozen=True)
class Factor:
    """``1 big = factor small``, exactly, by definition."""

    big: Unit
    small: Unit
    factor: Decimal
    definition: str  # where the factor comes from


def U(singular: str, plural: str | None = None) -> Unit:  # noqa: N802 - a unit constructor
    return Unit(singular, plural or singular + "s")


# 1 yard = 0.9144 m and 1 pound = 0.45359237 kg (international yard and pound, 1959);
# 1 US gallon = 231 cubic inches = 3.785411784 L.
FACTORS: dict[str, list[Factor]] = {
    "length": [
        Factor(U("inch", "inches"), U("centimetre"), Decimal("2.54"), "1 inch = 2.54 cm"),
        Factor(U("foot", "feet"), U("metre"), Decimal("0.3048"), "1 foot = 0.3048 m"),
        Factor(U("yard"), U("metre"), Decimal("0.9144"), "1 yard = 0.9144 m"),
        Factor(U("mile"), U("kilometre"), Decimal("1.609344"), "1 mile = 1.609344 km"),
    ],
    "mass": [
        Factor(U("ounce"), U("gram"), Decimal("28.349523125"), "1 ounce = 28.349523125 g"),
        Factor(U("pound"), U("kilogram"), Decimal("0.45359237"), "1 pound = 0.45359237 kg"),
        Factor(
            U("stone", "stone"),
            U("kilogram"),
            Decimal("6.35029318"),
            "1 stone = 14 pounds = 6.35029318 kg",
        ),
    ],
    "volume": [
        Factor(U("US gallon"), U("litre"), Decimal("3.785411784"), "1 US gallon = 3.785411784 L"),
        Factor(U("US quart"), U("litre"), Decimal("0.946352946"), "1 US quart = 0.946352946 L"),
        Factor(
            U("US fluid ounce"),
            U("millilitre"),
            Decimal("29.5735295625"),
            "1 US fluid ounce = 29.5735295625 mL",
        ),
    ],
}
WRONG = [  # (right factor index in FACTORS[kind], wrong factor) for the bad file
    ("length", 3, Decimal("1.5")),
    ("length", 0, Decimal("2.5")),
    ("mass", 1, Decimal("0.5")),
    ("volume", 0, Decimal("4")),
]
PROMPTS = (
    "Convert {value} {source} to {target}.",
    "How many {target} are in {value} {source}?",
    "What is {value} {source} in {target}?",
)
COUNTS = {"length": 120, "mass": 96, "volume": 90, "temperature": 90}


def fmt(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: ``Decimal('11.2650')`` -> ``11.265``."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def divide(a: Decimal, b: Decimal) -> tuple[Decimal, bool]:
    """``a / b`` and whether it is exact (else rounded half-up to ``PLACES`` places)."""
    with localcontext() as ctx:
        ctx.prec = 60
        q = a / b
        if q * b == a and len(fmt(q).partition(".")[2]) <= 12:
            return q, True
        return q.quantize(Decimal(1).scaleb(-PLACES), rounding=ROUND_HALF_UP), False


def sample_value(rng: random.Random) -> Decimal:
    """1..500, a quarter of them with one decimal place."""
    whole = rng.randint(1, 500)
    return Decimal(whole) if rng.random() < 0.75 else Decimal(f"{whole}.{rng.randint(1, 9)}")


def answer(value: Decimal, source: Unit, result: Decimal, target: Unit, exact: bool,
           how: str) -> str:  # fmt: skip
    v, r = fmt(value), (fmt(result) if exact else f"{result:f}")
    if exact:
        return f"{v} {source.name(value)} is exactly {r} {target.name(result)} ({how})."
    return (
        f"{v} {source.name(value)} is about {r} {target.name(result)} "
        f"({how}, rounded to {PLACES} decimal places)."
    )


def conversion_pair(rng: random.Random, factor: Factor, *, wrong: Decimal | None = None) -> dict:
    """One pair converting a random value either way across ``factor``."""
    used = wrong if wrong is not None else factor.factor
    definition = factor.definition
    if wrong is not None:
        definition = f"1 {factor.big.singular} = {fmt(wrong)} {factor.definition.split()[-1]}"
    value = sample_value(rng)
    if rng.random() < 0.5:  # big -> small: an exact product
        source, target, result, exact = factor.big, factor.small, value * used, True
        how = definition
    else:
        source, target = factor.small, factor.big
        result, exact = divide(value, used)
        how = f"{fmt(value)} ÷ {fmt(used)}, since {definition}"
    prompt = rng.choice(PROMPTS).format(
        value=fmt(value), source=source.plural, target=target.plural
    )
    return {"prompt": prompt, "response": answer(value, source, result, target, exact, how)}


def temperature_pair(rng: random.Random) -> dict:
    """Celsius, Fahrenheit and kelvin: F = C * 9/5 + 32, K = C + 273.15."""
    c, f, k = (
        U("degree Celsius", "degrees Celsius"),
        U("degree Fahrenheit", "degrees Fahrenheit"),
        U("kelvin"),
    )
    value = Decimal(rng.randint(-60, 250)) if rng.random() < 0.8 else sample_value(rng)
    kind = rng.randrange(4)
    if kind == 0:
        source, target, result, exact = c, f, value * Decimal("1.8") + 32, True
        how = f"{fmt(value)} * 9/5 + 32"
    elif kind == 1:
        source, target = f, c
        result, exact = divide((value - 32) * 5, Decimal(9))
        how = f"({fmt(value)} - 32) * 5/9"
    elif kind == 2:
        source, target, result, exact = c, k, value + Decimal("273.15"), True
        how = f"{fmt(value)} + 273.15"
    else:
        value = abs(value) + 1
        source, target, result, exact = k, c, value - Decimal("273.15"), True
        how = f"{fmt(value)} - 273.15"
    prompt = rng.choice(PROMPTS).format(
        value=fmt(value), source=source.plural, target=target.plural
    )
    return {"prompt": prompt, "response": answer(value, source, result, target, exact, how)}


def generate(kind: str, rng: random.Random) -> list[dict]:
    """``COUNTS[kind]`` pairs with distinct prompts."""
    pairs: dict[str, dict] = {}
    while len(pairs) < COUNTS[kind]:
        pair = (
            temperature_pair(rng)
            if kind == "temperature"
            else conversion_pair(rng, rng.choice(FACTORS[kind]))
        )
        pairs.setdefault(pair["prompt"], pair)
    return list(pairs.values())


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def write(out: Path) -> list[Path]:
    """Writes every file under ``out``; returns their paths."""
    written = []
    for kind in COUNTS:
        rng = random.Random(f"{SEED}-{kind}")
        path = out / "data" / f"{kind}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jsonl(generate(kind, rng)))
        written.append(path)
    rng = random.Random(f"{SEED}-wrong")
    bad = [
        conversion_pair(rng, FACTORS[kind][index], wrong=wrong)
        for kind, index, wrong in WRONG
        for _ in range(5)
    ]
    path = out / "bad" / "wrong-factors.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jsonl(bad))
    written.append(path)
    return written


if __name__ == "__main__":
    for written in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        sys.stdout.write(f"wrote {written}\n")
