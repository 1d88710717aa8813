"""The optimization loop ModelFactory's LoRA trainers share, and the loss curve it records.

SFT and DPO each supply only a batch's loss; the loop owns everything else: the seeded batch
order, AdamW, the learning-rate schedule (a parameter: each method picks its own), gradient
clipping, the progress bar and ``on_step`` callback, the loss curve and the step log. The caller
builds the model inside :func:`~backend.modelfactory.lora_training.deterministic`, so the same
inputs give the same losses and adapter bytes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from backend.modelfactory.lora_training import MAX_GRAD_NORM, index_batches
from backend.modelfactory.spec import TrainSettings

log = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between log lines
WARMUP_FRACTION = 0.05  # of the steps, with the learning rate rising linearly

# (scheduler step from 0, total steps) -> the factor the learning rate is multiplied by
Schedule = Callable[[int, int], float]
# a batch's indices -> (its mean loss, other values to record for the step)
BatchLoss = Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]]
StepCallback = Callable[[int, int], None]  # (step, total) after every optimizer step


def constant(step: int, total: int) -> float:
    """The learning rate as set, at every step."""
    return 1.0


def warmup_then_decay(step: int, total: int) -> float:
    """Linear warmup over the first steps, then linear decay to zero at ``total``."""
    warmup = math.ceil(WARMUP_FRACTION * total)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def plan_steps(rows: int, settings: TrainSettings) -> tuple[int, int]:
    """``(steps per epoch, total steps)``: every row once an epoch, stopped at ``max_steps``."""
    per_epoch = math.ceil(rows / settings.batch_size)
    total = per_epoch * settings.epochs
    return per_epoch, total if settings.max_steps is None else min(total, settings.max_steps)


@dataclass(frozen=True)
class LoopResult:
    curve: list[dict[str, float]]  # {"step", "epoch", "loss"} per step
    metrics: dict[str, list[float]]  # what the batch loss reported besides the loss, per step
    seconds: float  # the loop alone

    @property
    def losses(self) -> list[float]:
        return [point["loss"] for point in self.curve]


def run_loop(
    name: str,
    model: torch.nn.Module,
    batch_loss: BatchLoss,
    rows: int,
    settings: TrainSettings,
    schedule: Schedule,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> LoopResult:
    """Trains ``model``'s trainable parameters on ``rows`` examples: each epoch a fresh
    permutation (seeded by ``settings.seed``) cut into batches of ``settings.batch_size``, one
    AdamW step a batch at ``settings.learning_rate`` times ``schedule``, gradients clipped to
    ``MAX_GRAD_NORM``. ``name`` labels the progress bar and the log lines."""
    per_epoch, total = plan_steps(rows, settings)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, total))
    generator = torch.Generator().manual_seed(settings.seed)
    curve: list[dict[str, float]] = []
    metrics: dict[str, list[float]] = {}
    batches = index_batches(rows, settings.batch_size, total, generator)
    started = time.perf_counter()
    with tqdm(total=total, desc=name, unit="step", disable=not progress) as bar:
        for step, indices in enumerate(batches, start=1):
            loss, recorded = batch_loss(indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            value = loss.item()
            curve.append({"step": step, "epoch": round(step / per_epoch, 4), "loss": value})
            for key, recorded_value in recorded.items():
                metrics.setdefault(key, []).append(recorded_value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if step % LOG_EVERY == 0 or step in (1, total):
                log.info("%s step %d/%d: loss %.4f", name, step, total, value)
            if on_step is not None:
                on_step(step, total)
    return LoopResult(curve, metrics, time.perf_counter() - started)


PLOT_SIZE = (6.4, 3.6)  # inches; at PLOT_DPI a 640 by 360 pixel image
PLOT_DPI = 100


def save_loss_curve(curve: Sequence[dict[str, float]], json_path: Path, png_path: Path) -> None:
    """The curve as JSON (a list of ``{step, epoch, loss}``) and as a PNG line plot of loss
    over step (the y axis spans the curve's own range)."""
    if not curve:
        raise ValueError("an empty loss curve")
    steps = [float(point["step"]) for point in curve]
    losses = [float(point["loss"]) for point in curve]
    if not all(math.isfinite(v) for v in steps + losses):
        raise ValueError("the loss curve holds a non-finite value")
    Path(json_path).write_text(json.dumps(list(curve), indent=2, sort_keys=True) + "\n")
    # imported here: only a job's end plots, and matplotlib costs a second to import
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI)
    FigureCanvasAgg(figure)  # Agg: renders without a display
    axes = figure.add_subplot()
    axes.plot(steps, losses, color="tab:blue", linewidth=1.5, marker="o" if len(curve) == 1 else "")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(True, color="0.88")
    figure.tight_layout()
    # no "Software" text chunk: the bytes do not name the matplotlib version
    figure.savefig(Path(png_path), format="png", metadata={"Software": None})
