"""CORS on the node's HTTP API, so a web page on another origin can pay per answer: a
preflight for a paid request passes with the payment headers, and the x402 headers of an answer
are exposed to the page (browsers hide them otherwise). Without ``cors_origins``: no CORS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from backend.protocol.payment_http import PAYER_HEADER, PAYMENT_SIGNATURE_HEADER
from tests.node.conftest import World
from tests.node.server_fixtures import (
    Checkpoint,
    NodeFactory,
    make_checkpoint,
    node_factory,
)

PAGE = "https://playground.example"
MESSAGES = [{"role": "user", "content": "How many grams in a kilogram?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture
def node(world: World, checkpoint: Checkpoint, tmp_path: Path) -> NodeFactory:
    """Serves the node with extra settings; yields (its URL, the served model id)."""
    return node_factory(world, checkpoint, tmp_path)


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{url}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": (
                f"content-type,authorization,{PAYMENT_SIGNATURE_HEADER.lower()},"
                f"{PAYER_HEADER.lower()}"
            ),
        },
    )


def unpaid(url: str, model_id: int, world: World, origin: str) -> httpx.Response:
    body = {"model": str(model_id), "messages": MESSAGES, "max_tokens": 4}
    headers = {"Origin": origin, PAYER_HEADER: world.roles.payer}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)


def listed(value: str) -> set[str]:
    return {name.strip().lower() for name in value.split(",")}


def test_preflight_of_a_paid_request_from_an_allowed_page_passes(
    world: World, node: NodeFactory
) -> None:
    with node(cors_origins=[PAGE]) as (url, _):
        allowed = preflight(url, PAGE)
        refused = preflight(url, "https://elsewhere.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == PAGE
    assert listed(allowed.headers["access-control-allow-methods"]) == {"get", "post"}
    assert listed(allowed.headers["access-control-allow-headers"]) >= {
        "content-type", "authorization", "payment-signature", "x-openledger-payer",
    }  # fmt: skip
    assert "access-control-allow-credentials" not in allowed.headers  # signatures, no cookies
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_a_402_exposes_the_x402_headers_to_the_page(world: World, node: NodeFactory) -> None:
    with node(cors_origins=[PAGE]) as (url, model_id):
        answer = unpaid(url, model_id, world, PAGE)
    assert answer.status_code == 402 and answer.headers["PAYMENT-REQUIRED"]
    assert answer.headers["access-control-allow-origin"] == PAGE
    exposed = listed(answer.headers["access-control-expose-headers"])
    assert exposed == {"payment-required", "payment-response"}


def test_without_cors_origins_the_node_sends_no_cors_headers(
    world: World, node: NodeFactory
) -> None:
    with node() as (url, model_id):
        answer = unpaid(url, model_id, world, PAGE)
        options = preflight(url, PAGE)
    assert answer.status_code == 402
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
    assert options.status_code == 405  # no CORS middleware answers preflights
