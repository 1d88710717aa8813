"""The embedded importer gives kubo's CIDs (`ipfs add --cid-version=1 --raw-leaves`).

The oracles are ``aleph-cid``, an independent (Rust) implementation checked against kubo and
js-ipfs, and js-ipfs's own importer (``unixfs_oracle.mjs``), which takes the chunk size and the
links per node as options so that trees several levels deep stay a few bytes; the real IPFS
node comparison lives in the content-store tests.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path

import aleph_cid
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.storage import unixfs
from backend.storage.cid import CID, DAG_PB, RAW, InvalidCIDError
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import CHUNK_SIZE, MAX_LINKS, UnixFSHasher, compute_cid

NODE_JS = shutil.which("node")
JS_IMPORTER = Path(__file__).with_name("unixfs_oracle.mjs")


def kubo_cid(data: bytes) -> str:
    hasher = aleph_cid.CidHasher.for_ipfs_v1_raw_leaves()
    hasher.update(data)
    return hasher.finalize()


def js_importer_cids(files: list[bytes], chunk_size: int, max_links: int) -> list[str]:
    """The CIDs js-ipfs's importer gives ``files`` with these (patched) tree parameters."""
    request = {"chunk_size": chunk_size, "max_links": max_links, "files": [f.hex() for f in files]}
    answer = subprocess.run(
        [NODE_JS, str(JS_IMPORTER)], input=json.dumps(request).encode(), capture_output=True,
        check=True, timeout=120,
    )  # fmt: skip
    return json.loads(answer.stdout)


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


needs_js_importer = pytest.mark.skipif(
    NODE_JS is None
    or not (JS_IMPORTER.parents[2] / "node_modules" / "ipfs-unixfs-importer").exists(),
    reason="node and the npm ipfs-unixfs-importer (make setup) are needed",
)
TINY_CHUNK = 4


@needs_js_importer
@pytest.mark.parametrize("max_links", [2, 3])
def test_deep_trees_match_js_ipfs_at_every_size(max_links, monkeypatch, tmp_path):
    """Every size up to 41 tiny chunks: full levels, partial last nodes at every depth.

    Past ``max_links ** 2`` chunks plus a partial node the tree must grow a level, never give a
    node ``max_links + 1`` links (with the real constants: from 174² chunks + 1 byte on).
    """
    monkeypatch.setattr(unixfs, "CHUNK_SIZE", TINY_CHUNK)
    monkeypatch.setattr(unixfs, "MAX_LINKS", max_links)
    rng = random.Random(max_links)
    files = [rng.randbytes(size) for size in range(41 * TINY_CHUNK + 1)]
    expected = js_importer_cids(files, TINY_CHUNK, max_links)
    store = DirectoryStore(tmp_path / "store")
    for data, cid in zip(files, expected, strict=True):
        assert compute_cid(data) == cid, f"{len(data)} bytes"
        cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
        assert compute_cid(data[a:b] for a, b in pairwise([0, *cuts, len(data)])) == cid
        assert store.put(data) == cid, f"{len(data)} bytes through the directory store"


@needs_js_importer
def test_js_importer_oracle_agrees_with_kubo_on_the_real_constants():
    """The oracle above is kubo's importer: same CIDs as aleph-cid at 256 KiB and 174 links."""
    files = [random.Random(size).randbytes(size) for size in (0, 5, 2 * CHUNK_SIZE + 3)]
    assert js_importer_cids(files, CHUNK_SIZE, MAX_LINKS) == [kubo_cid(f) for f in files]


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


B32 = "abcdefghijklmnopqrstuvwxyz234567"


def non_canonical_spellings(cid: str) -> list[str]:
    """Strings that base32-decode to the bytes of ``cid`` but are not how ``cid`` is written."""
    body = cid[1:]
    last = B32.index(body[-1])
    # 36 bytes are 288 bits in 58 characters (290 bits): the last character's 2 low bits pad.
    assert last & 0b11 == 0
    return [
        "b" + body.upper(),  # the multibase prefix says lower-case base32
        cid[:10] + cid[10:20].upper() + cid[20:],
        cid[:-1] + B32[last | 0b01],  # non-zero padding bits
        cid[:-1] + B32[last | 0b10],
        cid + "======",  # RFC 4648 padding
    ]


@pytest.mark.parametrize("index", range(5))
def test_cid_parse_refuses_non_canonical_spellings(index):
    """One CID, one spelling: parse then re-encode must give back exactly the text."""
    cid = compute_cid(b"spelled one way")
    spelling = non_canonical_spellings(cid)[index]
    with pytest.raises(InvalidCIDError, match="canonical"):
        CID.parse(spelling)
