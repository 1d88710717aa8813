"""Content on any IPFS node (kubo, js-ipfs) through its HTTP RPC API (``/api/v0``).

Adds use the embedded store's CID settings (CIDv1, raw leaves, base32), and the bytes are hashed
here while they stream out: a node that answers another CID is an error, not a silent
divergence. Reads stream into a temporary file while they are hashed and hand out bytes only
once they match the CID, so memory stays flat and unverified data is never returned.

Reads (``cat``) go over httpx rather than ipfshttpclient: its streamed ``cat`` lets
``requests``/``urllib3`` errors escape from the middle of a body, and it cannot stop reading at
a size limit. Here every failure of a read is a :class:`ContentStoreError` naming the CID, and
``get(cid, max_bytes=N)`` stops after N + 1 bytes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import httpx
import ipfshttpclient
from ipfshttpclient.exceptions import Error as IPFSClientError
from ipfshttpclient.http_common import multiaddr_to_url_data

from backend.storage.base import (
    CIDMismatchError,
    ContentNotFoundError,
    ContentStore,
    ContentStoreError,
    ContentTimeoutError,
    ContentTooLargeError,
    Source,
    iter_chunks,
)
from backend.storage.cid import CID
from backend.storage.unixfs import CHUNK_SIZE, UnixFSHasher

log = logging.getLogger(__name__)

DEFAULT_API = "/ip4/127.0.0.1/tcp/5001/http"
_ADD_OPTIONS = {"cid-base": "base32"}
_ERROR_BODY_BYTES = 64 << 10  # of a refusal's body, read for its message
# Seconds a read waits for the node's next byte, the first one included. A node that lacks a CID
# does not say so, it keeps looking: without this a caller waited the whole upload timeout.
DEFAULT_READ_TIMEOUT = 30.0


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


def api_multiaddr(api: str) -> str:
    """``api`` as the multiaddr the IPFS client speaks: an ``http(s)://host:port`` URL is
    converted (``/ip4/127.0.0.1/tcp/5001/http``); a multiaddr is returned as it is."""
    if not api.startswith(("http://", "https://")):
        return api
    url = urlsplit(api)
    if not url.hostname or url.path not in ("", "/"):
        raise ValueError(f"{api!r} is not an IPFS API address (http://host:port)")
    try:
        version = ip_address(url.hostname).version
        host = f"/ip{version}/{url.hostname}"
    except ValueError:
        host = f"/dns/{url.hostname}"
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{host}/tcp/{port}/{url.scheme}"


class IPFSStore(ContentStore):
    """A content store backed by an IPFS node's RPC API at ``api`` (a multiaddr, or an
    ``http://host:port`` URL).

    ``timeout`` bounds each socket operation of adds and pins; ``read_timeout`` is how long a
    read waits for the node's next byte (the first one included) before it gives up: with no
    byte at all the CID is not found (:class:`ContentTimeoutError`), after some it is a
    stalled transfer (:class:`ContentStoreError`).
    """

    def __init__(
        self,
        api: str = DEFAULT_API,
        timeout: float = 120.0,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if read_timeout <= 0:
            raise ValueError(f"read_timeout must be positive, not {read_timeout}")
        api = api_multiaddr(api)
        self.api = api
        self.read_timeout = read_timeout
        # Built directly: ipfshttpclient.connect() refuses daemons newer than it knows.
        self._client: Any = ipfshttpclient.Client(api, timeout=timeout)
        base_url, uds_path, _, _ = multiaddr_to_url_data(api, "api/v0")
        self._http = httpx.Client(
            base_url=base_url,
            timeout=read_timeout,
            transport=httpx.HTTPTransport(uds=uds_path) if uds_path else None,
        )

    def close(self) -> None:
        self._client.close()
        self._http.close()

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
        with tempfile.TemporaryFile() as spool:
            hasher = UnixFSHasher()
            for chunk in self._cat(cid):
                hasher.update(chunk)
                spool.write(chunk)
            _check(cid, hasher.finalize())
            spool.seek(0)
            yield from iter(lambda: spool.read(CHUNK_SIZE), b"")

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        """Hashes while it reads into the buffer it returns; past ``max_bytes`` it stops reading
        and raises :class:`ContentTooLargeError` (the base class would download it all first)."""
        hasher = UnixFSHasher()
        data = bytearray()
        for chunk in self._cat(cid, max_bytes):
            hasher.update(chunk)
            data += chunk
        _check(cid, hasher.finalize())
        return bytes(data)

    def _cat(self, cid: str, max_bytes: int | None = None) -> Iterator[bytes]:
        """The node's unverified bytes for ``cid``, at most ``max_bytes`` of them.

        Raises :class:`ContentTooLargeError` once more than ``max_bytes`` arrive,
        :class:`ContentNotFoundError` when the node says it lacks ``cid``, and
        :class:`ContentStoreError` for any other failure, a connection dropped mid-body included.
        """
        CID.parse(cid)
        params = {"arg": cid}
        if max_bytes is not None:
            params["length"] = str(max_bytes + 1)  # a node that honours it sends no more
        received = 0
        try:
            with self._http.stream("POST", "cat", params=params) as response:
                if response.status_code != httpx.codes.OK:
                    raise self._refusal(cid, response)
                # chunks as they arrive (not re-buffered), so a stall knows what came before it
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if max_bytes is not None and received > max_bytes:
                        raise ContentTooLargeError(cid, max_bytes)  # closes the connection
                    yield chunk
        except httpx.ReadTimeout as why:
            if received == 0:
                raise ContentTimeoutError(
                    cid, self.read_timeout, f"the IPFS node at {self.api}"
                ) from why
            raise ContentStoreError(
                f"reading {cid} from the IPFS node at {self.api} stalled: no byte for "
                f"{self.read_timeout:g} s after {received} bytes"
            ) from why
        except httpx.HTTPError as why:
            raise ContentStoreError(
                f"reading {cid} from the IPFS node at {self.api} failed after {received} bytes: "
                f"{type(why).__name__}: {why}"
            ) from why

    def _refusal(self, cid: str, response: httpx.Response) -> ContentStoreError:
        """The error for a non-200 answer to ``cat``, from the node's JSON message."""
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_BYTES:
                break
        try:
            message = str(json.loads(body)["Message"])
        except (ValueError, KeyError, TypeError):
            message = body[:500].decode(errors="replace")
        lowered = message.lower()
        if "not found" in lowered or "timeout" in lowered or "timed out" in lowered:
            return ContentNotFoundError(
                cid, f"no content stored under {cid}: the IPFS node at {self.api} says {message}"
            )
        return ContentStoreError(
            f"IPFS node at {self.api} refused to cat {cid}: HTTP {response.status_code}: {message}"
        )

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


def _check(cid: str, actual: str) -> None:
    if actual != cid:
        raise CIDMismatchError(cid, actual)
