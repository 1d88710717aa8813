"""Continuous batching: requests on different adapters that join and leave a running batch get
the tokens PEFT's own model gives each of them alone; sampling, stops, streaming, cancellation,
refused adapters and slot pressure."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import torch

from backend.storage.local import DirectoryStore
from inference_node.engine import MultiLoraModel
from inference_node.engine.adapters import AdapterError
from inference_node.engine.kv_cache import BatchKVCache
from inference_node.engine.packaging import put_adapter
from inference_node.engine.pool import AdapterPool
from inference_node.engine.sampling import SamplingParams, nucleus_probs
from inference_node.engine.scheduler import (
    Completion,
    GenerationError,
    RequestHandle,
    Scheduler,
    TextDelta,
)
from tests.engine.conftest import (
    MAX_RANK,
    RECIPES,
    VOCAB,
    build_adapter,
    load_base,
    peft_reference,
)
from tests.engine.test_model import ADAPTER_ORDER

EOS = 2
NEW_TOKENS = 10


class ByteTokenizer:
    """Token ids 0-255 are bytes (UTF-8), ids 256+ special: the simplest real byte tokenizer."""

    eos_token_id = EOS

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(t for t in token_ids if t < 256).decode("utf-8", errors="replace")


def prompts(count: int, seed: int = 7) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(3, VOCAB, (int(length),), generator=generator).tolist()
        for length in torch.randint(2, 12, (count,), generator=generator)
    ]


@pytest.fixture(scope="module")
def store_and_cids(
    tmp_path_factory: pytest.TempPathFactory, adapter_folders: dict[str, Path]
) -> tuple[DirectoryStore, dict[str, str]]:
    store = DirectoryStore(tmp_path_factory.mktemp("store"))
    return store, {name: put_adapter(store, adapter_folders[name]) for name in ADAPTER_ORDER}


def make_engine(
    base_folder: Path,
    store_and_cids: tuple[DirectoryStore, dict[str, str]],
    cache_dir: Path,
    slots: int = 4,
    **kwargs: object,
) -> Scheduler:
    model = MultiLoraModel(load_base(base_folder), slots=slots, max_rank=MAX_RANK)
    store, cids = store_and_cids
    pool = AdapterPool(model, store, cache_dir, cpu_capacity_bytes=1 << 30)
    for name, cid in cids.items():
        pool.register(name, cid)
    return Scheduler(model, ByteTokenizer(), pool, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def engine(
    base_folder: Path, store_and_cids: tuple[DirectoryStore, dict[str, str]], tmp_path: Path
):
    with make_engine(base_folder, store_and_cids, tmp_path / "cache") as scheduler:
        yield scheduler


@pytest.fixture(scope="module")
def reference_tokens(base_folder: Path, adapter_folders: dict[str, Path]):
    """Greedy tokens of (adapter, prompt) computed by PEFT's PeftModel (or the bare base) alone."""
    models: dict[str | None, torch.nn.Module] = {
        name: peft_reference(base_folder, adapter_folders[name]) for name in ADAPTER_ORDER
    }
    models[None] = load_base(base_folder)
    memo: dict[tuple[str | None, tuple[int, ...]], list[int]] = {}

    def tokens(adapter: str | None, prompt: list[int], new: int = NEW_TOKENS) -> list[int]:
        key = (adapter, tuple(prompt))
        if key not in memo:
            with torch.no_grad():
                out = models[adapter].generate(
                    input_ids=torch.tensor([prompt]),
                    attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    pad_token_id=0,
                )
            memo[key] = out[0, len(prompt) :].tolist()
        return memo[key]

    return tokens


def greedy(new: int = NEW_TOKENS) -> SamplingParams:
    return SamplingParams(max_tokens=new, temperature=0.0)


def test_mixed_batch_equals_peft_per_request(engine: Scheduler, reference_tokens) -> None:
    # EOS is never a stop here: the tiny random model must run all NEW_TOKENS steps
    engine.stop_token_ids = frozenset()
    adapters = [*ADAPTER_ORDER, None, "all_r8", "attn_qv_r4", None]
    handles = [
        engine.submit(p, greedy(), adapter=a) for p, a in zip(prompts(8), adapters, strict=True)
    ]
    for handle in handles:
        done = handle.result(timeout=60)
        assert list(done.token_ids) == reference_tokens(handle.adapter, handle.prompt_ids)
        assert done.finish_reason == "length"
        assert (done.prompt_tokens, done.completion_tokens) == (len(handle.prompt_ids), NEW_TOKENS)
    assert engine.stats().prefills >= 1


