"""The demo dataset: reproducible from its generator, valid for its Datanet, and every answer
in ``data/`` correct by an independent computation (exact fractions), every one in ``bad/``
wrong."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from backend.datanets.formats import DataFormat, DatanetMetadata, validate_contribution

DATASET = Path(__file__).resolve().parents[2] / "datasets" / "unit-conversions"
GOOD = sorted((DATASET / "data").glob("*.jsonl"))
BAD = DATASET / "bad" / "wrong-factors.jsonl"
# Each unit in its SI-ish base (metre, kilogram, litre), from the legal definitions.
INCH = Fraction("0.0254")
POUND = Fraction("0.45359237")
GALLON = 231 * INCH**3 * 1000  # litres
BASE = {
    "centimetre": Fraction(1, 100), "metre": Fraction(1), "kilometre": Fraction(1000),
    "inch": INCH, "foot": 12 * INCH, "yard": 36 * INCH, "mile": 63_360 * INCH,
    "gram": Fraction(1, 1000), "kilogram": Fraction(1), "pound": POUND,
    "ounce": POUND / 16, "stone": 14 * POUND,
    "litre": Fraction(1), "millilitre": Fraction(1, 1000), "US gallon": GALLON,
    "US quart": GALLON / 4, "US fluid ounce": GALLON / 128,
}  # fmt: skip
PLURALS = {"inches": "inch", "feet": "foot", "stone": "stone", "kelvins": "kelvin"}
ANSWER = re.compile(
    r"^(?P<value>-?[\d.]+) (?P<source>.+?) is (?P<how>exactly|about) (?P<result>-?[\d.]+) "
    r"(?P<target>.+?) \("
)


def unit(name: str) -> str:
    name = name.removeprefix("degrees ").removeprefix("degree ")
    return PLURALS.get(name, name[:-1] if name.endswith("s") and name[:-1] in BASE else name)


def to_kelvin(value: Fraction, name: str) -> Fraction:
    if name == "Celsius":
        return value + Fraction("273.15")
    if name == "Fahrenheit":
        return (value - 32) * Fraction(5, 9) + Fraction("273.15")
    assert name == "kelvin", name
    return value


def is_correct(record: dict) -> bool:
    """Whether the response converts the prompt's quantity correctly (exact, or rounded to
    4 places when it says 'about')."""
    match = ANSWER.match(record["response"])
    assert match, record
    value, result = Fraction(match["value"]), Fraction(match["result"])
    source, target = unit(match["source"]), unit(match["target"])
    assert f"{match['value']} " in record["prompt"], record
    if source in BASE:
        expected = value * BASE[source] / BASE[target]
    else:
        kelvin = to_kelvin(value, source)
        expected = kelvin if target == "kelvin" else kelvin - Fraction("273.15")
        if target == "Fahrenheit":
            expected = expected * Fraction(9, 5) + 32
    if match["how"] == "exactly":
        return result == expected
    places = len(match["result"].partition(".")[2])
    return places == 4 and abs(result - expected) <= Fraction(1, 2 * 10**4)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(DATASET / "generate.py"), str(tmp_path)], check=True, timeout=60
    )
    for path in [*GOOD, BAD]:
        assert (tmp_path / path.relative_to(DATASET)).read_bytes() == path.read_bytes(), path


def test_metadata_and_files_are_valid_for_the_datanet() -> None:
    meta = DatanetMetadata.from_json((DATASET / "metadata.json").read_bytes())
    assert (meta.format, meta.license) == (DataFormat.INSTRUCTION, "CC0-1.0")
    assert "CC0-1.0" in (DATASET / "README.md").read_text()
    counts = [validate_contribution(meta, p.read_bytes()) for p in [*GOOD, BAD]]
    assert sum(counts[:-1]) >= 300 and len(GOOD) >= 3
    prompts = [r["prompt"] for p in GOOD for r in records(p)]
    assert len(prompts) == len(set(prompts))


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_answer_is_correct(path: Path) -> None:
    wrong = [r for r in records(path) if not is_correct(r)]
    assert not wrong, wrong[:3]


def test_every_answer_of_the_bad_file_is_wrong() -> None:
    assert not [r for r in records(BAD) if is_correct(r)]
