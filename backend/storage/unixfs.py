"""A streaming UnixFS importer giving the CIDs of ``ipfs add --cid-version=1 --raw-leaves``.

kubo's defaults: fixed 262,144-byte chunks stored as raw blocks, a balanced DAG of dag-pb nodes
with at most 174 links each, every inner node a UnixFS ``File`` carrying the file size below it
and one block size per child. A file of at most one chunk is a single raw block. Memory stays
flat in the file size: one chunk buffer plus at most 174 pending links per tree level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from backend.storage.cid import CID, DAG_PB, RAW, varint

CHUNK_SIZE = 262_144
MAX_LINKS = 174
_UNIXFS_FILE = 2


@dataclass(frozen=True)
class _Link:
    cid: CID
    tsize: int  # bytes of the serialized subtree (blocks), as dag-pb's Tsize
    filesize: int  # bytes of file content below it


def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def _inner_node(children: list[_Link]) -> tuple[bytes, _Link]:
    """The dag-pb block over ``children`` and its link."""
    filesize = sum(c.filesize for c in children)
    unixfs = _field_varint(1, _UNIXFS_FILE) + _field_varint(3, filesize)
    unixfs += b"".join(_field_varint(4, c.filesize) for c in children)
    # dag-pb canonical order: Links (field 2) first, then Data (field 1).
    links = b"".join(
        _field_bytes(
            2, _field_bytes(1, c.cid.to_bytes()) + _field_bytes(2, b"") + _field_varint(3, c.tsize)
        )
        for c in children
    )
    block = links + _field_bytes(1, unixfs)
    cid = CID(DAG_PB, hashlib.sha256(block).digest())
    return block, _Link(cid, len(block) + sum(c.tsize for c in children), filesize)


@dataclass
class UnixFSHasher:
    """Feed bytes with :meth:`update`, then :meth:`finalize` for the CID string."""

    _buffer: bytearray = field(default_factory=bytearray)
    _levels: list[list[_Link]] = field(default_factory=lambda: [[]])
    size: int = 0  # bytes fed so far
    _done: bool = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise ValueError("update() after finalize()")
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self._buffer:  # complete the pending chunk first
            take = CHUNK_SIZE - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if not view:
                return  # a full chunk is kept until more data (or finalize) says it is a leaf
            self._add_leaf(self._buffer)
            self._buffer = bytearray()
        # whole chunks are hashed in place (no copies: hashing dominates cold adapter loads)
        while len(view) > CHUNK_SIZE:  # keep the last chunk until finalize()
            self._add_leaf(view[:CHUNK_SIZE])
            view = view[CHUNK_SIZE:]
        self._buffer += view

    def _add_leaf(self, chunk: bytes | bytearray | memoryview) -> None:
        self._push(0, _Link(CID(RAW, hashlib.sha256(chunk).digest()), len(chunk), len(chunk)))

    def _push(self, level: int, link: _Link) -> None:
        if level == len(self._levels):
            self._levels.append([])
        pending = self._levels[level]
        pending.append(link)
        if len(pending) == MAX_LINKS + 1:
            # A full node of MAX_LINKS is certain only once a further link arrives.
            _, parent = _inner_node(pending[:MAX_LINKS])
            self._levels[level] = pending[MAX_LINKS:]
            self._push(level + 1, parent)

    def finalize(self) -> str:
        """The CID of everything fed (the empty file is the raw block of zero bytes)."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        self._add_leaf(bytes(self._buffer))
        self._buffer.clear()
        level = 0
        while True:
            pending = self._levels[level]
            if level == len(self._levels) - 1 and len(pending) == 1:
                return str(pending[0].cid)
            if pending:
                _, parent = _inner_node(pending)
                self._levels[level] = []
                # Through _push, not a plain append: the level above may already hold
                # MAX_LINKS links, and kubo's balanced builder then adds a level rather than
                # giving that node one link too many.
                self._push(level + 1, parent)
            level += 1


def compute_cid(data: bytes | Iterable[bytes]) -> str:
    """The CID of ``data`` (bytes, or an iterable of byte chunks)."""
    hasher = UnixFSHasher()
    if isinstance(data, bytes | bytearray | memoryview):
        hasher.update(data)
    else:
        for chunk in data:
            hasher.update(chunk)
    return hasher.finalize()
