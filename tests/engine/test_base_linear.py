"""The base projections' oneDNN-prepacked path: same products as ``F.linear``, autograd falls
back, and the calibration keeps whichever path it measured faster."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from inference_node.engine import MultiLoraModel
from inference_node.engine.base_linear import (
    BaseLinear,
    calibrate_base_matmul,
    onednn_available,
    wrap_base_linears,
)
from inference_node.engine.lora import BatchedLoraLinear, LoraBatch, LoraContext
from tests.engine.conftest import MAX_RANK, load_base

pytestmark = pytest.mark.skipif(not onednn_available(), reason="no oneDNN in this torch")


def linear(in_features: int, out_features: int, bias: bool, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 576), (32, 576), (3, 7, 576)])
def test_packed_product_equals_f_linear(shape: tuple[int, ...], bias: bool) -> None:
    plain = linear(576, 192, bias)
    packed = BaseLinear(plain)
    packed.pack()
    x = torch.randn(shape)
    with torch.inference_mode():
        got = packed(x)
    expected = functional.linear(x, plain.weight, plain.bias)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)  # summation order only


def test_packed_copy_is_a_snapshot_and_autograd_uses_the_weight() -> None:
    plain = linear(16, 8, bias=False)
    packed = BaseLinear(plain)
    packed.pack()
    x = torch.randn(4, 16, requires_grad=True)
    packed(x).sum().backward()  # grad mode: F.linear on the live weight, with gradients
    assert plain.weight.grad is not None and x.grad is not None
    with torch.no_grad():
        plain.weight.mul_(2)
        stale = packed(x)  # the packed copy still holds the old weight ...
        packed.pack()  # ... until packed again
        fresh = packed(x)
    torch.testing.assert_close(fresh, 2 * stale, atol=1e-5, rtol=1e-5)


def test_released_weight_serves_packed_and_comes_back_exactly() -> None:
    plain = linear(64, 48, bias=True)
    original = plain.weight.detach().clone()
    packed = BaseLinear(plain)
    with pytest.raises(ValueError, match="pack\\(\\) first"):
        packed.release()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        packed.pack()
        expected = packed(x)
        assert packed.release() == original.nbytes
        assert packed.release() == 0  # once
    assert plain.weight.numel() == 0  # the plain copy's memory is gone
    assert torch.equal(packed.weight, original)  # readers get a dense copy
    with torch.inference_mode():
        assert torch.equal(packed(x), expected)
    y = packed(x.requires_grad_())  # autograd: F.linear on a dense copy
    torch.testing.assert_close(y, expected, atol=2e-5, rtol=1e-5)
    with torch.inference_mode():
        packed.unpack()
    assert torch.equal(plain.weight, original) and not packed.released
    plain.weight.sum().backward()  # a normal tensor again, not an inference one
    assert plain.weight.grad is not None


def test_unpacked_or_other_dtype_runs_f_linear() -> None:
    plain = linear(16, 8, bias=True)
    packed = BaseLinear(plain)
    x = torch.randn(2, 16)
    with torch.inference_mode():
        assert torch.equal(packed(x), functional.linear(x, plain.weight, plain.bias))
        packed.pack()
        x64 = x.double()  # the packed weight is fp32: a float64 input takes F.linear
        with pytest.raises(RuntimeError, match=r"dtype|Double|Float"):
            packed(x64)  # ... which then refuses the mismatch as nn.Linear would
    assert "packed=True" in repr(packed)


def test_pack_refuses_a_weight_off_the_cpu() -> None:
    packed = BaseLinear(linear(4, 4, bias=False).to("meta"))
    with pytest.raises(ValueError, match="CPU weights, this one is on meta"):
        packed.pack()


def test_wrap_replaces_every_linear_once_lora_bases_and_lm_head_included(
    base_folder: Path,
) -> None:
    model = MultiLoraModel(load_base(base_folder), slots=2, max_rank=MAX_RANK)
    plain = {id(m) for m in model.modules() if type(m) is nn.Linear}
    inside = {id(m.linear) for m in model.modules() if isinstance(m, BaseLinear)}
    assert plain == inside  # the model wrapped them all when it was built
    layers = model.spec.num_layers
    assert len(model.base_linears) == 7 * layers + 1  # 7 projections per layer + LM head
    assert model.model.lm_head in model.base_linears
    assert all(isinstance(w.base, BaseLinear) for w in model.lora_layers.values())
    assert wrap_base_linears(model) == []  # wrapping again finds nothing left to wrap


def test_calibration_keeps_the_faster_path_and_the_model_still_agrees(base_folder: Path) -> None:
    model = MultiLoraModel(load_base(base_folder), slots=2, max_rank=MAX_RANK)
    ids = torch.randint(3, 64, (2, 5))
    mask = torch.ones_like(ids)
    before = model(ids, mask, torch.tensor([-1, -1]))
    measured = model.calibrate_base_matmul(rows=4)
    assert measured is not None and set(measured.seconds) == {"torch", "onednn"}
    assert all(s > 0 for s in measured.seconds.values())
    packed = {lin.packed is not None for lin in model.base_linears}
    assert packed == {measured.best == "onednn"}
    if measured.best == "onednn":  # one copy of the model: the plain weights are released
        assert all(lin.released for lin in model.base_linears if lin is not model.model.lm_head)
    embedding = model.model.get_input_embeddings().weight
    assert embedding.numel() > 0  # whole, whatever the head shares with it
    after = model(ids, mask, torch.tensor([-1, -1]))
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)


def test_calibration_needs_cpu_linears() -> None:
    assert calibrate_base_matmul([], rows=4) is None
    on_meta = [BaseLinear(linear(4, 4, bias=False).to("meta"))]
    assert calibrate_base_matmul(on_meta, rows=4) is None


@pytest.mark.parametrize("kernel", ["gather", "fused", "segments"])
def test_a_projection_no_adapter_of_the_batch_targets_is_skipped(kernel: str) -> None:
    """Adapters on q/k/v/o in an engine that wraps the MLP too: the batch's rank on up_proj
    is 0, so its LoRA term is not run (gather and fused would read max-rank rows of zeros).
    The slots hold weights here to make a run visible; the model keeps them zero."""
    context = LoraContext()
    layer = BatchedLoraLinear(linear(8, 8, bias=False), 2, 4, context, kernel, module="up_proj")  # type: ignore[arg-type]
    for slot in range(2):
        layer.set_slot(slot, torch.randn(4, 8), torch.randn(8, 4))
    x = torch.randn(2, 8)
    with torch.inference_mode():
        base = layer.base(x)
        context.batch = LoraBatch.from_indices(torch.tensor([0, 1]), [4, 4], {"up_proj": [4, 4]})
        applied = layer(x)
        context.batch = LoraBatch.from_indices(
            torch.tensor([0, 1]), [4, 4], {"q_proj": [4, 4], "up_proj": [0, 0]}
        )
        skipped = layer(x)
    if kernel != "segments":  # segments runs each slot's own rank (the layer's ranks)
        assert torch.equal(skipped, base)
    assert (applied - base).abs().max() > 1e-3


def test_batch_rank_per_projection() -> None:
    batch = LoraBatch.from_indices(
        torch.tensor([0, 1, -1]), [4, 2], {"q_proj": [4, 0], "up_proj": [0, 0]}
    )
    assert batch.rank_of("q_proj") == 4 and batch.rank_of("up_proj") == 0
    assert batch.rank_of("gate_proj") == 4  # not given: the batch's largest
    assert batch.rank_of(None) == 4
    only_one = LoraBatch.from_indices(torch.tensor([1, 1]), [4, 2], {"q_proj": [4, 0]})
    assert only_one.rank_of("q_proj") == 0 and only_one.max_rank == 2
