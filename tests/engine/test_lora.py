"""BatchedLoraLinear: per-token slots, every kernel (the compiled fused one included), in-place
slot updates, and the measured choice of kernel per regime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inference_node.engine import BatchedLoraLinear, LoraBatch, LoraContext
from inference_node.engine.cpu_kernels import fused_lora_available
from inference_node.engine.kernel_choice import calibrate

IN, OUT, SLOTS, MAX_RANK = 24, 40, 4, 8
RANKS = (8, 3, 5, 1)
LOADED: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # slot -> the (A, B) given to set_slot


@pytest.fixture
def layer() -> BatchedLoraLinear:
    torch.manual_seed(0)
    wrapped = BatchedLoraLinear(nn.Linear(IN, OUT), SLOTS, MAX_RANK, LoraContext())
    for slot, rank in enumerate(RANKS):
        a, b = torch.randn(rank, IN), torch.randn(OUT, rank)
        wrapped.set_slot(slot, a, b)
        LOADED[slot] = (a, b)
    return wrapped


def reference(layer: BatchedLoraLinear, x: torch.Tensor, indices: list[int]) -> torch.Tensor:
    rows = []
    for token, slot in zip(x, indices, strict=True):
        y = layer.base(token)
        if slot >= 0:
            a, b = LOADED[slot]
            y = y + b @ (a @ token)
        rows.append(y)
    return torch.stack(rows)


def test_lora_batch_segments_are_contiguous_runs_without_no_adapter() -> None:
    batch = LoraBatch.from_indices(torch.tensor([[2, 2, 2], [-1, -1, -1], [2, 0, 0]]))
    assert batch.segments == [(0, 3, 2), (6, 7, 2), (7, 9, 0)]


@pytest.mark.parametrize("kernel", ["auto", "segments", "gather", "fused"])
def test_forward_matches_per_token_reference(layer: BatchedLoraLinear, kernel: str) -> None:
    layer.kernel = kernel  # type: ignore[assignment]
    indices = [0, 0, 1, -1, 3, 2, 2, 0, -1, 1]
    x = torch.randn(2, 5, IN)  # [batch, seq, in]
    layer.context.batch = LoraBatch.from_indices(torch.tensor(indices))
    y = layer(x)  # [batch, seq, out]
    assert y.shape == (2, 5, OUT)
    expected = reference(layer, x.reshape(-1, IN), indices).reshape(2, 5, OUT)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


def test_slot_weights_returns_what_set_slot_stored(layer: BatchedLoraLinear) -> None:
    for slot, (a, b) in LOADED.items():
        stored_a, stored_b = layer.slot_weights(slot)
        assert torch.equal(stored_a, a) and torch.equal(stored_b, b)


def test_auto_kernel_gathers_only_for_short_runs() -> None:
    decode = LoraBatch.from_indices(torch.tensor([0, 1, 2, 3, -1, 0]))  # one token per run
    prefill = LoraBatch.from_indices(torch.tensor([0] * 8 + [1] * 8))  # long runs
    single = LoraBatch.from_indices(torch.tensor([2]))
    assert decode.prefers_gather
    assert not prefill.prefers_gather and not single.prefers_gather


def test_forward_without_batch_is_base(layer: BatchedLoraLinear) -> None:
    x = torch.randn(3, IN)
    torch.testing.assert_close(layer(x), layer.base(x))


def test_set_slot_updates_buffers_in_place_and_zero_pads(layer: BatchedLoraLinear) -> None:
    storage = layer.lora_a.data_ptr(), layer.lora_b.data_ptr()
    layer.set_slot(0, torch.ones(2, IN), torch.ones(OUT, 2))
    assert (layer.lora_a.data_ptr(), layer.lora_b.data_ptr()) == storage
    assert layer.ranks[0] == 2
    assert layer.lora_a[0, 2:].abs().sum() == 0
    assert layer.lora_b[0, 2:].abs().sum() == 0
    layer.clear_slot(0)
    assert layer.ranks[0] == 0 and layer.lora_a[0].abs().sum() == 0


def test_forward_rejects_index_count_mismatch(layer: BatchedLoraLinear) -> None:
    layer.context.batch = LoraBatch.from_indices(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="2 token indices, input has 3 tokens"):
        layer(torch.randn(3, IN))


def test_gather_reuses_its_scratch_across_layers_and_forwards() -> None:
    """Layers sharing a context share the gather kernel's buffers: a smaller layer or batch
    reads a prefix of them, a larger one grows them, and every answer stays right."""
    torch.manual_seed(1)
    context = LoraContext()
    wide = BatchedLoraLinear(nn.Linear(IN, OUT), SLOTS, MAX_RANK, context, kernel="gather")
    narrow = BatchedLoraLinear(nn.Linear(OUT, IN), SLOTS, MAX_RANK, context, kernel="gather")
    for slot, rank in enumerate(RANKS):
        wide.set_slot(slot, torch.randn(rank, IN), torch.randn(OUT, rank))
        narrow.set_slot(slot, torch.randn(rank, OUT), torch.randn(IN, rank))

    def expected(module: BatchedLoraLinear, x: torch.Tensor, indices: list[int]) -> torch.Tensor:
        rows = []
        for token, slot in zip(x, indices, strict=True):
            a, b = module.slot_weights(slot) if slot >= 0 else (None, None)
            rows.append(module.base(token) + (b @ (a @ token) if a is not None else 0))
        return torch.stack(rows)

    pointers = set()
    with torch.no_grad():  # as served: the scratch path is the no-autograd one
        for indices in ([0, 1, 2, 3, -1, 0], [2, 3], [1, 0, 3, 2, 1, 0, 3, 2]):
            context.batch = LoraBatch.from_indices(torch.tensor(indices), list(RANKS))
            x = torch.randn(len(indices), IN)
            hidden = wide(x)
            torch.testing.assert_close(hidden, expected(wide, x, indices), atol=1e-4, rtol=1e-5)
            out = narrow(hidden)
            torch.testing.assert_close(out, expected(narrow, hidden, indices), atol=1e-4, rtol=1e-5)
            pointers.add(context._scratch[("a", torch.float32, x.device, False)].data_ptr())
    assert len(pointers) == 2  # allocated for the first batch, grown once for the last
    with torch.inference_mode():  # the engine's mode: buffers of its own
        context.batch = LoraBatch.from_indices(torch.tensor([3, 1]), list(RANKS))
        x = torch.randn(2, IN)
        torch.testing.assert_close(wide(x), expected(wide, x, [3, 1]), atol=1e-4, rtol=1e-5)
    with torch.no_grad():
        context.batch = LoraBatch.from_indices(torch.tensor([0, 2]), list(RANKS))
        x = torch.randn(2, IN)
        torch.testing.assert_close(wide(x), expected(wide, x, [0, 2]), atol=1e-4, rtol=1e-5)


def test_the_fused_kernel_is_built() -> None:
    """`make test` builds it (`make kernels`); the node only falls back when it is missing."""
    assert fused_lora_available(), "run `make kernels`"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_matches_the_per_token_reference_when_serving(
    layer: BatchedLoraLinear, dtype: torch.dtype
) -> None:
    layer.to(dtype)
    layer.kernel = "fused"
    indices = [0, 0, 1, -1, 3, 2, 2, 0, -1, 1]
    x = torch.randn(2, 5, IN).to(dtype)
    with torch.inference_mode():
        layer.context.batch = LoraBatch.from_indices(torch.tensor(indices), list(RANKS))
        y = layer(x)
    expected = reference(layer.float(), x.float().reshape(-1, IN), indices).reshape(2, 5, OUT)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(y.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_kernel_every_rank_block_matches_a_dense_reference(dtype: torch.dtype) -> None:
    """The kernel takes ranks 8, then 4, then 1 at a time: ranks 1..19 cover every mix of
    blocks; widths that are not multiples of the vector length cover the loops' tails."""
    assert fused_lora_available(), "run `make kernels`"
    generator = torch.Generator().manual_seed(5)
    slots, max_rank, width_in, width_out = 3, 20, 37, 29
    a = torch.randn(slots + 1, max_rank, width_in, generator=generator).to(dtype)
    b = torch.randn(slots + 1, max_rank, width_out, generator=generator).to(dtype)
    idx = torch.tensor([2, -1, 0, 0, 1, 2, -1])
    x = torch.randn(idx.shape[0], width_in, generator=generator).to(dtype)
    tolerance = 1e-4 if dtype == torch.float32 else 0.15
    for rank in range(1, 20):
        y = torch.randn(idx.shape[0], width_out, generator=generator).to(dtype)
        expected = y.float().clone()
        for t, slot in enumerate(idx.tolist()):
            if slot >= 0:
                shrink = a[slot, :rank].float() @ x[t].float()  # [rank]
                expected[t] += shrink @ b[slot, :rank].float()
        with torch.inference_mode():
            torch.ops.openledger.bgmv_(y, x, a, b, idx, rank)
        torch.testing.assert_close(y.float(), expected, atol=tolerance, rtol=1e-2)


