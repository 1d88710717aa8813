"""Content on any IPFS node (kubo, js-ipfs) through its HTTP RPC API (``/api/v0``).

Adds use the embedded store's CID settings (CIDv1, raw leaves, base32), and the bytes are hashed
here while they stream out: a node that answers another CID is an error, not a silent
divergence. Reads stream into a temporary file while they are hashed and hand out bytes only
once they match the CID, so memory stays flat and unverified data is never returned.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from typing import Any

import ipfshttpclient
from ipfshttpclient.exceptions import Error as IPFSClientError

from backend.storage.base import (
    CIDMismatchError,
    ContentNotFoundError,
    ContentStore,
    ContentStoreError,
    Source,
    iter_chunks,
)
from backend.storage.cid import CID
from backend.storage.unixfs import CHUNK_SIZE, UnixFSHasher

log = logging.getLogger(__name__)

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001/http"
_ADD_OPTIONS = {"cid-base": "base32"}


class _HashingReader:
    """A file-like view of a chunk iterator that feeds every byte read to a hasher."""

    def __init__(self, chunks: Iterator[bytes], hasher: UnixFSHasher) -> None:
        self._chunks = chunks
        self._hasher = hasher
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._hasher.update(chunk)
            self._pending += chunk
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


class IPFSStore(ContentStore):
    """A content store backed by an IPFS node's RPC API at ``api`` (a multiaddr)."""

    def __init__(self, api: str = DEFAULT_API, timeout: float = 120.0) -> None:
        self.api = api
        # Built directly: ipfshttpclient.connect() refuses daemons newer than it knows.
        self._client: Any = ipfshttpclient.Client(api, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def put(self, source: Source) -> str:
        hasher = UnixFSHasher()
        reader = _HashingReader(iter_chunks(source), hasher)
        try:
            answer = self._client.add(
                reader, cid_version=1, raw_leaves=True, pin=True, opts=_ADD_OPTIONS
            )
        except IPFSClientError as why:
            raise ContentStoreError(f"IPFS node at {self.api} refused the add: {why}") from why
        expected = hasher.finalize()
        node_cid = str(answer["Hash"])
        if node_cid != expected:
            raise CIDMismatchError(expected, node_cid)
        log.debug("added %s (%d bytes) to %s", expected, hasher.size, self.api)
        return expected

    def iter_verified(self, cid: str) -> Iterator[bytes]:
        CID.parse(cid)
        with tempfile.TemporaryFile() as spool:
            hasher = UnixFSHasher()
            try:
                for chunk in self._client.cat(cid, stream=True):
                    hasher.update(chunk)
                    spool.write(chunk)
            except IPFSClientError as why:
                if "not found" in str(why).lower() or "timeout" in str(why).lower():
                    raise ContentNotFoundError(cid) from why
                raise ContentStoreError(
                    f"IPFS node at {self.api} failed to cat {cid}: {why}"
                ) from why
            actual = hasher.finalize()
            if actual != cid:
                raise CIDMismatchError(cid, actual)
            spool.seek(0)
            yield from iter(lambda: spool.read(CHUNK_SIZE), b"")

    def has(self, cid: str) -> bool:
        CID.parse(cid)
        try:
            self._client.block.stat(cid, opts={"offline": True}, timeout=10)
        except IPFSClientError:
            return False
        return True

    def pin(self, cid: str) -> None:
        if not self.has(cid):
            raise ContentNotFoundError(cid)
        try:
            self._client.pin.add(cid)
        except IPFSClientError as why:
            raise ContentStoreError(f"IPFS node at {self.api} failed to pin {cid}: {why}") from why
