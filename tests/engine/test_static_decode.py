"""The static-shape decode step (what CUDA graphs capture) gives the model's own decode logits:
left padding, mixed adapters and no adapter, dummy rows of a bucket, rows leaving, the cache
growing; greedy tokens as ``generate_greedy``'s. CUDA tests (skipped without a GPU): graph
replay equals the eager static step and the model, recaptures on capacity growth and larger
ranks, and the scheduler's tokens with graphs equal its tokens without."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backend.storage.local import DirectoryStore
from inference_node.engine import MultiLoraModel, load_adapter
from inference_node.engine.cpu_kernels import fused_lora_available
from inference_node.engine.kv_cache import MIN_CAPACITY, BatchKVCache
from inference_node.engine.packaging import put_adapter
from inference_node.engine.pool import AdapterPool
from inference_node.engine.sampling import SamplingParams
from inference_node.engine.scheduler import Scheduler
from inference_node.engine.static_decode import (
    ReplayMismatchError,
    StaticDecoder,
    advance_cache,
    check_replay,
    default_buckets,
)
from tests.engine.conftest import MAX_RANK, VOCAB, load_base
from tests.engine.test_model import ADAPTER_ORDER, ROW_SLOTS, make_prompts, pad_batch
from tests.engine.test_scheduler import ByteTokenizer
from tests.engine.test_scheduler import prompts as make_requests

ATOL = 1e-4
STEPS = 8


def build_engine(
    base_folder: Path, adapter_folders: dict[str, Path], device: str = "cpu"
) -> MultiLoraModel:
    model = MultiLoraModel(load_base(base_folder).to(device), slots=6, max_rank=MAX_RANK)
    for slot, name in enumerate(ADAPTER_ORDER):
        model.load_adapter(slot, load_adapter(adapter_folders[name], model.spec, MAX_RANK))
    return model


@pytest.fixture(scope="module")
def engine(base_folder: Path, adapter_folders: dict[str, Path]) -> MultiLoraModel:
    return build_engine(base_folder, adapter_folders)


class Decoding:
    """One batch prefilled by the model into a cache of ``max_rows`` rows, decoded step by step
    either by the model's own forward or by a static decoder."""

    def __init__(
        self,
        model: MultiLoraModel,
        prompts: list[list[int]],
        slots: tuple[int, ...],
        max_rows: int,
        decoder_options: dict[str, object] | None = None,
    ) -> None:
        self.model, self.slots = model, torch.tensor(slots)
        device = next(model.parameters()).device
        ids, mask = pad_batch(prompts, "left")  # [rows, width]
        config = model.model.config
        prefilled = BatchKVCache(config, len(prompts))
        logits = model(
            ids.to(device), mask.to(device), self.slots, cache=prefilled, logits_to_keep=1
        )[:, -1]  # [rows, vocab]
        self.cache = BatchKVCache(config, max_rows)
        self.cache.append_rows(prefilled)
        self.mask = mask.to(device)  # [rows, length]
        self.next = logits.argmax(-1)  # [rows]
        self.decoder = (
            StaticDecoder(model, self.cache, **decoder_options)  # type: ignore[arg-type]
            if decoder_options is not None
            else None
        )

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, vocab]`` of feeding ``tokens [rows]``."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=-1)
        if self.decoder is not None:
            return self.decoder.decode(tokens, self.mask, self.slots)
        out = self.model(tokens[:, None], self.mask, self.slots, cache=self.cache, logits_to_keep=1)
        return out[:, -1]

    def remove_row(self, row: int) -> None:
        """As the scheduler retires a row: the last row takes its place."""
        self.cache.remove_row(row)
        keep = list(range(self.mask.shape[0]))
        keep[row] = keep[-1]
        keep.pop()
        self.mask, self.slots = self.mask[keep], self.slots[keep]

    def trim_left(self, columns: int) -> None:
        assert not self.mask[:, :columns].any()
        self.cache.trim_left(columns)
        self.mask = self.mask[:, columns:]


