"""The explorer in Chromium shows what the chain holds: every page of the demo's state renders
with no error and no console error, and its numbers are the API's (the index of the chain);
the CIDs it shows verify in the browser, a multi-chunk adapter included. Takes the README's
screenshots."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from tests.webapp.conftest import Stack

pytestmark = pytest.mark.slow


def shown_open(text: str) -> Decimal:
    """The amount a page shows ("1,234.5 OPEN")."""
    match = re.fullmatch(r"([\d,]+(?:\.\d+)?) OPEN", text.strip())
    assert match, f"not an OPEN amount: {text!r}"
    return Decimal(match.group(1).replace(",", ""))


def assert_open(text: str, wei: str | int, places: int = 2) -> None:
    """``text`` shows ``wei`` (the page truncates to a few decimals)."""
    exact = Decimal(int(wei)) / Decimal(10**18)
    assert abs(shown_open(text) - exact) < Decimal(10) ** -places, (text, exact)


def test_every_explorer_page_shows_what_the_api_indexed(stack: Stack, page_factory: Any) -> None:
    page = page_factory()
    api = stack.api

    def open_page(route: str, screenshot: str | None = None) -> Any:
        tab = page.open(route)
        assert tab.get_by_role("alert").count() == 0, tab.get_by_role("alert").all_inner_texts()
        if screenshot:
            page.screenshot(screenshot)
        return tab

    def shown(tab: Any, testid: str) -> str:
        return tab.get_by_test_id(testid).first.inner_text().strip()

    # overview
    tab = open_page("", "overview")
    assert int(shown(tab, "datanet-count")) == api("/datanets")["total"]
    assert int(shown(tab, "model-count")) == api("/models")["total"]
    epochs = api("/attribution/epochs")
    assert int(shown(tab, "epoch-count")) == epochs["total"]
    redemptions = api("/payments/redemptions?limit=200")
    assert_open(shown(tab, "paid-total"), sum(int(r["paid"]) for r in redemptions["items"]))

    # the lists
    tab = open_page("datanets")
    assert int(shown(tab, "datanet-count")) == api("/datanets")["total"]
    tab = open_page("models")
    assert int(shown(tab, "model-count")) == api("/models")["total"]
    tab = open_page("nodes")
    assert int(shown(tab, "node-count")) == api("/nodes")["total"]
    tab = open_page("epochs")
    assert int(shown(tab, "epoch-count")) == epochs["total"]

    # a Datanet: its counts, and the audit of its version against the manifest and the chain
    datanet = api("/datanets/1")
    tab = open_page("datanets/1", "datanet")
    assert int(shown(tab, "datanet-contribution-count")) == datanet["contribution_count"]
    assert int(shown(tab, "datanet-approved-count")) == datanet["approved_count"]
    assert int(shown(tab, "datanet-version-count")) == datanet["version_count"]
    assert "verified" in shown(tab, "audit-verdict-1")

    # a model, and a version's lineage down to the adapter and its evaluation
    model = api("/models/1")
    tab = open_page("models/1", "model")
    assert shown(tab, "model-status") == model["status"]
    assert int(shown(tab, "model-version-count")) == model["version_count"]
    assert_open(shown(tab, "price-per-request"), model["pricing"]["per_request"], places=4)
    for share, bps in model["split"].items():
        assert int(shown(tab, f"model-split-{share}")) == bps
    version = api("/models/1/versions/1")
    tab = open_page("models/1/versions/1", "model-lineage")
    lineage = shown(tab, "lineage")
    for cid in (version["adapter_cid"], version["training_manifest_cid"]):
        assert cid[:10] in lineage
    assert "adapter loss" in shown(tab, "eval-metrics")

    # the node
    node = api(f"/nodes/{stack.roles['node operator']}")
    tab = open_page(f"nodes/{node['address']}", "node")
    assert_open(shown(tab, "node-bonded"), node["bonded"])
    assert_open(shown(tab, "node-slashed"), node["slashed"])
    assert shown(tab, "node-endpoint") == node["endpoint"] == stack.node_url

    # payments and a usage proof, whose receipts log is fetched and checked in the page
    proofs = api("/usage-proofs")
    tab = open_page("payments", "payments")
    assert int(shown(tab, "redemption-count")) == redemptions["total"]
    assert int(shown(tab, "usage-proof-count")) == proofs["total"]
    proof = api(f"/usage-proofs/{proofs['items'][0]['id']}")
    tab = open_page(f"usage-proofs/{proof['id']}")
    assert int(shown(tab, "proof-receipt-count")) == proof["receipt_count"]
    assert shown(tab, "proof-root") == proof["receipts_root"]
    tab.get_by_test_id("verify-receipts").click()
    tab.get_by_test_id("receipts-verdict").first.wait_for()
    page.settle()
    assert "match" in shown(tab, "receipts-verdict") and "mismatch" not in shown(
        tab, "receipts-verdict"
    )
    page.screenshot("usage-proof")

    # the honest epoch: status, total, its root recomputed from the report, claimed leaves
    honest = next(e for e in epochs["items"] if e["status"] == "posted")
    tab = open_page(f"epochs/{honest['id']}", "epoch")
    assert shown(tab, "epoch-status") == honest["status"]
    assert_open(shown(tab, "epoch-total"), honest["total"], places=4)
    assert_open(shown(tab, "epoch-claimed"), honest["claimed"], places=4)
    assert "match" in shown(tab, "epoch-root-verdict")
    claims = api(f"/attribution/epochs/{honest['id']}/claims")["items"]
    for claim in claims:
        assert shown(tab, f"leaf-{claim['index']}-claimed") == "claimed"

    # an account: the contributor's contributions and earnings
    contributor = stack.roles["contributor"].lower()
    earnings = api(f"/attribution/accounts/{contributor}/earnings")
    tab = open_page(f"accounts/{contributor}", "account")
    contributions = api(f"/contributions?contributor={contributor}")
    assert int(shown(tab, "account-contribution-count")) == contributions["total"]
    assert_open(shown(tab, "account-total-earned"), earnings["total_earned"], places=4)


def test_the_page_recomputes_every_kind_of_cid_it_shows(stack: Stack, page_factory: Any) -> None:
    """A contribution (one raw block) and the adapter (several 256 KiB chunks under dag-pb
    nodes): the CID computed in the browser equals the one the chain registered."""
    page = page_factory()
    contribution = stack.api("/contributions/1")["cid"]
    adapter = stack.api("/models/1/versions/1")["adapter_cid"]
    for cid, screenshot in ((contribution, "content"), (adapter, None)):
        tab = page.open(f"content/{cid}")
        assert "verified" in tab.get_by_test_id("cid-verdict").inner_text()
        assert tab.get_by_test_id("cid-computed").inner_text().strip() == cid
        if screenshot:
            page.screenshot(screenshot)
    assert adapter.startswith("bafybei")  # dag-pb root: the multi-chunk path was exercised
