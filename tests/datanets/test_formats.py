"""Datanet metadata and contribution validation: bad files are refused with line and reason."""

from __future__ import annotations

import json

import pytest

from backend.datanets.formats import (
    ContributionFormatError,
    DataFormat,
    DatanetMetadata,
    MetadataError,
    validate_contribution,
)


def meta(fmt: DataFormat, max_file_bytes: int = 10_000) -> DatanetMetadata:
    return DatanetMetadata("d", "a Datanet", "CC-BY-4.0", fmt, max_file_bytes)


def jsonl(*records: object) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode() + b"\n"


def test_metadata_round_trips_canonically():
    m = meta(DataFormat.CHAT)
    raw = m.to_json_bytes()
    assert DatanetMetadata.from_json(raw) == m
    assert raw == DatanetMetadata.from_json(json.loads(raw)).to_json_bytes()
    assert b", " not in raw and b": " not in raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"name": "x"}', "lacks description, license, format"),
        (b'{"name":"x","description":"y","license":"z","format":"csv"}', "unknown data format"),
        (b'{"name":"x","description":"y","license":"z","format":"text","max_file_bytes":0}',
         "positive integer"),
        (b'{"name":"x","description":"y","license":"z","format":"text","colour":"red"}',
         "unknown fields: colour"),
        (b'{"name":"x","description":"y","license":"z","format":"text","schema_version":2}',
         "schema_version"),
    ],
)  # fmt: skip
def test_metadata_errors_name_what_is_wrong(raw, message):
    with pytest.raises(MetadataError, match=message):
        DatanetMetadata.from_json(raw)


def test_instruction_pairs_are_counted():
    data = jsonl({"prompt": "a?", "response": "b."}, {"prompt": "c?", "response": "d."})
    assert validate_contribution(meta(DataFormat.INSTRUCTION), data) == 2


def test_bad_instruction_lines_are_reported_with_line_and_reason():
    data = (
        jsonl({"prompt": "a?", "response": "b."})
        + b"{broken\n"
        + jsonl({"prompt": "c?"}, {"prompt": "", "response": "x"}, [1, 2])
    )
    with pytest.raises(ContributionFormatError) as caught:
        validate_contribution(meta(DataFormat.INSTRUCTION), data)
    errors = [(e.line, e.reason) for e in caught.value.errors]
    assert errors[0][0] == 2 and "not JSON" in errors[0][1]
    assert errors[1] == (3, "missing 'response'")
    assert errors[2] == (4, "field 'prompt' is empty")
    assert errors[3] == (5, "each line must be a JSON object")
    assert caught.value.total == 4
    assert "line 3: missing 'response'" in str(caught.value)


def test_chat_needs_roles_and_both_sides():
    good = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]
    }
    assert validate_contribution(meta(DataFormat.CHAT), jsonl(good)) == 1
    one_sided = {"messages": [{"role": "user", "content": "hi"}]}
    bad_role = {"messages": [{"role": "robot", "content": "hi"}]}
    with pytest.raises(ContributionFormatError) as caught:
        validate_contribution(meta(DataFormat.CHAT), jsonl(one_sided, bad_role, {"messages": []}))
    reasons = [e.reason for e in caught.value.errors]
    assert "at least one user and one assistant" in reasons[0]
    assert "needs a role" in reasons[1]
    assert "non-empty list" in reasons[2]


def test_preference_pairs_need_distinct_answers():
    good = {"prompt": "p", "chosen": "yes", "rejected": "no"}
    assert validate_contribution(meta(DataFormat.PREFERENCE), jsonl(good)) == 1
    with pytest.raises(ContributionFormatError, match="same answer"):
        validate_contribution(
            meta(DataFormat.PREFERENCE), jsonl({"prompt": "p", "chosen": "a", "rejected": "a"})
        )


def test_text_must_be_non_empty_utf8_within_the_size_limit():
    assert validate_contribution(meta(DataFormat.TEXT), "héllo wörld".encode()) == 1
    with pytest.raises(ContributionFormatError, match="line 2: not UTF-8"):
        validate_contribution(meta(DataFormat.TEXT), b"fine\n\xff\xfe")
    with pytest.raises(ContributionFormatError, match="empty"):
        validate_contribution(meta(DataFormat.TEXT), b"  \n")
    with pytest.raises(ContributionFormatError, match="above this Datanet's limit of 10"):
        validate_contribution(meta(DataFormat.TEXT, max_file_bytes=10), b"x" * 11)


def test_error_report_is_bounded_but_counts_everything():
    data = b"\n".join(b"nope" for _ in range(100))
    with pytest.raises(ContributionFormatError) as caught:
        validate_contribution(meta(DataFormat.INSTRUCTION), data)
    assert len(caught.value.errors) == 20
    assert caught.value.total == 100
    assert "and 80 more" in str(caught.value)