def test_requests_join_and_leave_a_running_batch(engine: Scheduler, reference_tokens) -> None:
    engine.stop_token_ids = frozenset()
    first = [
        engine.submit(p, greedy(new), adapter=a)
        for p, a, new in zip(prompts(3, seed=1), ADAPTER_ORDER, (4, 12, 20), strict=False)
    ]
    next(iter(first[2]))  # the batch is decoding
    later = [
        engine.submit(p, greedy(), adapter=a)
        for p, a in zip(prompts(3, seed=2), ("ko_r16", None, "mlp_r2_rslora"), strict=True)
    ]
    for handle in first + later:
        done = handle.result(timeout=60)
        expected = reference_tokens(handle.adapter, handle.prompt_ids, handle.params.max_tokens)
        assert list(done.token_ids) == expected, handle.request_id
    stats = engine.stats()
    assert stats.prefills >= 2  # the later requests were prefilled into a running batch
    assert stats.running == 0 and stats.waiting == 0


def test_kv_cache_rows_join_with_left_padding_and_leave_by_swap() -> None:
    config = load_base_config()
    cache = BatchKVCache(config, max_rows=4)
    heads, dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    a = torch.randn(2, heads, 3, dim)
    b = torch.randn(1, heads, 5, dim)
    other = BatchKVCache(config, max_rows=2)
    for layer in range(config.num_hidden_layers):
        cache.update(a, a + 1, layer)
        other.update(b, b + 1, layer)
    cache.append_rows(other)
    keys = cache.layers[0].keys
    assert (cache.rows, cache.length) == (3, 5)
    assert torch.equal(keys[:2, :, 2:], a) and torch.equal(
        keys[:2, :, :2], torch.zeros(2, heads, 2, dim)
    )
    assert torch.equal(keys[2], b[0])
    cache.remove_row(0)
    assert cache.rows == 2 and torch.equal(cache.layers[0].keys[0], b[0])
    cache.trim_left(2)
    assert torch.equal(cache.layers[0].keys[1], a[1])
    with pytest.raises(ValueError, match="exceed the max"):
        cache.append_rows(other) or cache.append_rows(other) or cache.append_rows(other)


def load_base_config():
    from tests.engine.conftest import tiny_llama_config

    return tiny_llama_config()


def test_seeded_sampling_ignores_batch_companions(engine: Scheduler) -> None:
    engine.stop_token_ids = frozenset()
    params = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.8, seed=42)
    prompt = prompts(1, seed=3)[0]
    alone = engine.submit(prompt, params, adapter="all_r8").result(timeout=60)
    crowd = [engine.submit(p, greedy(), adapter="ko_r16") for p in prompts(4, seed=4)]
    together = engine.submit(prompt, params, adapter="all_r8").result(timeout=60)
    for handle in crowd:
        handle.result(timeout=60)
    other_seed = engine.submit(
        prompt, SamplingParams(max_tokens=8, temperature=0.9, top_p=0.8, seed=43), "all_r8"
    ).result(timeout=60)
    assert alone.token_ids == together.token_ids
    assert other_seed.token_ids != alone.token_ids


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = nucleus_probs(logits, temperature=1.0, top_p=0.7)
    assert torch.allclose(kept, torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]))
    assert torch.allclose(nucleus_probs(logits, 1.0, 0.1), torch.tensor([1.0, 0, 0, 0]))
    sharp = nucleus_probs(logits, temperature=0.5, top_p=1.0)
    assert sharp[0] > 0.5 and torch.isclose(sharp.sum(), torch.tensor(1.0))


def test_stop_token_ends_the_request(engine: Scheduler, reference_tokens) -> None:
    engine.stop_token_ids = frozenset()
    prompt = prompts(1, seed=5)[0]
    tokens = reference_tokens("all_r8", prompt)
    engine.stop_token_ids = frozenset({tokens[3]})
    cut = tokens.index(tokens[3])
    done = engine.submit(prompt, greedy(), adapter="all_r8").result(timeout=60)
    assert list(done.token_ids) == tokens[:cut]
    assert done.finish_reason == "stop" and done.completion_tokens == cut + 1