def assert_same_decoding(reference: Decoding, static: Decoding, steps: int) -> torch.Tensor:
    """Feeds both the reference's greedy tokens; the logits agree at every step. Returns the
    tokens the last step chose."""
    assert torch.equal(reference.next, static.next)
    tokens = reference.next
    for step in range(steps):
        expected = reference.step(tokens)
        got = static.step(tokens)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0, msg=f"step {step}")
        assert static.cache.length == reference.cache.length
        tokens = expected.argmax(-1)
    return tokens


@pytest.mark.parametrize("kernel", ["fused", "gather"])
@pytest.mark.parametrize(
    ("max_rows", "buckets"),
    [(6, None), (8, (8,)), (16, (1, 3, 16))],
    ids=["bucket_equals_rows", "two_dummy_rows", "ten_dummy_rows"],
)
def test_static_step_equals_model_decode(
    engine: MultiLoraModel, max_rows: int, buckets: tuple[int, ...] | None, kernel: str
) -> None:
    """``fused`` is the C++ op here (Triton on CUDA); ``gather`` is plain torch ops."""
    if kernel == "fused" and not fused_lora_available():
        pytest.skip("the CPU LoRA op is not built (make kernels)")
    prompts = make_prompts()  # 6 rows of 3 to 9 tokens, left-padded
    reference = Decoding(engine, prompts, ROW_SLOTS, len(prompts))
    options = {"buckets": buckets, "kernel": kernel}
    static = Decoding(engine, prompts, ROW_SLOTS, max_rows, options)
    assert static.decoder is not None and not static.decoder.capture  # CPU: eager
    assert_same_decoding(reference, static, STEPS)


def test_static_step_leaves_the_models_routing_as_it_was(engine: MultiLoraModel) -> None:
    prompts = make_prompts()
    kernels = {key: layer.kernel for key, layer in engine.lora_layers.items()}
    static = Decoding(engine, prompts, ROW_SLOTS, 8, {})
    static.step(static.next)
    assert all(layer.context is engine.context for layer in engine.lora_layers.values())
    assert {key: layer.kernel for key, layer in engine.lora_layers.items()} == kernels
    assert engine.context.batch is None


def test_static_step_equals_model_decode_as_rows_leave(engine: MultiLoraModel) -> None:
    prompts = make_prompts()  # lengths 7, 4, 9, 5, 6, 3
    reference = Decoding(engine, prompts, ROW_SLOTS, len(prompts))
    static = Decoding(engine, prompts, ROW_SLOTS, len(prompts), {"buckets": (2, 4, 6)})
    tokens = assert_same_decoding(reference, static, 3)
    for decoding in (reference, static):
        decoding.remove_row(2)  # 5 rows, [0, 1, 5, 3, 4]: bucket 6, a dummy in row 5's old place
        decoding.next = tokens[[0, 1, 5, 3, 4]]
    tokens = assert_same_decoding(reference, static, 2)
    for decoding in (reference, static):
        decoding.remove_row(0)  # 4 rows [4, 1, 5, 3] of 6, 4, 3, 5 prompt tokens: bucket 4
        decoding.trim_left(3)  # the 9-token prompt is gone: 3 columns every row pads
        decoding.next = tokens[[4, 1, 2, 3]]
    assert_same_decoding(reference, static, 3)


def test_static_step_equals_model_decode_across_cache_growth(engine: MultiLoraModel) -> None:
    generator = torch.Generator().manual_seed(5)
    long = torch.randint(3, VOCAB, (MIN_CAPACITY - 3,), generator=generator).tolist()
    prompts = [long, long[:5]]
    reference = Decoding(engine, prompts, (3, -1), 2)
    static = Decoding(engine, prompts, (3, -1), 2, {})
    assert static.cache.buffered[0].capacity == MIN_CAPACITY
    assert_same_decoding(reference, static, 6)  # columns 61..66: the buffers double
    assert static.cache.buffered[0].capacity == 2 * MIN_CAPACITY


