"""GET /content/{cid}: verified bytes with immutable caching headers, and every refusal (a
malformed CID, a CID not stored, content past the cap, a store that returns other bytes or
cannot be reached); and the browser's RPC URL in /status."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from backend.api.config import Settings
from backend.api.main import create_app
from backend.api.routes.content import CID_PATTERN
from backend.devnet.anvil import free_port
from backend.storage.base import ContentStore
from backend.storage.cid import CID
from backend.storage.ipfs import IPFSStore
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def app_over(stack, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """A client of an app over the shared index with ``store`` and ``settings`` overrides."""
    clients: list[TestClient] = []

    def make(store: ContentStore, **settings: object) -> TestClient:
        config = Settings(
            db_path=stack.db_path, content_dir=tmp_path / "content", data_dir=tmp_path / "api",
            **settings,
        )  # fmt: skip
        client = TestClient(create_app(config, store), base_url="http://testserver/api/v1")
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_content_is_served_verified_with_immutable_headers(client, stack):
    cid = stack.history.report_cid
    answer = client.get(f"/content/{cid}")
    assert answer.status_code == 200
    assert compute_cid(answer.content) == cid
    assert answer.content == stack.store.get(cid)
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == IMMUTABLE
    assert answer.headers["etag"] == f'"{cid}"'


def test_content_answers_not_modified_to_its_etag(client, stack):
    cid = stack.history.report_cid
    answer = client.get(f"/content/{cid}", headers={"If-None-Match": f'"other", "{cid}"'})
    assert answer.status_code == 304 and answer.content == b""
    assert answer.headers["etag"] == f'"{cid}"'
    other = client.get(f"/content/{cid}", headers={"If-None-Match": '"bafkother"'})
    assert other.status_code == 200 and compute_cid(other.content) == cid


@pytest.mark.parametrize(
    "cid",
    [
        "not-a-cid",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        "B" + compute_cid(b"x")[1:].upper(),  # the same bytes, not the canonical spelling
        compute_cid(b"x")[:-1] + "b",  # padding bits set
        compute_cid(b"x") + "a",
    ],
)
def test_content_refuses_a_malformed_cid(client, cid: str):
    answer = client.get(f"/content/{cid}")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["path", "cid"]


@given(st.from_regex(CID_PATTERN, fullmatch=True))
def test_every_string_the_cid_pattern_admits_is_a_canonical_cid(text: str):
    assert str(CID.parse(text)) == text


def test_every_stored_cid_matches_the_cid_pattern():
    for n in range(50):
        for cid in (compute_cid(bytes(n)), compute_cid(bytes(n) * 5_000)):  # raw; dag-pb
            assert re.fullmatch(CID_PATTERN, cid), cid


def test_content_not_stored_is_not_found(client):
    cid = compute_cid(b"never stored anywhere")
    answer = client.get(f"/content/{cid}")
    assert answer.status_code == 404
    assert answer.json() == {"reason": f"no content stored under {cid}"}


def test_content_past_the_cap_is_refused(app_over, stack):
    cid = stack.history.report_cid
    size = len(stack.store.get(cid))
    capped = app_over(stack.store, max_content_bytes=size - 1)
    answer = capped.get(f"/content/{cid}")
    assert answer.status_code == 413
    assert answer.json()["reason"] == (
        f"content {cid} exceeds this API's max_content_bytes ({size - 1})"
    )
    assert app_over(stack.store, max_content_bytes=size).get(f"/content/{cid}").status_code == 200


def test_content_whose_stored_bytes_differ_is_a_bad_gateway(app_over, tmp_path: Path):
    store = DirectoryStore(tmp_path / "tampered")
    cid = store.put(b"the true bytes")
    (store.root / "blocks" / cid).write_bytes(b"other bytes")
    answer = app_over(store).get(f"/content/{cid}")
    assert answer.status_code == 502
    reason = answer.json()["reason"]
    assert reason.startswith("the content store returned bad bytes") and cid in reason
    assert compute_cid(b"other bytes") in reason


def test_content_from_an_unreachable_store_is_a_bad_gateway(app_over):
    store = IPFSStore(f"http://127.0.0.1:{free_port()}", read_timeout=5)  # nothing listens
    try:
        answer = app_over(store).get(f"/content/{compute_cid(b'x')}")
    finally:
        store.close()
    assert answer.status_code == 502
    assert answer.json()["reason"].startswith("the content store is unreachable or failed")


def test_max_content_bytes_comes_from_the_environment_and_must_be_positive(monkeypatch):
    assert Settings().max_content_bytes == 64 * 1024 * 1024
    monkeypatch.setenv("OPENLEDGER_API_MAX_CONTENT_BYTES", "1024")
    assert Settings().max_content_bytes == 1024
    with pytest.raises(ValidationError, match="max_content_bytes must be positive, not 0"):
        Settings(max_content_bytes=0)


def test_status_offers_the_configured_public_rpc_url(client, app_over, stack, monkeypatch):
    assert client.get("/status").json()["rpc_url"] is None
    url = "http://127.0.0.1:8545"
    assert app_over(stack.store, public_rpc_url=url).get("/status").json()["rpc_url"] == url
    monkeypatch.setenv("OPENLEDGER_API_PUBLIC_RPC_URL", "https://rpc.example.org")
    assert Settings().public_rpc_url == "https://rpc.example.org"
