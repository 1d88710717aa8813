"""The embedded importer gives kubo's CIDs (`ipfs add --cid-version=1 --raw-leaves`).

The oracle is ``aleph-cid``, an independent (Rust) implementation checked against kubo and
js-ipfs; the real IPFS node comparison lives in the content-store tests.
"""

from __future__ import annotations

import random

import aleph_cid
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.storage.cid import CID, DAG_PB, RAW, InvalidCIDError
from backend.storage.unixfs import CHUNK_SIZE, MAX_LINKS, UnixFSHasher, compute_cid


def kubo_cid(data: bytes) -> str:
    hasher = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def test_compute_cid_known_answer():
    assert compute_cid(b"hello world\n") == (
        "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    )
    assert compute_cid(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@pytest.mark.parametrize(
    "size",
    [
        0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 1 << 20,
        MAX_LINKS * CHUNK_SIZE, MAX_LINKS * CHUNK_SIZE + 1, (MAX_LINKS + 1) * CHUNK_SIZE + 5,
    ],
)  # fmt: skip
def test_compute_cid_matches_kubo_at_chunk_and_fanout_edges(size):
    data = random.Random(size).randbytes(size)
    assert compute_cid(data) == kubo_cid(data)


def test_compute_cid_codec_follows_size():
    assert CID.parse(compute_cid(b"x" * CHUNK_SIZE)).codec == RAW
    assert CID.parse(compute_cid(b"x" * (CHUNK_SIZE + 1))).codec == DAG_PB


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=3 * CHUNK_SIZE), cuts=st.lists(st.integers(0, 3 * CHUNK_SIZE)))
def test_hasher_is_independent_of_how_the_stream_is_cut(data, cuts):
    hasher = UnixFSHasher()
    start = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        hasher.update(data[start:cut])
        start = cut
    hasher.update(data[start:])
    assert hasher.finalize() == compute_cid(data) == kubo_cid(data)


def test_hasher_refuses_use_after_finalize():
    hasher = UnixFSHasher()
    hasher.finalize()
    with pytest.raises(ValueError, match="after finalize"):
        hasher.update(b"x")
    with pytest.raises(ValueError, match="twice"):
        hasher.finalize()


def test_cid_round_trips_through_parse():
    text = compute_cid(b"abc" * 100_000)
    assert str(CID.parse(text)) == text


@pytest.mark.parametrize(
    "bad",
    [
        "", "Qmabc", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", "b!!!!!!!!!!!!",
        "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",  # dag-cbor codec
    ],
)  # fmt: skip
def test_cid_parse_rejects_what_cannot_be_verified(bad):
    with pytest.raises(InvalidCIDError):
        CID.parse(bad)