class LetterTokenizer(ByteTokenizer):
    """Maps every id to a printable letter so stop strings can be found in the tiny model's text."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(ord("a") + t % 26) for t in token_ids)


def test_stop_sequence_truncates_text_and_streaming_holds_it_back(
    engine: Scheduler, reference_tokens
) -> None:
    engine.stop_token_ids = frozenset()
    engine.tokenizer = LetterTokenizer()
    prompt = prompts(1, seed=6)[0]
    letters = LetterTokenizer().decode(reference_tokens(None, prompt))
    stop = letters[4:6]
    at = letters.find(stop)
    handle = engine.submit(
        prompt, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, stop=(stop,))
    )
    streamed = "".join(delta.text for delta in handle)
    done = handle.result()
    assert done.text == streamed == letters[:at]
    assert done.finish_reason == "stop"


def test_async_stream_yields_deltas_then_completion(engine: Scheduler) -> None:
    engine.stop_token_ids = frozenset()
    engine.tokenizer = LetterTokenizer()

    async def consume() -> tuple[list[TextDelta], Completion]:
        handle = engine.submit(prompts(1, seed=8)[0], greedy(6), adapter="ko_r16")
        deltas = [delta async for delta in handle.stream()]
        return deltas, await handle.aresult()

    deltas, done = asyncio.run(consume())
    assert len(deltas) == 6 and "".join(d.text for d in deltas) == done.text
    assert done.completion_tokens == 6


def test_cancel_stops_generation_and_frees_the_row(engine: Scheduler) -> None:
    engine.stop_token_ids = frozenset()
    handle = engine.submit(prompts(1)[0], greedy(110), adapter="all_r8")
    next(iter(handle))
    handle.cancel()
    done = handle.result(timeout=60)
    assert done.finish_reason == "cancelled" and done.completion_tokens < 110
    deadline = time.monotonic() + 5
    while engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats().running == 0
    assert engine.pool is not None and engine.pool.stats().device_adapters >= 1
    engine.pool.unregister("all_r8")  # released: no longer held


def test_refused_adapter_fails_only_its_request(
    engine: Scheduler, tmp_path: Path, store_and_cids
) -> None:
    engine.stop_token_ids = frozenset()
    store, _ = store_and_cids
    bad = tmp_path / "bad"
    bad.mkdir()
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    (bad / "adapter_config.json").write_text(json.dumps(config))
    (bad / "adapter_model.safetensors").write_bytes(b"not safetensors")
    assert engine.pool is not None
    engine.pool.register("bad", put_adapter(store, bad))
    good = engine.submit(prompts(1)[0], greedy(), adapter="attn_qv_r4")
    refused = engine.submit(prompts(1)[0], greedy(), adapter="bad")
    with pytest.raises(GenerationError) as failure:
        refused.result(timeout=60)
    assert failure.value.reason == "adapter"
    assert "unreadable adapter_model.safetensors" in str(failure.value)
    assert good.result(timeout=60).completion_tokens == NEW_TOKENS


def test_an_alora_adapter_fails_its_request_naming_the_option(
    engine: Scheduler, base_folder: Path, tmp_path: Path, store_and_cids
) -> None:
    """Issue 13, point 13: an aLoRA adapter by CID was served as a plain LoRA; its request now
    fails as refused (the server's 422 ``adapter_refused``) and the reason names the option."""
    store, _ = store_and_cids
    folder = build_adapter(base_folder, tmp_path / "alora", RECIPES["attn_qv_r4"], seed=5,
                           alora_invocation_tokens=[5, 6])  # fmt: skip
    assert engine.pool is not None
    engine.pool.register("alora", put_adapter(store, folder))
    refused = engine.submit(prompts(1)[0], greedy(), adapter="alora")
    with pytest.raises(GenerationError) as failure:
        refused.result(timeout=60)
    assert failure.value.reason == "adapter"
    assert "alora_invocation_tokens=[5, 6] (implemented: null)" in str(failure.value)


def test_bad_requests_are_refused_at_submit(engine: Scheduler) -> None:
    with pytest.raises(ValueError, match="empty"):
        engine.submit([], greedy())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.submit([1, VOCAB], greedy())
    with pytest.raises(ValueError, match="context of 128 tokens"):
        engine.submit([1] * 100, greedy(29))
    with pytest.raises(AdapterError, match="not registered"):
        engine.submit([1, 2], greedy(), adapter="nobody")
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=3.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)


def test_more_adapters_than_slots_all_complete(
    base_folder: Path, store_and_cids, tmp_path: Path, reference_tokens
) -> None:
    with make_engine(base_folder, store_and_cids, tmp_path / "cache", slots=2) as engine:
        engine.stop_token_ids = frozenset()
        handles = [
            engine.submit(p, greedy(), adapter=a)
            for p, a in zip(prompts(8, seed=9), ADAPTER_ORDER * 2, strict=True)
        ]
        for handle in handles:
            done = handle.result(timeout=120)
            assert list(done.token_ids) == reference_tokens(handle.adapter, handle.prompt_ids)
        assert engine.pool is not None and engine.pool.stats().device_evictions >= 2


def test_close_fails_what_is_unfinished(base_folder: Path, store_and_cids, tmp_path: Path) -> None:
    engine = make_engine(base_folder, store_and_cids, tmp_path / "cache").start()
    engine.stop_token_ids = frozenset()
    handle: RequestHandle = engine.submit(prompts(1)[0], greedy(110))
    next(iter(handle))
    engine.close()
    with pytest.raises(GenerationError, match="shut down"):
        handle.result(timeout=5)
    with pytest.raises(RuntimeError, match="not running"):
        engine.submit([1, 2], greedy())