def test_static_greedy_tokens_equal_generate_greedy(engine: MultiLoraModel) -> None:
    prompts = make_prompts()
    ids, mask = pad_batch(prompts, "left")
    slots = torch.tensor(ROW_SLOTS)
    expected = engine.generate_greedy(ids, mask, slots, STEPS)  # [rows, STEPS]
    static = Decoding(engine, prompts, ROW_SLOTS, 8, {})
    tokens = [static.next]
    for _ in range(STEPS - 1):
        tokens.append(static.step(tokens[-1]).argmax(-1))
    assert torch.equal(torch.stack(tokens, dim=-1), expected)


def test_default_buckets_are_powers_of_two_up_to_max_rows() -> None:
    assert default_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert default_buckets(12) == (1, 2, 4, 8, 12)
    assert default_buckets(1) == (1,)


def test_bad_input_is_refused_naming_the_value(engine: MultiLoraModel) -> None:
    prompts = make_prompts()
    static = Decoding(engine, prompts, ROW_SLOTS, 8, {"buckets": (2, 4)})
    assert static.decoder is not None
    decoder, rows, length = static.decoder, len(prompts), static.cache.length
    mask = torch.ones(rows, length + 1, dtype=torch.long)
    ids = torch.zeros(rows, dtype=torch.long)
    slots = torch.tensor(ROW_SLOTS)
    with pytest.raises(ValueError, match="6 rows exceed the largest decode bucket 4"):
        decoder.decode(ids, mask, slots)
    decoder = StaticDecoder(engine, static.cache)
    with pytest.raises(ValueError, match=r"ids of shape \(5,\), expected \(6,\)"):
        decoder.decode(ids[:5], mask, slots)
    with pytest.raises(ValueError, match=r"mask of shape \(6, 4\), expected \(6, 3\)"):
        decoder.step(ids, ids, mask[:, :4], slots, column=2)
    with pytest.raises(ValueError, match="slot 5 holds no adapter"):
        decoder.decode(ids, mask, torch.tensor([0, 1, 2, 3, 5, -1]))
    assert static.cache.length == length  # nothing refused moved the cache
    with pytest.raises(ValueError, match="at most the cache's max_rows 8"):
        StaticDecoder(engine, static.cache, buckets=(4, 16))
    with pytest.raises(ValueError, match="fused or gather LoRA kernel, not 'segments'"):
        StaticDecoder(engine, static.cache, kernel="segments")
    with pytest.raises(ValueError, match="CUDA graph capture asked for a model on cpu"):
        StaticDecoder(engine, static.cache, capture=True)
    with pytest.raises(ValueError, match="past its capacity"):
        advance_cache(static.cache, static.cache.buffered[0].capacity)


# ---------------------------------------------------------------------- CUDA graphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cuda_engine(base_folder: Path, adapter_folders: dict[str, Path]) -> MultiLoraModel:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return build_engine(base_folder, adapter_folders, "cuda")


@cuda
def test_graph_replay_equals_eager_static_step_and_model(cuda_engine: MultiLoraModel) -> None:
    prompts = make_prompts()
    reference = Decoding(cuda_engine, prompts, ROW_SLOTS, len(prompts))
    eager = Decoding(cuda_engine, prompts, ROW_SLOTS, 8, {"capture": False})
    graphed = Decoding(cuda_engine, prompts, ROW_SLOTS, 8, {})
    assert graphed.decoder is not None and graphed.decoder.capture
    tokens = reference.next
    for step in range(STEPS):
        expected, direct, replayed = (d.step(tokens) for d in (reference, eager, graphed))
        torch.testing.assert_close(replayed, direct, atol=1e-5, rtol=0, msg=f"step {step}")
        torch.testing.assert_close(replayed, expected, atol=ATOL, rtol=0, msg=f"step {step}")
        tokens = expected.argmax(-1)
    assert graphed.decoder.capture, "capture failed and fell back to eager"
    assert graphed.decoder.captures == 1  # one bucket, one capacity, the same ranks


