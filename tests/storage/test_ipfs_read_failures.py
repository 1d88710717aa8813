"""The IPFS store's reads against a misbehaving node: a real HTTP server on 127.0.0.1 that drops
the connection mid-body, sends more than the caller accepts, or never answers.

Every failure must surface as a :class:`ContentStoreError` that names the CID (never a raw
``requests``/``httpx``/``urllib3`` exception), oversized content must be refused after reading
at most a little more than the limit, and a silent node must not hold the caller past the read
timeout.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.storage.base import (
    ContentNotFoundError,
    ContentStoreError,
    ContentTimeoutError,
    ContentTooLargeError,
)
from backend.storage.ipfs import DEFAULT_READ_TIMEOUT, IPFSStore, api_multiaddr
from backend.storage.open import open_store
from backend.storage.unixfs import compute_cid

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

CID = compute_cid(b"what the fake node pretends to hold")


@dataclass
class FakeNode:
    """What the server answers to ``/api/v0/cat``, and what it saw and sent."""

    answer: Callable[[BaseHTTPRequestHandler], None] | None = None
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    sent: int = 0  # body bytes written before the client went away
    released: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def api(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/http"


@pytest.fixture
def fake_node() -> Iterator[FakeNode]:
    node = FakeNode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            node.queries.append(urllib.parse.parse_qs(url.query))
            assert node.answer is not None
            node.answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.fake_node = node  # type: ignore[attr-defined]
    node.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield node
    node.released.set()
    server.shutdown()
    server.server_close()


def _drop(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.flush()
    handler.close_connection = True
    handler.connection.close()


def drop_mid_body_with_length(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(1 << 20))
    handler.end_headers()
    handler.wfile.write(b"x" * 100_000)
    _drop(handler)


def drop_mid_body_chunked(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"%x\r\n%s\r\n" % (100_000, b"x" * 100_000))
    handler.wfile.write(b"%x\r\n%s" % (100_000, b"x" * 5_000))  # a chunk cut short
    _drop(handler)


@pytest.mark.parametrize("answer", [drop_mid_body_with_length, drop_mid_body_chunked])
@pytest.mark.parametrize("read", ["get", "iter_verified"])
def test_a_connection_dropped_mid_body_is_a_content_store_error(fake_node, answer, read):
    fake_node.answer = answer
    store = IPFSStore(fake_node.api)
    try:
        with pytest.raises(ContentStoreError, match=CID) as caught:
            store.get(CID) if read == "get" else list(store.iter_verified(CID))
    finally:
        store.close()
    assert not isinstance(caught.value, ContentNotFoundError | ContentTooLargeError)
    assert re.search(r"after \d+ bytes", str(caught.value))  # how far it got


def test_get_with_max_bytes_stops_reading_past_the_limit(fake_node):
    """A node that ignores ``length`` and streams 64 MiB: refused after about 1 MiB."""
    limit = 1 << 20
    total = 64 << 20

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        block = b"%x\r\n%s\r\n" % (1 << 16, b"z" * (1 << 16))
        try:
            while fake_node.sent < total:
                handler.wfile.write(block)
                fake_node.sent += 1 << 16
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading and closed
        finally:
            writer_done.set()

    writer_done = threading.Event()
    fake_node.answer = endless
    store = IPFSStore(fake_node.api)
    try:
        with pytest.raises(ContentTooLargeError, match=f"{CID} exceeds {limit} bytes"):
            store.get(CID, max_bytes=limit)
    finally:
        store.close()
    assert writer_done.wait(10)
    assert fake_node.sent < 16 << 20  # the limit plus what socket buffers hold, not 64 MiB
    assert fake_node.queries[0]["length"] == [str(limit + 1)]  # a well-behaved node stops too


def never_answer(handler: BaseHTTPRequestHandler) -> None:
    """A node still looking for the CID: it holds the request open and sends nothing."""
    handler.server.fake_node.released.wait(30)  # type: ignore[attr-defined]


@pytest.mark.parametrize("read", ["get", "iter_verified"])
def test_a_silent_node_is_not_found_within_the_read_timeout(fake_node, read):
    fake_node.answer = never_answer
    store = IPFSStore(fake_node.api, read_timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(ContentTimeoutError) as caught:
            store.get(CID) if read == "get" else list(store.iter_verified(CID))
    finally:
        store.close()
    assert time.monotonic() - started < 5
    assert isinstance(caught.value, ContentNotFoundError)  # callers that map it to 404 still do
    assert caught.value.cid == CID
    assert f"{CID} not found within 0.5 s" in str(caught.value)
    assert fake_node.api in str(caught.value)


def test_a_node_that_stalls_mid_body_is_a_store_error_not_a_hang(fake_node):
    def stall(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 20))
        handler.end_headers()
        handler.wfile.write(b"x" * 1000)
        handler.wfile.flush()
        fake_node.released.wait(30)

    fake_node.answer = stall
    store = IPFSStore(fake_node.api, read_timeout=0.5)
    try:
        with pytest.raises(ContentStoreError, match=f"{CID}.*no byte for 0.5 s after 1000 bytes"):
            store.get(CID)
    finally:
        store.close()


def test_reads_wait_tens_of_seconds_by_default_not_the_upload_timeout():
    store = IPFSStore("/ip4/127.0.0.1/tcp/9/http")
    try:
        assert store.read_timeout == DEFAULT_READ_TIMEOUT
        assert 10 <= DEFAULT_READ_TIMEOUT <= 60
    finally:
        store.close()
    with pytest.raises(ValueError, match="read_timeout must be positive, not 0"):
        IPFSStore("/ip4/127.0.0.1/tcp/9/http", read_timeout=0)


def test_a_node_that_says_it_lacks_the_cid_is_not_found(fake_node):
    def refuse(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"Message":"block was not found locally (offline)","Code":0,"Type":"error"}'
        handler.send_response(500)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    fake_node.answer = refuse
    store = IPFSStore(fake_node.api)
    try:
        with pytest.raises(ContentNotFoundError, match=f"{CID}: .* says block was not found"):
            store.get(CID)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("api", "multiaddr"),
    [
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://[::1]:5001/", "/ip6/::1/tcp/5001/http"),
        ("https://ipfs.example.org", "/dns/ipfs.example.org/tcp/443/https"),
        ("/ip4/10.0.0.2/tcp/5001/http", "/ip4/10.0.0.2/tcp/5001/http"),
    ],
)
def test_an_ipfs_api_url_is_taken_as_its_multiaddr(api: str, multiaddr: str) -> None:
    assert api_multiaddr(api) == multiaddr


def test_an_ipfs_api_url_with_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IPFS API address"):
        api_multiaddr("http://127.0.0.1:5001/api/v0")


def test_open_store_takes_the_read_timeout_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("OPENLEDGER_IPFS_READ_TIMEOUT", "2.5")
    store = open_store("http://127.0.0.1:5001")
    assert isinstance(store, IPFSStore)
    assert (store.api, store.read_timeout) == ("/ip4/127.0.0.1/tcp/5001/http", 2.5)
    store.close()
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("OPENLEDGER_IPFS_READ_TIMEOUT", bad)
        with pytest.raises(ValueError, match="OPENLEDGER_IPFS_READ_TIMEOUT"):
            open_store("http://127.0.0.1:5001")
