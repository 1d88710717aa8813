"""The embedded content store: files in a directory, named by their CIDs.

Writes stream into a temporary file in the same directory while the CID is computed, are
fsynced, then renamed into place: a crash never leaves a partial file under a CID. Reads hash
the file before handing out any byte, so a corrupted or swapped file is refused, and hand out
exactly the bytes they hashed: the file is read once, never hashed and then read again (bytes
changed in between would come back as verified content).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backend.storage.base import (
    CIDMismatchError,
    ContentNotFoundError,
    ContentStore,
    ContentTooLargeError,
    Source,
    iter_chunks,
)
from backend.storage.cid import CID
from backend.storage.unixfs import CHUNK_SIZE, UnixFSHasher

log = logging.getLogger(__name__)

# iter_verified() reads content up to this size into memory; larger content goes through a
# private spool file so that memory stays flat (get() returns bytes, so it always reads to memory)
READ_ONCE_BYTES = 64 << 20


class DirectoryStore(ContentStore):
    """Content under ``root/blocks/<cid>``; pins as empty files under ``root/pins/<cid>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "blocks"
        self._pins = self.root / "pins"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._pins.mkdir(parents=True, exist_ok=True)

    def _path(self, cid: str) -> Path:
        return self._objects / str(CID.parse(cid))  # parse: refuses path tricks and non-CIDs

    def _open(self, cid: str) -> BinaryIO:
        try:
            return self._path(cid).open("rb")
        except FileNotFoundError:
            raise ContentNotFoundError(cid) from None

    def put(self, source: Source) -> str:
        hasher = UnixFSHasher()
        fd, tmp_name = tempfile.mkstemp(dir=self._objects, prefix=".incoming-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter_chunks(source):
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            cid = hasher.finalize()
            final = self._objects / cid
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)
                fsync_path(self._objects)
                log.debug("stored %s (%d bytes)", cid, hasher.size)
            return cid
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def iter_verified(self, cid: str) -> Iterator[bytes]:
        with self._open(cid) as f:
            if os.fstat(f.fileno()).st_size <= READ_ONCE_BYTES:
                yield from self._verified_in_memory(cid, f.read())
                return
            # Copied into an unlinked spool while hashed, then handed out from the spool: what
            # is yielded is what was hashed, whatever happens to the stored file meanwhile.
            with tempfile.TemporaryFile(dir=self.root) as spool:
                hasher = UnixFSHasher()
                for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
                    hasher.update(chunk)
                    spool.write(chunk)
                f.close()  # not held open while the caller consumes the spool
                self._check(cid, hasher.finalize())
                spool.seek(0)
                yield from iter(lambda: spool.read(CHUNK_SIZE), b"")

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        """Reads the file once into the buffer it returns and hashes that buffer (no second read,
        no chunk copies), whatever its size: the caller holds it all in memory anyway."""
        with self._open(cid) as f:
            if max_bytes is not None and os.fstat(f.fileno()).st_size > max_bytes:
                raise ContentTooLargeError(cid, max_bytes)
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:  # grew since fstat
            raise ContentTooLargeError(cid, max_bytes)
        self._check_bytes(cid, data)
        return data

    def _verified_in_memory(self, cid: str, data: bytes) -> Iterator[bytes]:
        """Small content is read once and hashed in memory (one read, not two)."""
        self._check_bytes(cid, data)
        view = memoryview(data)
        for start in range(0, len(data), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])

    @classmethod
    def _check_bytes(cls, cid: str, data: bytes) -> None:
        hasher = UnixFSHasher()
        hasher.update(data)
        cls._check(cid, hasher.finalize())

    @staticmethod
    def _check(cid: str, actual: str) -> None:
        if actual != cid:
            log.error("content under %s hashes to %s", cid, actual)
            raise CIDMismatchError(cid, actual)

    def has(self, cid: str) -> bool:
        return self._path(cid).exists()

    def pin(self, cid: str) -> None:
        if not self.has(cid):
            raise ContentNotFoundError(cid)
        (self._pins / cid).touch()

    def is_pinned(self, cid: str) -> bool:
        return (self._pins / str(CID.parse(cid))).exists()


def fsync_path(path: Path) -> None:
    """Flushes a file, or a folder's entries (a rename into it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
