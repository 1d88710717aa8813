"""The Triton LoRA kernels (``triton_bgmv_``) against a per-token torch reference, the CPU op
``bgmv_`` and the ``gather`` kernel of ``BatchedLoraLinear``.

Every comparison runs twice: on CPU tensors through Triton's interpreter (NumPy; the
``interpreter`` tests) and on CUDA tensors with the compiled kernels (skipped without a GPU).
``TRITON_INTERPRET=1`` works only when set before triton is imported (triton's own library is
jitted at import), and this process imported it already (transformers and peft do, in the
conftest): the ``interpreter`` tests run in a pytest subprocess started with the variable set,
by ``test_subprocess_runs_the_interpreter_tests``, and skip here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from inference_node.engine import BatchedLoraLinear, LoraBatch, LoraContext
from inference_node.engine.cpu_kernels import fused_lora_available
from inference_node.engine.triton_lora import INTERPRETING, triton_available, triton_bgmv_

ROOT = Path(__file__).resolve().parents[2]
CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = [pytest.param("cpu", id="interpreter"), pytest.param("cuda", id="cuda", marks=CUDA_ONLY)]
# |error| <= atol + rtol * |expected|: fp32 sums in another order; bf16/fp16 one rounding of
# the result (half an ulp: 2**-9 and 2**-12 relative), with room for the fp32 sums
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (2e-3, 2e-3),
}


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """The device under test, where this process's Triton mode runs on it."""
    if request.param == "cpu" and not INTERPRETING:
        pytest.skip("run by test_subprocess_runs_the_interpreter_tests (TRITON_INTERPRET=1)")
    if request.param == "cuda" and INTERPRETING:
        pytest.skip("the compiled kernels need a process without TRITON_INTERPRET")
    assert triton_available()
    return request.param


@dataclass(frozen=True)
class Case:
    tokens: int
    in_features: int
    out_features: int
    slot_ranks: tuple[int, ...]  # each slot's own rank; the buffers hold one more, zero slot
    max_rank: int = 16


CASES = {
    # 37 tokens, in/out off every power of two, slots of ranks 8, 3 and 5 (zero rows past 3, 5)
    "mixed": Case(37, 100, 72, (8, 3, 5)),
    "rank1": Case(11, 64, 48, (1, 1), max_rank=4),
    # SmolLM2-135M's shapes: hidden 576, k/v 192, MLP 1536; 3 tokens split `in` 3 ways, 64
    # tokens split it 4 ways over 6 tiles (tiles 0 and 4 in one program), 300 not at all
    "smollm2_kv": Case(3, 576, 192, (16, 8, 4, 2)),
    "smollm2_down": Case(64, 1536, 576, (16, 8, 4, 2)),
    "smollm2_up_prefill": Case(300, 576, 1536, (16, 8)),
}


@dataclass
class Inputs:
    y: torch.Tensor  # [tokens, out]
    x: torch.Tensor  # [tokens, in]
    lora_a: torch.Tensor  # [slots + 1, max_rank, in]
    lora_b: torch.Tensor  # [slots + 1, max_rank, out]
    indices: torch.Tensor  # [tokens] int64
    rank: int

    def args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.y, self.x, self.lora_a, self.lora_b, self.indices


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> Inputs:
    """Random adapters zero-padded past their ranks, as ``BatchedLoraLinear`` stores them, and
    indices over every slot, repeated, with no-adapter (-1) tokens among them."""
    gen = torch.Generator().manual_seed(seed)
    slots = len(case.slot_ranks)
    lora_a = torch.zeros(slots + 1, case.max_rank, case.in_features)
    lora_b = torch.zeros(slots + 1, case.max_rank, case.out_features)
    for slot, rank in enumerate(case.slot_ranks):
        # A scaled so that x @ A.T is O(1): the LoRA term is as large as y, and a wrong slot,
        # rank row or tile is far outside the tolerances
        lora_a[slot, :rank] = torch.randn(rank, case.in_features, generator=gen)
        lora_a[slot, :rank] /= case.in_features**0.5
        lora_b[slot, :rank] = torch.randn(rank, case.out_features, generator=gen) / rank**0.5
    indices = torch.randint(-1, slots, (case.tokens,), generator=gen)
    indices[: min(slots + 1, case.tokens)] = torch.arange(-1, min(slots, case.tokens - 1))
    return Inputs(
        y=torch.randn(case.tokens, case.out_features, generator=gen).to(device, dtype),
        x=torch.randn(case.tokens, case.in_features, generator=gen).to(device, dtype),
        lora_a=lora_a.to(device, dtype),
        lora_b=lora_b.to(device, dtype),
        indices=indices.to(device),
        rank=max(case.slot_ranks),
    )


