"""The batched multi-LoRA model agrees with PEFT's own PeftModel, row by row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference_node.engine import MultiLoraModel, load_adapter
from inference_node.engine.base_linear import onednn_available
from tests.engine.conftest import (
    MAX_RANK,
    VOCAB,
    AdapterRecipe,
    build_adapter,
    load_base,
    peft_reference,
)

ADAPTER_ORDER = ("attn_qv_r4", "all_r8", "mlp_r2_rslora", "ko_r16")
# row -> slot; -1 = base model; slot 0 appears twice, not adjacent
ROW_SLOTS = (0, 1, 2, 3, -1, 0)
ROW_LENGTHS = (7, 4, 9, 5, 6, 3)
NEW_TOKENS = 12
ATOL = 1e-4


def make_prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(123)
    return [
        torch.randint(3, VOCAB, (length,), generator=generator).tolist() for length in ROW_LENGTHS
    ]


def pad_batch(prompts: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)  # [batch, seq]
    mask = torch.zeros(len(prompts), width, dtype=torch.long)  # [batch, seq]
    for row, prompt in enumerate(prompts):
        span = slice(width - len(prompt), width) if side == "left" else slice(0, len(prompt))
        ids[row, span] = torch.tensor(prompt)
        mask[row, span] = 1
    return ids, mask


def real_positions(mask_row: torch.Tensor) -> torch.Tensor:
    return mask_row.nonzero().squeeze(-1)  # [len]


@pytest.fixture(scope="module", params=["torch", "onednn"])
def engine(
    base_folder: Path, adapter_folders: dict[str, Path], request: pytest.FixtureRequest
) -> MultiLoraModel:
    """The engine on each base-projection path: ``F.linear``, and oneDNN-prepacked weights
    (what the calibration picks on most CPUs)."""
    model = MultiLoraModel(load_base(base_folder), slots=6, max_rank=MAX_RANK)
    if request.param == "onednn":
        if not onednn_available():
            pytest.skip("this torch has no oneDNN prepacked linear")
        for linear in model.base_linears:
            linear.pack()
    for slot, name in enumerate(ADAPTER_ORDER):
        model.load_adapter(slot, load_adapter(adapter_folders[name], model.spec, MAX_RANK))
    return model


@pytest.fixture(scope="module")
def references(base_folder: Path, adapter_folders: dict[str, Path]) -> dict[int, torch.nn.Module]:
    refs: dict[int, torch.nn.Module] = {
        slot: peft_reference(base_folder, adapter_folders[name])
        for slot, name in enumerate(ADAPTER_ORDER)
    }
    refs[-1] = load_base(base_folder)
    return refs


def reference_greedy(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])  # [1, len]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            token = model(input_ids=ids).logits[0, -1].argmax().item()
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=-1)
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_mixed_batch_logits_match_peft_per_row(
    engine: MultiLoraModel, references: dict[int, torch.nn.Module], side: str
) -> None:
    prompts = make_prompts()
    ids, mask = pad_batch(prompts, side)
    logits = engine(ids, mask, torch.tensor(ROW_SLOTS))  # [batch, seq, vocab]
    base_logits = references[-1](input_ids=torch.tensor([prompts[0]])).logits[0]
    for row, (prompt, slot) in enumerate(zip(prompts, ROW_SLOTS, strict=True)):
        with torch.no_grad():
            expected = references[slot](input_ids=torch.tensor([prompt])).logits[0]
        got = logits[row, real_positions(mask[row])]  # [len, vocab]
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    # the adapters are non-trivial: slot 0 moves the logits away from the base model's
    assert (logits[0, real_positions(mask[0])] - base_logits).abs().max() > 1e-2


def test_mixed_batch_greedy_tokens_match_peft(
    engine: MultiLoraModel, references: dict[int, torch.nn.Module]
) -> None:
    prompts = make_prompts()
    ids, mask = pad_batch(prompts, "left")
    tokens = engine.generate_greedy(ids, mask, torch.tensor(ROW_SLOTS), NEW_TOKENS)
    assert tokens.shape == (len(prompts), NEW_TOKENS)
    expected = [
        reference_greedy(references[slot], prompt, NEW_TOKENS)
        for prompt, slot in zip(prompts, ROW_SLOTS, strict=True)
    ]
    assert tokens.tolist() == expected
    assert len({tuple(row) for row in expected[:5]}) > 1


def test_greedy_right_padding_equals_left_padding(engine: MultiLoraModel) -> None:
    prompts = make_prompts()
    slots = torch.tensor(ROW_SLOTS)
    left = engine.generate_greedy(*pad_batch(prompts, "left"), slots, 6)
    right = engine.generate_greedy(*pad_batch(prompts, "right"), slots, 6)
    assert torch.equal(left, right)


def test_gather_kernel_matches_segments_kernel(engine: MultiLoraModel) -> None:
    ids, mask = pad_batch(make_prompts(), "left")
    slots = torch.tensor(ROW_SLOTS)
    engine.set_kernel("segments")
    try:
        segments = engine(ids, mask, slots)
        engine.set_kernel("gather")
        gathered = engine(ids, mask, slots)
    finally:
        engine.set_kernel("auto")
    torch.testing.assert_close(gathered, segments, atol=ATOL, rtol=0)


def test_evicted_slot_serves_base_and_reload_restores(
    base_folder: Path, adapter_folders: dict[str, Path], references: dict[int, torch.nn.Module]
) -> None:
    model = MultiLoraModel(load_base(base_folder), slots=2, max_rank=MAX_RANK)
    small = load_adapter(adapter_folders["attn_qv_r4"], model.spec, MAX_RANK)
    big = load_adapter(adapter_folders["all_r8"], model.spec, MAX_RANK)
    prompt = torch.tensor([make_prompts()[0]])  # [1, len]
    mask = torch.ones_like(prompt)
    model.load_adapter(1, big)
    model.load_adapter(1, small)  # smaller rank and fewer targets overwrite the slot fully
    with torch.no_grad():
        expected = references[0](input_ids=prompt).logits
        base = references[-1](input_ids=prompt).logits
    torch.testing.assert_close(model(prompt, mask, torch.tensor([1])), expected, atol=ATOL, rtol=0)
    assert {m for m, r in model.module_slot_ranks.items() if r[1]} == {"q_proj", "v_proj"}
    model.evict(1)
    assert model.slot_adapters == [None, None]
    assert all(r == [0, 0] for r in model.module_slot_ranks.values())
    with pytest.raises(ValueError, match="slot 1 holds no adapter"):
        model(prompt, mask, torch.tensor([1]))
    torch.testing.assert_close(model(prompt, mask, torch.tensor([-1])), base, atol=ATOL, rtol=0)


def test_adapter_on_some_layers_replaces_a_full_one_in_its_slot(
    base_folder: Path, adapter_folders: dict[str, Path], tmp_path: Path
) -> None:
    """Slots are loaded a projection at a time over all layers; an adapter on layer 1 only
    must leave layer 0 of the slot clean after a full-rank adapter held it."""
    recipe = AdapterRecipe(8, 16, ("q_proj", "down_proj"), layers=(1,))
    folder = build_adapter(base_folder, tmp_path / "layer1", recipe, seed=9)
    model = MultiLoraModel(load_base(base_folder), slots=2, max_rank=MAX_RANK)
    partial = load_adapter(folder, model.spec, MAX_RANK)
    assert {module: w.layers for module, w in partial.modules.items()} == {
        "q_proj": (1,),
        "down_proj": (1,),
    }
    model.load_adapter(0, load_adapter(adapter_folders["ko_r16"], model.spec, MAX_RANK))
    model.load_adapter(0, load_adapter(adapter_folders["all_r8"], model.spec, MAX_RANK))
    model.load_adapter(0, partial)
    prompt = torch.tensor([make_prompts()[2]])  # [1, len]
    with torch.no_grad():
        expected = peft_reference(base_folder, folder)(input_ids=prompt).logits
    got = model(prompt, torch.ones_like(prompt), torch.tensor([0]))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert model.lora_layers[(0, "q_proj")].ranks[0] == 0
    assert model.lora_layers[(1, "q_proj")].ranks[0] == 8
    assert model.lora_layers[(1, "k_proj")].ranks[0] == 0
    # per projection, what a batch on slot 0 runs: q and down at rank 8, nothing else
    assert {m: r[0] for m, r in model.module_slot_ranks.items() if r[0]} == {
        "q_proj": 8,
        "down_proj": 8,
    }
    for module, (stack_a, stack_b) in model.stacked.items():
        rows = 8 if module in {"q_proj", "down_proj"} else 0
        assert stack_a[0, 0].abs().sum() == 0 and stack_b[0, 0].abs().sum() == 0
        assert stack_a[1, 0, rows:].abs().sum() == 0 and stack_b[1, 0, rows:].abs().sum() == 0
