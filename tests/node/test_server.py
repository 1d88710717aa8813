"""The node's OpenAI-compatible API, driven by the official ``openai`` client paying through the
SDK: listing, chat and text completions (plain and streamed) that match PEFT's own output, the
402 payment answer, bad requests, and redemption of what was served as an on-chain usage proof."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from eth_account import Account
from transformers import AutoTokenizer
from x402.http.utils import decode_payment_required_header

from backend.protocol.inference_client import VoucherWallet, openai_client
from backend.protocol.receipts import read_usage_log
from backend.storage.local import DirectoryStore
from inference_node.engine.packaging import put_adapter
from inference_node.payments import receipts_tree
from tests.engine.conftest import AdapterRecipe, build_adapter, peft_reference
from tests.node.conftest import OPEN, PRICING, World
from tests.node.server_fixtures import (
    Checkpoint,
    build_runtime,
    make_checkpoint,
    node_settings,
    register_served_model,
    serving,
)

MESSAGES = [{"role": "user", "content": "How many grams in a kilogram?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture
def node(world: World, checkpoint: Checkpoint, tmp_path: Path) -> Iterator[tuple[str, object]]:
    store = DirectoryStore(tmp_path / "store")
    model_id = register_served_model(world, store, checkpoint)
    runtime = build_runtime(
        world, node_settings(tmp_path / "node", tmp_path / "store", world), checkpoint, store
    )
    with serving(runtime) as url:
        yield url, runtime, model_id


@pytest.fixture
def client(world: World, node) -> openai.OpenAI:
    url, _, _ = node
    wallet = VoucherWallet(world.roles.payer, world.payer_key, node=world.roles.node)
    return openai_client(f"{url}/v1", wallet)


def reference_text(checkpoint: Checkpoint, prompt_ids: list[int], new: int) -> tuple[str, int]:
    """PEFT's greedy continuation (text, tokens generated incl. a final eos) of ``prompt_ids``."""
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.base))
    model = peft_reference(checkpoint.base, checkpoint.adapter)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    generated = out[0, len(prompt_ids) :].tolist()
    return tokenizer.decode(generated, skip_special_tokens=True), len(generated)


def chat_prompt(checkpoint: Checkpoint) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.base))
    return list(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))


def test_models_lists_the_served_model_with_its_adapter_and_price(client, node) -> None:
    _, _, model_id = node
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {str(model_id)}  # model 1's adapter CID is not a real CID
    entry = listed[str(model_id)].model_dump()
    assert entry["version"] == 1
    assert entry["pricing"] == {
        "per_request": str(PRICING.per_request),
        "per_token": str(PRICING.per_token),
    }


def test_chat_completion_is_paid_and_matches_peft(client, node, checkpoint: Checkpoint) -> None:
    _, runtime, model_id = node
    answer = client.chat.completions.create(
        model=str(model_id), messages=MESSAGES, max_tokens=10, temperature=0
    )
    prompt = chat_prompt(checkpoint)
    text, generated = reference_text(checkpoint, prompt, 10)
    assert answer.choices[0].message.content == text
    assert answer.usage.prompt_tokens == len(prompt)
    assert answer.usage.completion_tokens == generated
    extension = answer.model_extra["openledger"]
    price = PRICING.price(len(prompt), generated)
    assert int(extension["price"]) == price
    receipts = runtime.ledger.pending_receipts()
    assert [r.price for _, r in receipts] == [price]
    assert receipts[0][0] == extension["receipt_id"]
    assert receipts[0][1].tokens_out == generated and receipts[0][1].adapter_version == 1


def test_streamed_chat_equals_the_plain_answer(client, node) -> None:
    _, runtime, model_id = node
    kwargs = {"model": str(model_id), "messages": MESSAGES, "max_tokens": 10, "temperature": 0}
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    usage = {"include_usage": True}
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options=usage))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["openledger"]["receipt_id"] == 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert len(runtime.ledger.pending_receipts()) == 2


def test_text_completion_with_stop_sequence(client, node, checkpoint: Checkpoint) -> None:
    _, _, model_id = node
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.base))
    full, _ = reference_text(checkpoint, tokenizer.encode("12 inches ="), 12)
    assert len(full) >= 4, "the tiny model's continuation is too short to cut"
    stop = full[2:4]
    answer = client.completions.create(
        model=str(model_id), prompt="12 inches =", max_tokens=12, temperature=0, stop=[stop]
    )
    assert answer.choices[0].text == full[: full.find(stop)]
    assert answer.choices[0].finish_reason == "stop"


