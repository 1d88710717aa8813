"""The attribution record: canonical bytes, a digest that moves with every field, strict
parsing."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from backend.attribution.record import (
    AttributionRecord,
    ContributionRecord,
    RecordError,
    SpanRecord,
)

RECORD = AttributionRecord(
    model_id=3,
    version=2,
    index="bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
    prompt_hash=b"\x01" * 32,
    answer_hash=b"\x02" * 32,
    answer_tokens=9,
    spans=(SpanRecord(0, 4, 2, (5, 7)), SpanRecord(3, 2, 80, ())),
    covered_weight=12,
    total_weight=16,
    query_sketch=np.array([1, -2, 32767], dtype="<i2").tobytes(),
    contributions=(
        ContributionRecord(1, 4, "0x" + "ab" * 20, 2520 * 12, 2**60, 900_000),
        ContributionRecord(1, 9, "0x" + "CD" * 20, 0, -7, 0),
    ),
    span_mass=750_000,
    gradient_mass=250_000,
    unattributed=0,
    tail=100_000,
)


def test_record_bytes_are_canonical_and_round_trip() -> None:
    raw = RECORD.to_bytes()
    assert raw.endswith(b"}\n") and b" " not in raw
    again = AttributionRecord.from_json(raw)
    assert again.to_bytes() == raw and again.digest() == RECORD.digest()
    assert len(RECORD.digest()) == 32
    assert again.sketch_array().tolist() == [1, -2, 32767]
    # big scores travel as decimal strings (JavaScript numbers lose them past 2^53)
    assert json.loads(raw)["contributions"][0]["gradient_score"] == str(2**60)


@pytest.mark.parametrize(
    "change",
    [
        {"version": 3},
        {"answer_hash": b"\x03" * 32},
        {"spans": (SpanRecord(0, 4, 2, (5,)),)},
        {"query_sketch": np.array([1, -2, 32766], dtype="<i2").tobytes()},
        {"query_sketch": None},
        {"unattributed": 1, "tail": 99_999},
    ],
)
def test_every_field_moves_the_digest(change: dict) -> None:
    assert replace(RECORD, **change).digest() != RECORD.digest()


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: d.update(schema=2), "schema 2"),
        (lambda d: d.pop("spans"), "must be an object with keys"),
        (lambda d: d["model"].update(id=-1), "model.id must be a non-negative integer"),
        (lambda d: d.update(prompt_hash="0x12"), "prompt_hash must be 0x and 64 hex digits"),
        (lambda d: d["spans"][0].update(documents=[1, "2"]), r"spans\[0\].documents"),
        (lambda d: d.update(query_sketch="***"), "query_sketch is not base64"),
        (lambda d: d.update(query_sketch="AA=="), "whole int16 values"),
        (lambda d: d["contributions"][0].update(contributor="me"), "is not an address"),
        (lambda d: d["contributions"][1].update(gradient_score="-07"), "not in canonical form"),
        (lambda d: d["contributions"][0].update(span_score=5), "must be a decimal string"),
        (lambda d: d["masses"].pop("tail"), "masses must be an object"),
    ],
)
def test_malformed_records_are_refused_by_field(mutate, error: str) -> None:
    data = RECORD.to_json()
    mutate(data)
    with pytest.raises(RecordError, match=error):
        AttributionRecord.from_json(data)


def test_non_json_is_refused() -> None:
    with pytest.raises(RecordError, match="not JSON"):
        AttributionRecord.from_json(b"{")
