"""The reveal file: canonical bytes that read back exactly; every malformed line named."""

from __future__ import annotations

import pytest

from backend.attribution.reveal import Revealed, RevealError, parse_reveal, reveal_bytes

A = Revealed(b"\x01" * 32, (1, 2, 3), (4, 5))
B = Revealed(b"\x02" * 32, (), (2**32 - 1,))


def test_a_reveal_round_trips_in_canonical_bytes() -> None:
    data = reveal_bytes([A, B])
    assert data.splitlines()[0] == (
        b'{"answer":[4,5],"prompt":[1,2,3],"requestHash":"0x' + b"01" * 32 + b'"}'
    )
    assert parse_reveal(data) == {A.request_hash: A, B.request_hash: B}
    assert reveal_bytes(parse_reveal(data).values()) == data
    assert parse_reveal(b"") == {}


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"{not json", "line 2 is not JSON"),
        (b'{"answer":[],"prompt":[]}', "line 2 must have exactly answer, prompt and requestHash"),
        (b'{"answer":[],"prompt":[],"requestHash":"0x12","x":1}', "must have exactly"),
        (b'{"answer":[],"prompt":[],"requestHash":"0x12"}', "'0x12' is not 32 bytes of hex"),
        (b'{"answer":[],"prompt":[],"requestHash":7}', "7 is not 32 bytes of hex"),
        (b'{"answer":[-1],"prompt":[],"requestHash":"0x' + b"03" * 32 + b'"}',
         "line 2: answer must be a list of token ids"),
        (b'{"answer":[],"prompt":[4294967296],"requestHash":"0x' + b"03" * 32 + b'"}',
         "line 2: prompt must be a list of token ids"),
        (b'{"answer":[true],"prompt":[],"requestHash":"0x' + b"03" * 32 + b'"}',
         "answer must be a list"),
        (b'{"answer":[],"prompt":"1 2","requestHash":"0x' + b"03" * 32 + b'"}',
         "prompt must be a list"),
        (reveal_bytes([A]).strip(), "line 2: receipt 0x" + "01" * 32 + " is revealed twice"),
    ],
)  # fmt: skip
def test_a_bad_line_is_named(line: bytes, why: str) -> None:
    with pytest.raises(RevealError, match=r"^reveal X line 2") as caught:
        parse_reveal(reveal_bytes([A]) + line + b"\n", "reveal X")
    assert why in str(caught.value)


def test_a_reveal_must_be_text() -> None:
    with pytest.raises(RevealError, match="not UTF-8"):
        parse_reveal(b"\xff\xfe")