def test_request_without_voucher_gets_402_with_a_quote(world: World, node) -> None:
    url, _, model_id = node
    body = {"model": str(model_id), "messages": MESSAGES, "max_tokens": 10}
    response = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"X-OpenLedger-Payer": world.roles.payer}
    )
    assert response.status_code == 402
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    [requirement] = required.accepts
    assert requirement.scheme == "openledger-voucher" and requirement.pay_to == world.roles.node
    assert requirement.network == f"eip155:{world.w3.eth.chain_id}"
    assert requirement.extra["channel"]["modelId"] == str(model_id)
    assert int(requirement.amount) == int(requirement.extra["cumulativeAmount"]) > 0
    assert required.resource is not None and required.resource.url.endswith("/chat/completions")
    spec = httpx.get(f"{url}/openapi.json").json()
    documented = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["402"]
    assert "PAYMENT-REQUIRED" in documented["headers"]
    unpaid = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
    with pytest.raises(openai.APIStatusError) as refused:
        unpaid.chat.completions.create(model=str(model_id), messages=MESSAGES)
    assert refused.value.status_code == 402


def test_bad_requests_name_what_is_wrong(client, node) -> None:
    _, _, model_id = node
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.chat.completions.create(model="99", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError, match="registered model id"):
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="n=2"):
        client.chat.completions.create(model=str(model_id), messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError, match="limit of 64"):
        client.chat.completions.create(model=str(model_id), messages=MESSAGES, max_tokens=65)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=str(model_id), messages=MESSAGES, temperature=5)


def test_session_key_pays_and_redemption_records_the_usage_proof(
    world: World, node, tmp_path: Path
) -> None:
    url, runtime, model_id = node
    wallet = VoucherWallet(world.roles.payer, world.session_key, node=world.roles.node)
    client = openai_client(f"{url}/v1", wallet)
    for question in ("1 km in m?", "1 lb in g?", "1 h in s?"):
        client.chat.completions.create(
            model=str(model_id), messages=[{"role": "user", "content": question}], max_tokens=6
        )
    receipts = [r for _, r in runtime.ledger.pending_receipts()]
    assert len(receipts) == 3
    payments = world.payments.functions
    before = payments.channel(world.roles.payer, world.roles.node).call()[0]
    done = httpx.post(f"{url}/node/redeem", timeout=60).json()
    assert done["redeemed"] is True and done["receipts"] == 3
    record = payments.usageRecord(done["usage_proof_id"]).call()
    assert bytes(record[0]) == receipts_tree(receipts).root
    assert (record[1], record[2]) == (world.roles.node, 3)
    logged = read_usage_log(runtime.store.get, done["receipts_cid"]).receipts
    assert logged == receipts
    accepted = runtime.ledger.channel(world.roles.payer, model_id).accepted
    assert payments.redeemed(world.roles.payer, world.roles.node, model_id).call() == accepted
    assert before - payments.channel(world.roles.payer, world.roles.node).call()[0] == accepted
    assert int(done["paid"]) == accepted and accepted < OPEN
    status = httpx.get(f"{url}/node/status").json()
    assert status["payments"]["pending_receipts"] == 0
    assert status["payments"]["redemptions"]["confirmed"] == 1
    assert Account.from_key(world.session_key).address != world.roles.payer


REFUSED = {
    "rank 32": (AdapterRecipe(32, 64, ("q_proj", "v_proj")), {}),  # the node's max_rank is 16
    # issue 13, point 13: served as a plain LoRA before, with other answers than PEFT's
    "alora_invocation_tokens=[5, 6] (implemented: null)": (
        AdapterRecipe(4, 8, ("q_proj", "v_proj")), {"alora_invocation_tokens": [5, 6]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("reason", sorted(REFUSED), ids=lambda reason: reason.split()[0])
def test_a_refused_adapter_is_a_4xx_that_says_why(world: World, node, checkpoint: Checkpoint,
                                                 tmp_path: Path, reason: str) -> None:  # fmt: skip
    """Issue 13, point 14: a permanently refused adapter answered 503, which the official openai
    client retries as temporary; it is a 422 that names the reason now."""
    url, runtime, _ = node
    recipe, options = REFUSED[reason]
    folder = build_adapter(checkpoint.base, tmp_path / "refused", recipe, seed=3, **options)
    r, p = world.roles, world.protocol
    spec = (
        "bafkmeta", checkpoint.base_cid, put_adapter(runtime.store, folder), "bafkmanifest", 1, 1,
        (PRICING.per_request, PRICING.per_token), (6_000, 2_000, 1_500, 500), r.node,
    )  # fmt: skip
    p.transact(r.developer, p["ModelRegistry"].functions.registerModel(spec))
    model_id = int(p["ModelRegistry"].functions.modelCount().call())
    runtime.catalog.refresh()
    wallet = VoucherWallet(r.payer, world.payer_key, node=r.node)
    client = openai_client(f"{url}/v1", wallet, max_retries=3)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.completions.create(model=str(model_id), prompt="tide", max_tokens=2)
    assert refused.value.code == "adapter_refused" and reason in str(refused.value)
    assert runtime.ledger.channel(r.payer, model_id).consumed == 0  # nothing was charged
