"""The embedded directory store: same CIDs as IPFS, verified reads, atomic writes."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from backend.storage import local
from backend.storage.base import CIDMismatchError, ContentNotFoundError, ContentTooLargeError
from backend.storage.cid import InvalidCIDError
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import CHUNK_SIZE, UnixFSHasher, compute_cid


@pytest.fixture(params=["read once", "streamed"])
def store(request, tmp_path: Path, monkeypatch) -> DirectoryStore:
    """Small content is read into memory once; larger content is spooled while hashed."""
    if request.param == "streamed":
        monkeypatch.setattr(local, "READ_ONCE_BYTES", 0)
    return DirectoryStore(tmp_path / "store")


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7])
def test_put_returns_the_ipfs_cid_and_get_returns_the_bytes(store, size):
    data = random.Random(size).randbytes(size)
    cid = store.put(data)
    assert cid == compute_cid(data)
    assert store.has(cid)
    assert store.get(cid) == data


def test_put_accepts_streams_paths_and_chunk_iterables(store, tmp_path):
    data = random.Random(7).randbytes(2 * CHUNK_SIZE + 3)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    cids = {
        store.put(io.BytesIO(data)),
        store.put(path),
        store.put(iter([data[:5], data[5 : CHUNK_SIZE + 9], data[CHUNK_SIZE + 9 :]])),
    }
    assert cids == {compute_cid(data)}


def test_put_is_idempotent_and_leaves_no_temporary_files(store):
    first = store.put(b"same bytes")
    second = store.put(b"same bytes")
    assert first == second
    assert sorted(p.name for p in (store.root / "blocks").iterdir()) == [first]


def test_get_refuses_bytes_that_do_not_match_their_cid(store):
    cid = store.put(b"original content")
    (store.root / "blocks" / cid).write_bytes(b"tampered content")
    with pytest.raises(CIDMismatchError) as caught:
        next(store.iter_verified(cid))  # before the first chunk
    with pytest.raises(CIDMismatchError) as caught:
        store.get(cid)
    assert caught.value.expected == cid
    assert caught.value.actual == compute_cid(b"tampered content")
    assert cid in str(caught.value) and caught.value.actual in str(caught.value)


def test_get_refuses_content_over_max_bytes(store):
    data = random.Random(3).randbytes(CHUNK_SIZE + 10)
    cid = store.put(data)
    assert store.get(cid, max_bytes=len(data)) == data
    with pytest.raises(ContentTooLargeError, match=f"{cid} exceeds {len(data) - 1} bytes"):
        store.get(cid, max_bytes=len(data) - 1)


def test_get_of_unknown_cid_raises_not_found(store):
    cid = compute_cid(b"never stored")
    with pytest.raises(ContentNotFoundError, match=cid):
        store.get(cid)
    assert not store.has(cid)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "Qmnotv1", "not a cid"])
def test_malformed_cids_are_refused_before_touching_the_disk(store, bad):
    with pytest.raises(InvalidCIDError):
        store.has(bad)


def test_a_failed_put_leaves_nothing_behind(store):
    def broken_stream():
        yield b"x" * CHUNK_SIZE
        raise OSError("the upload was cut")

    with pytest.raises(OSError, match="cut"):
        store.put(broken_stream())
    assert list((store.root / "blocks").iterdir()) == []


def test_pin_marks_stored_content_and_refuses_unknown(store):
    cid = store.put(b"keep me")
    assert not store.is_pinned(cid)
    store.pin(cid)
    assert store.is_pinned(cid)
    with pytest.raises(ContentNotFoundError):
        store.pin(compute_cid(b"absent"))


class _TamperingHasher(UnixFSHasher):
    """Rewrites ``target`` in place (same inode, same size) once it has hashed all of it."""

    target: Path

    def finalize(self) -> str:
        cid = super().finalize()
        with self.target.open("r+b") as f:
            f.write(b"X" * self.size)
        return cid


@pytest.mark.parametrize("read", ["get", "iter_verified"])
def test_bytes_changed_after_hashing_are_never_returned(tmp_path, monkeypatch, read):
    """The bytes handed out are the bytes hashed: a file rewritten between the hash pass and
    a second read must not come back as verified content (streamed path, made small here)."""
    monkeypatch.setattr(local, "READ_ONCE_BYTES", 0)
    store = DirectoryStore(tmp_path / "store")
    data = random.Random(9).randbytes(3 * CHUNK_SIZE + 5)
    cid = store.put(data)
    _TamperingHasher.target = store.root / "blocks" / cid
    monkeypatch.setattr(local, "UnixFSHasher", _TamperingHasher)
    got = store.get(cid) if read == "get" else b"".join(store.iter_verified(cid))
    assert (store.root / "blocks" / cid).read_bytes() != data  # the file did change
    assert got == data


def test_non_canonical_spellings_of_a_stored_cid_are_refused(store):
    """``has()`` must not say yes to a spelling that ``get()`` then fails on."""
    cid = store.put(b"stored under one spelling")
    last = "abcdefghijklmnopqrstuvwxyz234567".index(cid[-1])
    padding_bits_set = cid[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last | 1]
    for spelling in ("b" + cid[1:].upper(), padding_bits_set):
        with pytest.raises(InvalidCIDError, match="canonical"):
            store.has(spelling)
        with pytest.raises(InvalidCIDError, match="canonical"):
            store.get(spelling)
