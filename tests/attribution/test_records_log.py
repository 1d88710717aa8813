"""The attribution records log: one canonical record (or null) per receipt, read back exactly,
bad lines named; a spans-only line checked against its receipt's digest."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_utils import keccak

from backend.attribution.record import AttributionRecord, ContributionRecord, SpanRecord
from backend.attribution.records_log import (
    RecordsLogError,
    parse_records_log,
    records_log,
    verify_record,
)
from backend.protocol.receipts import Receipt

PAYER = "0x" + "ab" * 20
NODE = "0x" + "cd" * 20
CONTRIBUTOR = "0x" + "0a" * 20


def spans_only(n: int) -> AttributionRecord:
    return AttributionRecord(
        model_id=3, version=1, index="bafkreiindex", prompt_hash=keccak(text=f"prompt {n}"),
        answer_hash=keccak(text=f"answer {n}"), answer_tokens=5,
        spans=(SpanRecord(0, 3, 2, (1, 4)),), covered_weight=6, total_weight=9,
        query_sketch=None,
        contributions=(ContributionRecord(1, 2, CONTRIBUTOR, 6 * 2520, 0, 666_666),),
        span_mass=666_666, gradient_mass=0, unattributed=333_334, tail=0,
    )  # fmt: skip


def receipt(digest: bytes, model_id: int = 3) -> Receipt:
    return Receipt(keccak(text="r"), PAYER, NODE, model_id, 1, 4, 5, 10, keccak(text="o"),
                   digest, 100, 1_700_000_000)  # fmt: skip


def test_the_log_round_trips_one_line_per_receipt() -> None:
    records = [spans_only(1), None, spans_only(2)]
    data = records_log(records)
    assert data.count(b"\n") == 3 and data.splitlines()[1] == b"null"
    assert data.splitlines()[0] + b"\n" == spans_only(1).to_bytes()
    parsed = parse_records_log(data)
    assert [r and r.to_bytes() for r in parsed] == [r and r.to_bytes() for r in records]
    assert records_log(parsed) == data


def test_a_bad_line_is_named() -> None:
    data = records_log([spans_only(1)]) + b'{"schema":1}\n'
    with pytest.raises(RecordsLogError, match=r"^log X line 2: "):
        parse_records_log(data, "log X")
    with pytest.raises(RecordsLogError, match="line 1"):
        parse_records_log(b"{not json\n")


def test_a_spans_only_line_verifies_by_digest_and_anything_else_is_named() -> None:
    record = spans_only(1)
    assert verify_record(receipt(record.digest()), record) == record
    assert verify_record(receipt(bytes(32)), None) is None
    named = f"receipt 0x{keccak(text='r').hex()}"
    with pytest.raises(RecordsLogError, match=f"^{named} commits to attribution digest"):
        verify_record(receipt(record.digest()), replace(record, covered_weight=7))
    with pytest.raises(RecordsLogError, match="its line is null"):
        verify_record(receipt(record.digest()), None)
    with pytest.raises(RecordsLogError, match="no attribution digest but a record"):
        verify_record(receipt(bytes(32)), record)
    with pytest.raises(RecordsLogError, match="is of model 4 version 1; its record of model 3"):
        verify_record(receipt(record.digest(), model_id=4), record)
