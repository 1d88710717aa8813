"""The loop SFT and DPO share: its schedules, its step plan, a seeded run on a toy model (steps,
curve, callback, recorded values, the schedule applied), and the loss curve as JSON and PNG."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from backend.modelfactory.spec import TrainSettings
from backend.modelfactory.training_loop import (
    LoopResult,
    Schedule,
    StepCallback,
    constant,
    plan_steps,
    run_loop,
    save_loss_curve,
    warmup_then_decay,
)


def test_schedules() -> None:
    assert [constant(s, 10) for s in range(10)] == [1.0] * 10
    # 5% of 40 steps warm up (2), then the rate falls linearly to zero at step 40
    factors = [warmup_then_decay(s, 40) for s in range(41)]
    assert factors[:3] == [0.5, 1.0, 1.0] and factors[39] == 1 / 38 and factors[40] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))
    assert warmup_then_decay(0, 1) == 1.0  # a single step warms up at once


def test_steps_cover_every_row_once_an_epoch_up_to_max_steps() -> None:
    assert plan_steps(10, TrainSettings(batch_size=4, epochs=3)) == (3, 9)
    assert plan_steps(10, TrainSettings(batch_size=4, epochs=3, max_steps=5)) == (3, 5)
    assert plan_steps(3, TrainSettings(batch_size=8, epochs=2)) == (1, 2)


def toy_run(
    settings: TrainSettings, schedule: Schedule = constant, on_step: StepCallback | None = None
) -> tuple[LoopResult, list[list[int]], torch.nn.Linear]:
    """A linear model fitted to y = 2x on ten rows; what the loop returns, and the batches."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    xs = torch.arange(10, dtype=torch.float32).unsqueeze(1) / 10
    seen: list[list[int]] = []

    def batch_loss(indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        seen.append(indices)
        x = xs[indices]
        return ((model(x) - 2 * x) ** 2).mean(), {"rows": float(len(indices))}

    result = run_loop("toy", model, batch_loss, 10, settings, schedule, False, on_step)
    return result, seen, model


def test_the_loop_records_every_step_and_calls_back() -> None:
    calls: list[tuple[int, int]] = []
    settings = TrainSettings(batch_size=4, epochs=2, learning_rate=0.1, seed=3)
    result, seen, _ = toy_run(settings, on_step=lambda step, total: calls.append((step, total)))
    assert calls == [(s, 6) for s in range(1, 7)]
    assert [p["step"] for p in result.curve] == list(range(1, 7))
    assert [p["epoch"] for p in result.curve] == [0.3333, 0.6667, 1.0, 1.3333, 1.6667, 2.0]
    assert result.losses == [p["loss"] for p in result.curve]
    assert result.losses[-1] < result.losses[0]
    assert result.metrics == {"rows": [4.0, 4.0, 2.0] * 2}
    epochs = [sorted(i for batch in part for i in batch) for part in (seen[:3], seen[3:])]
    assert epochs == [list(range(10))] * 2
    again, seen_again, _ = toy_run(settings)
    assert again.curve == result.curve and seen_again == seen  # seeded
    _, reseeded, _ = toy_run(TrainSettings(batch_size=4, epochs=2, learning_rate=0.1, seed=4))
    assert reseeded != seen


def test_the_schedule_scales_the_learning_rate() -> None:
    settings = TrainSettings(batch_size=10, epochs=3, learning_rate=0.1)
    _, _, frozen = toy_run(settings, schedule=lambda step, total: 0.0)
    torch.manual_seed(0)
    untrained = torch.nn.Linear(1, 1)
    assert torch.equal(frozen.weight, untrained.weight) and torch.equal(frozen.bias, untrained.bias)
    _, _, trained = toy_run(settings)
    assert not torch.equal(trained.weight, untrained.weight)


def blue_columns(image: np.ndarray) -> list[int]:
    """Columns of the top third of ``image`` where a pixel is the curve's blue."""
    blue = np.array([31, 119, 180]) / 255
    top = image[: image.shape[0] // 3, :, :3]
    near = np.abs(top - blue).max(axis=2) < 0.1  # [rows, columns]
    return sorted(set(np.nonzero(near)[1].tolist()))


def test_loss_curve_is_saved_as_json_and_png(tmp_path: Path) -> None:
    falling = [{"step": s, "epoch": s / 10, "loss": 5.0 / s} for s in range(1, 21)]
    rising = [{"step": s, "epoch": s / 10, "loss": 0.1 * s} for s in range(1, 21)]
    save_loss_curve(falling, tmp_path / "a.json", tmp_path / "a.png")
    save_loss_curve(rising, tmp_path / "b.json", tmp_path / "b.png")
    save_loss_curve(falling[:1], tmp_path / "c.json", tmp_path / "c.png")
    save_loss_curve(falling, tmp_path / "again.json", tmp_path / "again.png")
    assert json.loads((tmp_path / "a.json").read_text()) == falling
    png = (tmp_path / "a.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == (tmp_path / "again.png").read_bytes()
    assert b"matplotlib" not in png  # no version in the bytes: stored by CID
    a, b, c = (imread(tmp_path / f"{name}.png") for name in "abc")
    assert a.shape[:2] == (360, 640) and b.shape == a.shape == c.shape
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    # the falling curve starts top left; the rising one ends top right
    assert blue_columns(a) and min(blue_columns(a)) < 640 // 4
    assert blue_columns(b) and min(blue_columns(b)) > 640 // 2
    with pytest.raises(ValueError, match="empty"):
        save_loss_curve([], tmp_path / "d.json", tmp_path / "d.png")
    with pytest.raises(ValueError, match="non-finite"):
        save_loss_curve([{"step": 1, "epoch": 1, "loss": math.nan}], tmp_path / "e.json",
                        tmp_path / "e.png")  # fmt: skip