def test_fused_kernel_refuses_what_it_cannot_compute() -> None:
    a, b = torch.zeros(3, 4, IN), torch.zeros(3, 4, OUT)
    x, y, idx = torch.zeros(2, IN), torch.zeros(2, OUT), torch.tensor([0, 1])
    op = torch.ops.openledger.bgmv_
    with pytest.raises(RuntimeError, match="idx must be int64"):
        op(y, x, a, b, idx.int(), 4)
    with pytest.raises(RuntimeError, match="must share a dtype"):
        op(y, x.double(), a, b, idx, 4)
    with pytest.raises(RuntimeError, match="token counts differ"):
        op(y, torch.zeros(3, IN), a, b, idx, 4)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        op(y, torch.zeros(IN, 2).T, a, b, idx, 4)
    with pytest.raises(RuntimeError, match="rank out of range"):
        op(y, x, a, b, idx, 5)


def test_fused_falls_back_to_gather_under_autograd(layer: BatchedLoraLinear) -> None:
    """Training-time callers (autograd recording) get the gather kernel's answer."""
    layer.kernel = "fused"
    indices = [0, 1, 2, 3]
    layer.context.batch = LoraBatch.from_indices(torch.tensor(indices))
    x = torch.randn(4, IN, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(y, reference(layer, x, indices), atol=1e-5, rtol=1e-5)


def test_auto_runs_the_kernel_chosen_for_the_regime(
    layer: BatchedLoraLinear, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    for name in ("segments", "gather", "fused"):
        monkeypatch.setattr(layer, f"_{name}", lambda x, y, batch, name=name: ran.append(name))
    decode = LoraBatch.from_indices(torch.tensor([0, 1, 2, 3]))  # one token per run
    prefill = LoraBatch.from_indices(torch.tensor([0] * 8 + [1] * 8))
    layer.context.choice = {"decode": "segments", "prefill": "gather"}
    with torch.inference_mode():
        for batch in (decode, prefill):
            layer.context.batch = batch
            layer(torch.randn(batch.indices.shape[0], IN))
        layer.context.choice = {"decode": "fused", "prefill": "segments"}
        for batch in (decode, prefill):
            layer.context.batch = batch
            layer(torch.randn(batch.indices.shape[0], IN))
    assert ran == ["segments", "gather", "fused", "segments"]


def test_calibration_chooses_the_fastest_measured_kernel_per_regime() -> None:
    context = LoraContext()
    measured = calibrate(context, IN, OUT, rows=8, num_layers=3, repeats=2)
    assert [m.regime for m in measured] == ["decode", "prefill"]
    for m in measured:
        assert set(m.seconds) == {"segments", "gather", "fused"}
        assert all(s > 0 for s in m.seconds.values())
        assert context.choice[m.regime] == min(m.seconds, key=m.seconds.__getitem__)


def test_fused_kernel_takes_one_rows_slots_expanded_over_its_tokens(
    layer: BatchedLoraLinear,
) -> None:
    """A one-prompt prefill: the row's slot expanded over its tokens is a stride-0 view."""
    layer.kernel = "fused"
    slots = torch.tensor([2])[:, None].expand(1, 6)  # [1, seq], stride 0 along seq
    x = torch.randn(1, 6, IN)
    with torch.inference_mode():
        layer.context.batch = LoraBatch.from_indices(slots, list(RANKS))
        y = layer(x)
    expected = reference(layer, x.reshape(-1, IN), [2] * 6).reshape(1, 6, OUT)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
