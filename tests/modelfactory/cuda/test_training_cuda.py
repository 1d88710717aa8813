"""SFT, DPO and their evaluation on a CUDA GPU: the same first-step loss and held-out scores as
on the CPU (same seed, same start), a loss that falls, adapters that load anywhere. Skipped
where no GPU is present; run on a lent GPU machine by ``bench/gpu_checks.sh`` (this folder
holds no conftest, so it runs without the chain's test dependencies)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend.modelfactory.dpo import preference_metrics, train_dpo
from backend.modelfactory.evaluate import evaluate
from backend.modelfactory.lora_training import WEIGHTS_FILE
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import LoraSettings, TrainSettings
from tests.engine.tiny_tokenizer import MAX_LENGTH, build_tiny_checkpoint
from tests.modelfactory.test_dpo import BETA, HELD_OUT, TRAIN
from tests.modelfactory.test_sft import LORA, SETTINGS, instruction_examples

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat_llama"))


def test_sft_on_cuda_matches_cpu_at_the_start_and_learns(checkpoint: Path, tmp_path: Path) -> None:
    examples = instruction_examples()
    train, held = examples[:24], examples[24:]
    settings = replace(SETTINGS, device="cuda")
    gpu = train_sft(checkpoint, train, LORA, settings, tmp_path / "gpu", progress=False)
    cpu = train_sft(checkpoint, train, LORA, replace(SETTINGS, max_steps=1), tmp_path / "cpu",
                    progress=False)  # fmt: skip
    # the same seed draws the same LoRA A on both devices and B starts at zero: the same
    # first batch gives the same loss (fp32; TF32 is off by default)
    assert gpu.loss_curve[0]["loss"] == pytest.approx(cpu.loss_curve[0]["loss"], abs=1e-4)
    losses = [point["loss"] for point in gpu.loss_curve]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.4, losses
    assert gpu.tokens > 0 and gpu.steps == len(gpu.loss_curve)
    # saved from the GPU, loadable on the CPU; scored the same on both
    assert all(t.device.type == "cpu" for t in load_file(gpu.adapter_dir / WEIGHTS_FILE).values())
    on_gpu = evaluate(checkpoint, gpu.adapter_dir, held, 128, samples=1, device="cuda")
    on_cpu = evaluate(checkpoint, gpu.adapter_dir, held, 128, samples=1, device="cpu")
    assert on_gpu.adapter_loss == pytest.approx(on_cpu.adapter_loss, abs=1e-4)
    assert on_gpu.base_loss == pytest.approx(on_cpu.base_loss, abs=1e-4)
    assert on_gpu.adapter_loss < on_gpu.base_loss - 0.4


def test_dpo_on_cuda_starts_at_log_2_and_learns_the_held_out_preference(
    checkpoint: Path, tmp_path: Path
) -> None:
    settings = TrainSettings(epochs=10, batch_size=8, learning_rate=2e-2, max_length=MAX_LENGTH,
                             seed=0, beta=BETA, device="cuda")  # fmt: skip
    lora = LoraSettings(rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"))
    out = tmp_path / "dpo"
    result = train_dpo(checkpoint, None, TRAIN, lora, settings, out, progress=False)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert sum(result.losses[-5:]) / 5 < result.losses[0] - 0.1
    on_gpu = preference_metrics(checkpoint, out, None, HELD_OUT, BETA, MAX_LENGTH, device="cuda")
    on_cpu = preference_metrics(checkpoint, out, None, HELD_OUT, BETA, MAX_LENGTH)
    assert on_gpu["accuracy"] == on_cpu["accuracy"] >= 0.75
    assert on_gpu["mean_margin"] == pytest.approx(on_cpu["mean_margin"], abs=1e-3)
