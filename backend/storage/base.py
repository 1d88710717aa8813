"""The content-store interface: put bytes or a stream, get them back by CID, verified."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from backend.storage.unixfs import CHUNK_SIZE, compute_cid

Source = bytes | BinaryIO | Iterable[bytes] | Path


class ContentStoreError(RuntimeError):
    """The store could not do what was asked."""


class ContentNotFoundError(ContentStoreError, LookupError):
    """No content is stored under a CID."""

    def __init__(self, cid: str, message: str | None = None) -> None:
        super().__init__(message or f"no content stored under {cid}")
        self.cid = cid


class ContentTimeoutError(ContentNotFoundError):
    """No byte of a CID arrived within the read timeout: a node that lacks a CID keeps looking
    for it (on the network, or forever when offline) rather than saying so."""

    def __init__(self, cid: str, timeout: float, where: str) -> None:
        super().__init__(cid, f"{cid} not found within {timeout:g} s: {where} sent no byte of it")
        self.timeout = timeout


class CIDMismatchError(ContentStoreError):
    """Bytes read under a CID hash to another CID: the data is refused, never returned."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"content stored under {expected} hashes to {actual}: refused")
        self.expected = expected
        self.actual = actual


class ContentTooLargeError(ContentStoreError):
    """Content under a CID is larger than the caller accepts: refused without reading (or, from
    a node that cannot say the size first, downloading) more than one byte past the limit."""

    def __init__(self, cid: str, limit: int) -> None:
        super().__init__(f"content stored under {cid} exceeds {limit} bytes")
        self.cid = cid
        self.limit = limit


def iter_chunks(source: Source, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Chunks of ``source``: bytes, a binary file object, a path, or an iterable of chunks."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
    elif isinstance(source, Path):
        with source.open("rb") as f:
            yield from iter(lambda: f.read(size), b"")
    elif hasattr(source, "read"):
        yield from iter(lambda: source.read(size), b"")  # type: ignore[union-attr]
    else:
        yield from source


class ContentStore(ABC):
    """Content by CID (CIDv1, raw leaves, base32: the same CIDs as ``ipfs add``)."""

    @abstractmethod
    def put(self, source: Source) -> str:
        """Stores ``source`` and returns its CID (idempotent)."""

    @abstractmethod
    def iter_verified(self, cid: str) -> Iterator[bytes]:
        """Yields the content of ``cid`` in chunks once it is verified against ``cid``.

        Raises :class:`ContentNotFoundError`, or :class:`CIDMismatchError` before yielding
        anything when the stored bytes do not hash to ``cid``.
        """

    @abstractmethod
    def has(self, cid: str) -> bool:
        """Whether content is stored under ``cid``."""

    @abstractmethod
    def pin(self, cid: str) -> None:
        """Keeps ``cid`` from garbage collection. Raises :class:`ContentNotFoundError`."""

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        """The verified content of ``cid``; :class:`ContentTooLargeError` past ``max_bytes``."""
        chunks: list[bytes] = []
        size = 0
        for chunk in self.iter_verified(cid):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ContentTooLargeError(cid, max_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def verify(cid: str, data: bytes) -> None:
        """Raises :class:`CIDMismatchError` unless ``data`` hashes to ``cid``."""
        actual = compute_cid(data)
        if actual != cid:
            raise CIDMismatchError(cid, actual)


def copy_content(cid: str, source: ContentStore, target: ContentStore) -> None:
    """Copies ``cid`` from ``source`` to ``target``, verified on both sides."""
    stored = target.put(source.iter_verified(cid))
    if stored != cid:
        raise CIDMismatchError(cid, stored)