@cuda
def test_graphs_recaptured_on_capacity_growth(cuda_engine: MultiLoraModel) -> None:
    generator = torch.Generator().manual_seed(5)
    long = torch.randint(3, VOCAB, (MIN_CAPACITY - 3,), generator=generator).tolist()
    prompts = [long, long[:5]]
    reference = Decoding(cuda_engine, prompts, (3, -1), 2)
    graphed = Decoding(cuda_engine, prompts, (3, -1), 2, {})
    assert_same_decoding(reference, graphed, 6)
    assert graphed.decoder is not None and graphed.decoder.capture
    assert graphed.cache.buffered[0].capacity == 2 * MIN_CAPACITY
    assert graphed.decoder.captures == 2  # before and after the buffers doubled


@cuda
def test_graphs_recaptured_for_larger_ranks_only(cuda_engine: MultiLoraModel) -> None:
    prompts = make_prompts()[:4]
    low = (0, 0, -1, 0)  # attn_qv_r4: rank 4 on q and v
    high = (3, 1, 0, -1)  # ko_r16, all_r8, attn_qv_r4: up to 16, on every projection
    graphed = Decoding(cuda_engine, prompts, low, 4, {"buckets": (4,)})
    assert graphed.decoder is not None
    reference = Decoding(cuda_engine, prompts, low, 4)
    assert_same_decoding(reference, graphed, 2)
    assert graphed.decoder.captures == 1
    graphed.slots = reference.slots = torch.tensor(high)  # the same rows, other adapters
    assert_same_decoding(reference, graphed, 2)
    assert graphed.decoder.captures == 2
    graphed.slots = reference.slots = torch.tensor(low)  # lower ranks: the same graph
    assert_same_decoding(reference, graphed, 2)
    assert graphed.decoder.captures == 2
    assert graphed.decoder.capture


@pytest.fixture(scope="module")
def store_and_cids(
    tmp_path_factory: pytest.TempPathFactory, adapter_folders: dict[str, Path]
) -> tuple[DirectoryStore, dict[str, str]]:
    store = DirectoryStore(tmp_path_factory.mktemp("store"))
    return store, {name: put_adapter(store, adapter_folders[name]) for name in ADAPTER_ORDER}


@cuda
def test_scheduler_tokens_equal_with_and_without_graphs(
    base_folder: Path, store_and_cids: tuple[DirectoryStore, dict[str, str]], tmp_path: Path
) -> None:
    requests = make_requests(10)
    adapters = [ADAPTER_ORDER[i % 4] if i % 5 else None for i in range(len(requests))]
    results = []
    for graphs in (False, True):
        model = MultiLoraModel(load_base(base_folder).to("cuda"), slots=4, max_rank=MAX_RANK)
        store, cids = store_and_cids
        pool = AdapterPool(model, store, tmp_path / f"cache{graphs}", cpu_capacity_bytes=1 << 30)
        for name, cid in cids.items():
            pool.register(name, cid)
        with Scheduler(model, ByteTokenizer(), pool, max_batch=8, cuda_graphs=graphs) as engine:
            engine.stop_token_ids = frozenset()  # every request runs all its steps
            handles = [
                engine.submit(p, SamplingParams(max_tokens=12, temperature=0.0), adapter=a)
                for p, a in zip(requests, adapters, strict=True)
            ]
            results.append([h.result(timeout=120).token_ids for h in handles])
    assert results[0] == results[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_graph_is_trusted_only_if_its_replay_matches_the_eager_step(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(3)
    eager = (torch.randn(4, 50, generator=generator) * 8).to(dtype)
    check_replay(eager.clone(), eager)  # the same logits
    rounding = eager + (torch.rand(4, 50, generator=generator) * 1e-6).to(dtype)
    check_replay(rounding, eager)  # summation-order noise
    wrong = eager.clone()
    wrong[2] = wrong[2].flip(0)  # another row's order of logits
    with pytest.raises(ReplayMismatchError, match="differs from the eager step"):
        check_replay(wrong, eager)
    with pytest.raises(ReplayMismatchError):
        check_replay(torch.full_like(eager, float("nan")), eager)