def reference(inputs: Inputs) -> torch.Tensor:
    """``y[t] + (x[t] @ A[i, :rank].T) @ B[i, :rank]`` token by token, in fp64 on the CPU."""
    y = inputs.y.double().cpu()
    x, a, b = (t.double().cpu() for t in (inputs.x, inputs.lora_a, inputs.lora_b))
    for token, slot in enumerate(inputs.indices.tolist()):
        if slot >= 0:
            y[token] += (x[token] @ a[slot, : inputs.rank].T) @ b[slot, : inputs.rank]
    return y


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double().cpu(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_matches_the_per_token_reference_in_fp32(device: str, case: str) -> None:
    inputs = make_inputs(CASES[case], torch.float32, device)
    expected = reference(inputs)
    before = inputs.y.clone()
    triton_bgmv_(*inputs.args(), inputs.rank)
    assert_matches(inputs.y, expected, torch.float32)
    untouched = inputs.indices < 0
    assert untouched.any()
    assert torch.equal(inputs.y[untouched], before[untouched])  # bit for bit


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", ["mixed", "smollm2_kv"])
def test_matches_the_per_token_reference_in_half_precision(
    device: str, case: str, dtype: torch.dtype
) -> None:
    inputs = make_inputs(CASES[case], dtype, device)
    expected = reference(inputs)
    triton_bgmv_(*inputs.args(), inputs.rank)
    assert inputs.y.dtype == dtype
    assert_matches(inputs.y, expected, dtype)


def test_reads_no_row_past_rank(device: str) -> None:
    """Rows at and past ``rank`` (zeros in the engine) are never read: NaN there changes
    nothing. Slot 1 (rank 3) pads with zeros up to the batch's rank 8."""
    inputs = make_inputs(CASES["mixed"], torch.float32, device)
    expected = reference(inputs)
    inputs.lora_a[:, inputs.rank :] = float("nan")
    inputs.lora_b[:, inputs.rank :] = float("nan")
    triton_bgmv_(*inputs.args(), inputs.rank)
    assert_matches(inputs.y, expected, torch.float32)


def test_any_strides(device: str) -> None:
    """Column slices of wider buffers (the row stride is not the width): the columns beside
    ``y`` stay as they were."""
    case = CASES["mixed"]
    inputs = make_inputs(case, torch.float32, device)
    expected = reference(inputs)
    wide_y = torch.randn(case.tokens, case.out_features + 8, device=device)
    wide_x = torch.randn(case.tokens, case.in_features + 5, device=device)
    wide_y[:, 3 : 3 + case.out_features] = inputs.y
    wide_x[:, : case.in_features] = inputs.x
    beside = wide_y.clone()
    y, x = wide_y[:, 3 : 3 + case.out_features], wide_x[:, : case.in_features]
    assert not y.is_contiguous() and not x.is_contiguous()
    triton_bgmv_(y, x, inputs.lora_a, inputs.lora_b, inputs.indices, inputs.rank)
    assert_matches(y, expected, torch.float32)
    assert torch.equal(wide_y[:, :3], beside[:, :3])
    assert torch.equal(wide_y[:, 3 + case.out_features :], beside[:, 3 + case.out_features :])


def test_nothing_to_add_leaves_y_as_it_was(device: str) -> None:
    inputs = make_inputs(CASES["mixed"], torch.float32, device)
    before = inputs.y.clone()
    triton_bgmv_(*inputs.args(), 0)  # rank 0
    no_adapter = torch.full_like(inputs.indices, -1)
    triton_bgmv_(inputs.y, inputs.x, inputs.lora_a, inputs.lora_b, no_adapter, inputs.rank)
    assert torch.equal(inputs.y, before)
    empty = make_inputs(Case(0, 100, 72, (8,)), torch.float32, device)
    triton_bgmv_(*empty.args(), empty.rank)  # no tokens: no launch, no error


def test_matches_the_fused_cpu_op_out_of_range_slots_included(device: str) -> None:
    """The same semantics as ``bgmv_``, which skips a slot past the buffers (no read there)."""
    if device != "cpu":
        pytest.skip("bgmv_ is a CPU op")
    assert fused_lora_available(), "run `make kernels`"
    inputs = make_inputs(CASES["mixed"], torch.float32, "cpu")
    inputs.indices[5] = inputs.lora_a.shape[0]  # one past the zero slot
    expected = inputs.y.clone()
    torch.ops.openledger.bgmv_(
        expected, inputs.x, inputs.lora_a, inputs.lora_b, inputs.indices, inputs.rank
    )
    before = inputs.y[5].clone()
    triton_bgmv_(*inputs.args(), inputs.rank)
    torch.testing.assert_close(inputs.y, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(inputs.y[5], before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_matches_the_gather_kernel_of_batched_lora_linear(device: str, dtype: torch.dtype):
    """Through ``BatchedLoraLinear``'s own buffers and ``LoraBatch``: what the engine will call
    in place of ``gather`` on CUDA gives gather's answer."""
    torch.manual_seed(1)
    in_features, out_features, ranks = 96, 80, (8, 2, 5, 1)
    layer = BatchedLoraLinear(
        nn.Linear(in_features, out_features),
        slots=len(ranks),
        max_rank=8,
        context=LoraContext(),
        kernel="gather",
    ).to(device, dtype)
    for slot, rank in enumerate(ranks):
        layer.set_slot(
            slot, torch.randn(rank, in_features) / in_features**0.5, torch.randn(out_features, rank)
        )
    # decode rows on slots 1 and 2 only (ranks 2, 5): the batch's rank, 5, is below max_rank
    indices = torch.tensor([1, -1, 2, 2, 1, -1, 1], device=device)
    batch = LoraBatch.from_indices(indices, slot_ranks=layer.ranks)
    assert batch.max_rank == 5
    layer.context.batch = batch
    x = torch.randn(len(indices), in_features, device=device, dtype=dtype)
    with torch.no_grad():
        gathered = layer(x)
        y = layer.base(x)
        triton_bgmv_(y, x, layer.lora_a, layer.lora_b, batch.indices, batch.max_rank)
    # gather rounds its shrink to bf16 before the expand, the kernel keeps it in fp32
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(y, gathered, atol=tolerance, rtol=tolerance)


def bad_arguments(inputs: Inputs) -> list[tuple[str, dict[str, object]]]:
    """(the name the error must give, the arguments that are wrong in that one way)."""
    ok: dict[str, object] = {
        "y": inputs.y,
        "x": inputs.x,
        "lora_a": inputs.lora_a,
        "lora_b": inputs.lora_b,
        "indices": inputs.indices,
        "rank": inputs.rank,
    }
    max_rank = inputs.lora_a.shape[1]
    return [
        ("y", {**ok, "y": inputs.y[0]}),  # 1-D
        ("lora_a", {**ok, "lora_a": inputs.lora_a[0]}),  # 2-D
        ("indices", {**ok, "indices": inputs.indices[None]}),  # 2-D
        ("x", {**ok, "x": inputs.x.double()}),
        ("y", {**ok, "y": inputs.y.half()}),
        ("lora_b", {**ok, "lora_b": inputs.lora_b.half()}),
        ("indices", {**ok, "indices": inputs.indices.int()}),
        ("indices", {**ok, "indices": inputs.indices[1:]}),
        ("y", {**ok, "y": inputs.y[1:]}),
        ("lora_a", {**ok, "lora_a": inputs.lora_a[..., 1:]}),
        ("lora_b", {**ok, "lora_b": inputs.lora_b[..., 1:]}),
        ("lora_b", {**ok, "lora_b": inputs.lora_b[1:]}),
        ("rank", {**ok, "rank": max_rank + 1}),
        ("rank", {**ok, "rank": -1}),
        ("rank", {**ok, "rank": torch.tensor(inputs.rank)}),
        ("indices", {**ok, "indices": inputs.indices.to("meta")}),
    ]


def test_refuses_bad_arguments_naming_them(device: str) -> None:
    inputs = make_inputs(CASES["mixed"], torch.float32, device)
    before = inputs.y.clone()
    for name, kwargs in bad_arguments(inputs):
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            triton_bgmv_(**kwargs)  # type: ignore[arg-type]
    assert torch.equal(inputs.y, before)


def test_refuses_cpu_tensors_unless_interpreting() -> None:
    if INTERPRETING:
        pytest.skip("CPU tensors are what the interpreter runs on")
    assert triton_available() == torch.cuda.is_available()
    inputs = make_inputs(CASES["rank1"], torch.float32, "cpu")
    with pytest.raises(ValueError, match="y is on cpu"):
        triton_bgmv_(*inputs.args(), inputs.rank)


def test_imports_without_triton() -> None:
    """The CPU image may lack triton: the module imports and says it is unavailable."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # `import triton` now raises ImportError
        "from inference_node.engine.triton_lora import triton_available\n"
        "assert triton_available() is False\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # ~15 s on 2 cores: a second pytest process, torch and transformers again
def test_subprocess_runs_the_interpreter_tests() -> None:
    """The ``interpreter`` tests above, in a process where ``TRITON_INTERPRET=1`` comes before
    triton's import; every one of them must pass (a skip there is a failure here)."""
    if INTERPRETING:
        pytest.skip("this process is the interpreter run")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            __file__,
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "interpreter and not subprocess",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TRITON_INTERPRET": "1"},
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed, \d+ deselected(, \d+ warnings?)? in .*", summary), (
        result.stdout[-3000:]
    )
