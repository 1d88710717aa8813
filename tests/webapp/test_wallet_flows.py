"""The web app's wallet flows end to end in Chromium: a contributor claims its rewards, a
wallet user pays for three chat answers with a session key authorized by one signature (the
node redeems the vouchers afterwards), and what a person sees when they reject a signature or
their wallet is on another network."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.webapp.conftest import Stack, post_json

pytestmark = pytest.mark.slow

OPEN = 10**18
QUESTIONS = ("What is the capital of France?", "Who invented the telephone?", "Hello!")


def claimable(stack: Stack, account: str) -> list[dict[str, Any]]:
    page = stack.api(f"/attribution/accounts/{account.lower()}/claimable?limit=200")
    return [c for c in page["items"] if c["claimable"]]


def test_a_contributor_claims_its_rewards_through_the_wallet(
    stack: Stack, chain: Any, page_factory: Any
) -> None:
    contributor = stack.roles["contributor"]
    owed = claimable(stack, contributor)
    assert owed, "the demo leaves the contributor's claim for the web app"
    token, rewards = chain["OpenToken"].functions, chain["AttributionRewards"].functions
    before = token.balanceOf(contributor).call()
    page = page_factory(contributor)
    tab = page.open("contribute")
    page.connect()
    page.settle()
    entry = owed[0]
    assert tab.get_by_test_id("to-claim").inner_text().endswith("OPEN")
    page.screenshot("contributor")
    tab.get_by_test_id(f"claim-{entry['epoch_id']}").click()
    tab.get_by_text(
        re.compile(r"^Claimed .* from epoch \d+ \(transaction 0x[0-9a-f]{64}\)\.$")
    ).wait_for(timeout=30_000)
    # on-chain: the leaf is claimed and the balance moved by exactly its amount
    assert rewards.isClaimed(entry["epoch_id"], entry["index"]).call()
    assert token.balanceOf(contributor).call() == before + int(entry["amount"])
    assert "eth_sendTransaction" in page.wallet_log()
    # the API (index) agrees, and the page shows it after reloading its data
    assert entry["epoch_id"] not in {c["epoch_id"] for c in claimable(stack, contributor)}
    claims = stack.api(f"/attribution/accounts/{contributor.lower()}/claims")["items"]
    assert any(c["epoch_id"] == entry["epoch_id"] for c in claims)


def test_a_contributor_without_a_wallet_extension_uploads_and_contributes_a_file(
    stack: Stack, chain: Any, page_factory: Any, tmp_path: Any
) -> None:
    contributor = stack.roles["contributor"]
    rows = [
        {"prompt": f"What is the capital of Webland {i}?", "response": f"It is Browsea {i}."}
        for i in range(3)
    ]
    upload = tmp_path / "webland.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    registry = chain["DatanetRegistry"].functions
    token = chain["OpenToken"].functions
    before = token.balanceOf(contributor).call()
    bond = int(stack.api("/datanets/1")["contribution_bond"])
    # no browser wallet: the page's own "local test account" (anvil signs, as on a devnet)
    page = page_factory()
    tab = page.open("contribute")
    tab.get_by_label("Use a local test account").select_option(contributor)
    tab.get_by_test_id("account").wait_for()
    page.settle()
    tab.get_by_label("Datanet").select_option("1")
    tab.get_by_label("File").set_input_files(str(upload))
    tab.get_by_test_id("contribute").click()
    done = tab.get_by_text(re.compile(r"^Contributed (baf\w+) \(3 records\) to Datanet 1"))
    done.wait_for(timeout=30_000)
    cid = re.match(r"^Contributed (baf\w+)", done.inner_text()).group(1)  # type: ignore[union-attr]
    # stored by that CID (the API's store), registered on-chain pending review, bond taken
    assert stack.api("/datanets/1/contributions?status=pending")["items"][-1]["cid"] == cid
    contribution_id = registry.contributionIdOf(1, cid).call()
    assert registry.contribution(contribution_id).call()[0] == contributor
    assert token.balanceOf(contributor).call() == before - bond
    page.settle()
    assert tab.get_by_role("table", name="my contributions").get_by_text("pending").count() == 1


def fund(chain: Any, stack: Stack, account: str, amount: int) -> None:
    chain.transact(stack.roles["treasury"], chain["OpenToken"].functions.transfer(account, amount))


def test_a_wallet_user_pays_three_chat_answers_that_the_node_redeems_later(
    stack: Stack, chain: Any, page_factory: Any
) -> None:
    payer = chain.w3.to_checksum_address(stack.spare[0])
    node = chain.w3.to_checksum_address(stack.roles["node operator"])
    payments = chain["InferencePayments"].functions
    fund(chain, stack, payer, 50 * OPEN)
    page = page_factory(payer)
    tab = page.open("playground")
    page.connect()
    page.settle()
    # deposit 10 OPEN: the wallet approves and deposits (two transactions)
    tab.get_by_label("Deposit amount").fill("10")
    tab.get_by_test_id("deposit").click()
    tab.get_by_text(re.compile(r"^Deposited 10 OPEN into your channel")).wait_for(timeout=30_000)
    assert payments.channel(payer, node).call()[0] == 10 * OPEN
    assert page.wallet_log().count("eth_sendTransaction") == 2
    # the session key: one signature, no transaction
    sent_before = page.wallet_log().count("eth_sendTransaction")
    tab.get_by_label("Session key allowance").fill("5")
    tab.get_by_test_id("authorize").click()
    tab.get_by_text(re.compile(r"^Signed\. The node submits the authorization")).wait_for()
    assert page.wallet_log().count("eth_signTypedData_v4") == 1
    assert page.wallet_log().count("eth_sendTransaction") == sent_before
    # three paid answers, each signed by the session key in the page
    for i, question in enumerate(QUESTIONS, start=1):
        tab.get_by_label("Message", exact=True).fill(question)
        tab.get_by_test_id("send").click()
        tab.get_by_test_id("answer").nth(i - 1).wait_for(timeout=120_000)
        assert tab.get_by_test_id("answer").count() == i
    assert page.wallet_log().count("eth_signTypedData_v4") == 1  # the wallet signed once
    prices = [t.inner_text() for t in tab.get_by_test_id("answer-price").all()]
    assert len(prices) == 3 and all(p.endswith("OPEN") for p in prices)
    page.settle()
    page.screenshot("playground")
    # the node submitted the authorization: the key is live with the allowance signed
    signer = tab.evaluate(
        "() => [...document.querySelectorAll('.mono')].map(e => e.textContent)"
        ".find(t => /^0x[0-9a-fA-F]{40}$/.test(t))"
    )
    key = payments.sessionKey(payer, node, signer).call()
    assert key[1] == 5 * OPEN and key[0] > 0
    # the node redeems on its own schedule; what it holds still is redeemed now: the channel
    # pays the latest voucher's cumulative amount (each answer prepaid at its quote; what a
    # receipt did not use stays credit for the next), drawn through the session key
    post_json(f"{stack.node_url}/node/redeem")
    cumulative = int(tab.get_by_test_id("answer-cumulative").last.get_attribute("data-wei"))
    model_id = int(stack.api("/models")["items"][0]["id"])
    assert payments.redeemed(payer, node, model_id).call() == cumulative > 0
    assert payments.channel(payer, node).call()[0] == 10 * OPEN - cumulative
    assert payments.sessionKey(payer, node, signer).call()[2] == cumulative  # drawn by the key
    # rate the first answer once its receipt is published (the redemption indexed): signed by
    # the paying wallet
    deadline = time.monotonic() + 30
    while int(stack.api(f"/payments/accounts/{payer}")["spent"]) < cumulative:
        assert time.monotonic() < deadline, "the index never showed the redemption"
        time.sleep(0.25)
    tab.get_by_test_id("rate-5").first.click()
    tab.get_by_text(re.compile(r"Rated 5/5: stored for the model's next DPO round")).wait_for(
        timeout=30_000
    )
    assert page.wallet_log().count("eth_signTypedData_v4") == 2


def test_a_rejected_signature_shows_what_happened_and_signs_nothing(
    stack: Stack, chain: Any, page_factory: Any
) -> None:
    payer = chain.w3.to_checksum_address(stack.spare[1])
    node = chain.w3.to_checksum_address(stack.roles["node operator"])
    fund(chain, stack, payer, 20 * OPEN)
    payments = chain["InferencePayments"]
    chain.transact(payer, chain["OpenToken"].functions.approve(payments.address, 5 * OPEN))
    chain.transact(payer, payments.functions.deposit(node, 5 * OPEN))
    page = page_factory(payer, rejectSignatures=True)
    tab = page.open("playground")
    page.connect()
    page.settle()
    tab.get_by_label("Session key allowance").fill("1")
    tab.get_by_test_id("authorize").click()
    message = tab.get_by_role("alert").filter(has_text="You rejected the request in your wallet")
    message.wait_for()
    assert "nothing was signed or sent" in message.inner_text()
    assert tab.get_by_test_id("session-status").inner_text() == "not authorized"
    page.screenshot("rejected-signature")


def test_a_wallet_on_another_network_is_asked_to_switch_and_told_when_it_cannot(
    stack: Stack, page_factory: Any
) -> None:
    account = stack.spare[2]
    # a wallet that switches when asked: connected on the protocol's chain
    page = page_factory(account, chainId=1)
    page.open("contribute")
    page.connect()
    assert "wallet_switchEthereumChain" in page.wallet_log()
    assert page.tab.locator(".walletbar .chain").inner_text() == "chain 31337"
    # a wallet that cannot switch: a message naming both chains, and no account connected
    page = page_factory(account, chainId=1, refuseSwitch=True)
    tab = page.open("contribute")
    tab.get_by_test_id("connect").click()
    error = tab.get_by_test_id("wallet-error")
    error.wait_for()
    assert re.search(r"your wallet is on chain 1, but this OpenLedger deployment is on chain "
                     r"31337", error.inner_text())  # fmt: skip
    assert tab.get_by_test_id("account").count() == 0
    page.screenshot("wrong-network")
