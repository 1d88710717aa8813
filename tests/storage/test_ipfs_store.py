"""The IPFS store against a real IPFS node: the same CIDs as the embedded store, both ways."""

from __future__ import annotations

import random
import time
import urllib.request

import pytest

from backend.storage.base import (
    ContentNotFoundError,
    ContentTimeoutError,
    ContentTooLargeError,
    copy_content,
)
from backend.storage.ipfs import IPFSStore
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import CHUNK_SIZE, compute_cid

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 1 << 20, 10 << 20]


@pytest.fixture
def local_store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


def cat_over_http(api_url: str, cid: str) -> bytes:
    request = urllib.request.Request(f"{api_url}/api/v0/cat?arg={cid}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


@pytest.mark.parametrize("size", SIZES)
def test_both_stores_give_the_same_cid(size, ipfs_store, local_store):
    data = random.Random(size).randbytes(size)
    ipfs_cid = ipfs_store.put(data)
    assert ipfs_cid == local_store.put(data) == compute_cid(data)


def test_ipfs_store_reads_back_verified_bytes(ipfs_store, ipfs_daemon):
    data = random.Random(3).randbytes(3 * CHUNK_SIZE + 11)
    cid = ipfs_store.put(data)
    assert ipfs_store.has(cid)
    assert ipfs_store.get(cid) == data
    assert cat_over_http(ipfs_daemon.api_url, cid) == data  # the node itself serves it
    assert ipfs_store.get(cid, max_bytes=len(data)) == data
    with pytest.raises(ContentTooLargeError):
        ipfs_store.get(cid, max_bytes=len(data) - 1)


def test_content_added_through_one_store_is_readable_through_the_other(ipfs_store, local_store):
    to_ipfs = random.Random(4).randbytes(CHUNK_SIZE + 99)
    from_ipfs = random.Random(5).randbytes(2 * CHUNK_SIZE)
    local_cid = local_store.put(to_ipfs)
    copy_content(local_cid, local_store, ipfs_store)
    assert ipfs_store.get(local_cid) == to_ipfs
    ipfs_cid = ipfs_store.put(from_ipfs)
    copy_content(ipfs_cid, ipfs_store, local_store)
    assert local_store.get(ipfs_cid) == from_ipfs


def test_ipfs_store_pins_and_knows_what_it_lacks(ipfs_store):
    cid = ipfs_store.put(b"pin me")
    ipfs_store.pin(cid)
    absent = compute_cid(b"nobody added this")
    assert not ipfs_store.has(absent)
    with pytest.raises(ContentNotFoundError):
        ipfs_store.pin(absent)


def test_a_cid_the_node_lacks_is_not_found_within_the_read_timeout(ipfs_daemon):
    """js-ipfs, even offline, keeps looking for a missing block: the read must give up."""
    store = IPFSStore(ipfs_daemon.api_multiaddr, read_timeout=1.0)
    absent = compute_cid(b"nobody added this either")
    started = time.monotonic()
    try:
        with pytest.raises(ContentTimeoutError, match=f"{absent} not found within 1 s"):
            store.get(absent)
    finally:
        store.close()
    assert time.monotonic() - started < 10
