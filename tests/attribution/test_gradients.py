"""Per-example LoRA gradients from one batched backward pass equal each example's own
autograd gradient; weighted losses and DPO pairs combine rows as stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from backend.attribution.gradients import GradientError, LoraGradients, pair_differences
from backend.modelfactory.lora_training import IGNORE
from backend.modelfactory.sft import token_losses
from tests.engine.conftest import RECIPES, build_adapter, build_base, load_base

ROWS = [  # (input_ids, labels): different lengths, so the batch is padded
    ([5, 6, 7, 8, 9, 10], [IGNORE, IGNORE, IGNORE, 8, 9, 10]),
    ([11, 12, 13], [IGNORE, 12, 13]),
    ([14, 15, 16, 17, 18, 19, 20, 21], [IGNORE] * 5 + [19, 20, 21]),
]
PAD = 0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> PeftModel:
    folder = tmp_path_factory.mktemp("grads")
    base = build_base(folder / "base")
    adapter = build_adapter(base, folder / "adapter", RECIPES["all_r8"], seed=3)
    peft = PeftModel.from_pretrained(load_base(base), adapter, is_trainable=True).eval()
    for name, p in peft.named_parameters():
        p.requires_grad_("lora_" in name)
    return peft


def autograd_gradient(
    model: PeftModel, grads: LoraGradients, row, weights=None
) -> list[np.ndarray]:
    """One row alone, through plain autograd, in the module's group layout."""
    ids, labels = row
    losses = token_losses(
        model,
        torch.tensor([ids]),
        torch.ones(1, len(ids), dtype=torch.long),
        torch.tensor([labels]),
        False,
    )
    w = torch.full_like(losses, 1 / len(losses)) if weights is None else torch.tensor(weights)
    loss = (losses * (w / w.sum())).sum()
    params = [p for g in grads.groups for m in g for p in (m.a.weight, m.b.weight)]
    flat = torch.autograd.grad(loss, params)
    out, i = [], 0
    for group in grads.groups:
        parts = []
        for _ in group:
            parts += [flat[i].flatten(), flat[i + 1].flatten()]
            i += 2
        out.append(torch.cat(parts).numpy())
    return out


def test_batched_per_example_gradients_equal_each_examples_own(model: PeftModel) -> None:
    grads = LoraGradients(model)
    assert grads.group_names == ["layer 0", "layer 1"]
    assert len(grads.group_sizes) == 2 and grads.group_sizes[0] > 0
    batched = grads.per_example(ROWS, PAD)
    for r, row in enumerate(ROWS):
        alone = autograd_gradient(model, grads, row)
        for g, expected in enumerate(alone):
            assert batched[g].shape == (len(ROWS), expected.size)
            np.testing.assert_allclose(batched[g][r], expected, rtol=1e-4, atol=1e-6)


def test_token_weights_reweigh_the_loss(model: PeftModel) -> None:
    grads = LoraGradients(model)
    weights = [[0.0, 3.0, 1.0], [1.0, 1.0], [0.0, 0.0, 0.0]]  # the last: all zero -> mean
    batched = grads.per_example(ROWS, PAD, weights)
    expected = [
        autograd_gradient(model, grads, ROWS[0], [0.0, 3.0, 1.0]),
        autograd_gradient(model, grads, ROWS[1]),
        autograd_gradient(model, grads, ROWS[2]),
    ]
    for r in range(3):
        for g in range(2):
            np.testing.assert_allclose(batched[g][r], expected[r][g], rtol=1e-4, atol=1e-6)
    with pytest.raises(GradientError, match="row 0: 2 token weights for 3 labelled tokens"):
        grads.per_example(ROWS, PAD, [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0, 1.0]])


def test_pairs_are_chosen_minus_rejected(model: PeftModel) -> None:
    grads = LoraGradients(model)
    rows = grads.per_example(ROWS[:2] * 2, PAD)
    pairs = pair_differences(rows)
    assert pairs[0].shape[0] == 2
    np.testing.assert_allclose(pairs[0][0], rows[0][0] - rows[0][1])


def test_rows_without_a_labelled_token_are_refused(model: PeftModel) -> None:
    with pytest.raises(GradientError, match="no labelled token"):
        LoraGradients(model).per_example([([1, 2, 3], [IGNORE, IGNORE, IGNORE])], PAD)


def test_a_model_without_lora_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GradientError, match="no LoRA modules of adapter 'default'"):
        LoraGradients(load_base(build_base(tmp_path / "b")))
