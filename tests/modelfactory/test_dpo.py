"""DPO on the tiny chat checkpoint: it learns a held-out preference, from a real PEFT adapter,
against the right reference, and gives the same adapter bytes for the same inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.modelfactory.dpo import (
    CONFIG_FILE,
    IGNORE,
    WEIGHTS_FILE,
    DPOError,
    Pair,
    answer_logprobs,
    encode_pairs,
    preference_metrics,
    train_dpo,
)
from backend.modelfactory.spec import LoraSettings, TrainSettings
from tests.engine.tiny_tokenizer import MAX_LENGTH, build_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
BETA = 0.1
SETTINGS = TrainSettings(
    epochs=10, batch_size=8, learning_rate=2e-2, max_length=MAX_LENGTH, seed=0, beta=BETA
)
WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "heron", "indigo",
         "juniper", "kelp", "lotus", "maple", "nectar", "onyx", "pebble", "quartz", "raven",
         "sage", "tundra", "umber", "violet", "willow", "yarrow", "zephyr", "acorn", "birch",
         "coral", "dune", "elm", "fern", "glade"]  # fmt: skip


def pairs(words: list[str]) -> list[Pair]:
    """A preference that depends on the prompt (half want "yes", half "no"), so a model that
    has not learned it ranks about half the pairs right."""
    made = []
    for i, w in enumerate(words):
        want, other = ("yes", "no") if i % 2 == 0 else ("no", "yes")
        made.append(Pair(f"Say {want}: {w}?", f"{want}, {w}.", f"{other}, {w}."))
    return made


TRAIN, HELD_OUT = pairs(WORDS[:24]), pairs(WORDS[24:])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat_llama"))


@pytest.fixture(scope="module")
def init_adapter(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model's current adapter: a real PEFT adapter with random (non-identity) weights."""
    folder = tmp_path_factory.mktemp("current_adapter")
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(7)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(checkpoint), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    return folder


def test_answer_logprobs_sum_the_answer_tokens_of_each_chat(checkpoint: Path) -> None:
    """Batched, padded, shared prefix computed once: the same as one plain forward per chat."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    examples, _ = encode_pairs(tokenizer, TRAIN[:3], MAX_LENGTH)
    rows = [chat for pair in examples for chat in pair]
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        batched = answer_logprobs(model, rows, tokenizer.pad_token_id)
        expected = []
        for ids, labels in rows:
            logps = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            expected.append(sum(logps[t - 1, ids[t]] for t in range(1, len(ids))
                                if labels[t] != IGNORE))  # fmt: skip
    assert batched.shape == (6,)
    torch.testing.assert_close(batched, torch.stack(expected), atol=1e-4, rtol=0)
    # the answer runs through the end-of-turn token, and only the answer is scored
    ids, labels = rows[0]
    answer = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) == TRAIN[0].chosen


def test_dpo_learns_a_held_out_preference_starting_from_the_current_adapter(
    checkpoint: Path, init_adapter: Path, tmp_path: Path
) -> None:
    before = preference_metrics(checkpoint, init_adapter, None, HELD_OUT, BETA, MAX_LENGTH)
    out = tmp_path / "next"
    result = train_dpo(checkpoint, init_adapter, TRAIN, LoraSettings(), SETTINGS, out, False)
    after = preference_metrics(checkpoint, out, None, HELD_OUT, BETA, MAX_LENGTH)
    gained = preference_metrics(checkpoint, out, init_adapter, HELD_OUT, BETA, MAX_LENGTH)

    # the reference is the starting point (the current adapter): step 1 starts at log 2
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert sum(result.losses[-5:]) / 5 < result.losses[0] - 0.1
    assert (result.steps, result.pairs, result.skipped) == (30, 24, 0)
    assert len(result.losses) == len(result.reward_accuracies) == 30
    # it continued the current adapter with that adapter's own settings
    assert result.lora == LoraSettings(rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"))

    assert after["pairs"] == gained["pairs"] == len(HELD_OUT)
    # held-out pairs, judged against the base model: about chance before, learned after
    assert before["accuracy"] <= 0.625 and after["accuracy"] >= 0.875
    assert after["mean_margin"] > before["mean_margin"] + 0.1
    # and against the starting point, as the DPO objective sees it
    assert gained["accuracy"] >= 0.875 and gained["mean_margin"] > 0.1


def test_dpo_saves_a_peft_adapter_that_loads(checkpoint: Path, tmp_path: Path) -> None:
    settings = TrainSettings(batch_size=4, max_steps=2, max_length=MAX_LENGTH, beta=BETA)
    lora = LoraSettings(rank=2, alpha=4.0, target_modules=("v_proj", "q_proj", "o_proj"))
    out = tmp_path / "adapter"
    result = train_dpo(checkpoint, None, TRAIN[:4], lora, settings, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["base_model_name_or_path"] == checkpoint.name  # no local path published
    assert config["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    assert (config["r"], config["lora_alpha"]) == (2, 4.0)
    assert result.lora == lora
    # a fresh adapter starts as the base model, the reference: step 1 starts at log 2
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(checkpoint), out)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())


# The same training in a fresh interpreter with another hash seed (set order differs).
TRAIN_IN_SUBPROCESS = """
import sys
from pathlib import Path
import torch
from backend.modelfactory.dpo import train_dpo
from backend.modelfactory.spec import LoraSettings, TrainSettings
from tests.modelfactory.test_dpo import TRAIN
torch.set_num_threads(1)
settings = TrainSettings(batch_size=4, max_steps=3, max_length=int(sys.argv[3]), beta=0.1)
train_dpo(Path(sys.argv[1]), None, TRAIN[:8], LoraSettings(rank=4), settings, Path(sys.argv[2]),
          progress=False)
"""


def adapter_bytes(folder: Path) -> bytes:
    return (folder / WEIGHTS_FILE).read_bytes() + (folder / CONFIG_FILE).read_bytes()


def test_dpo_gives_the_same_adapter_bytes_for_the_same_inputs(
    checkpoint: Path, tmp_path: Path
) -> None:
    settings = TrainSettings(batch_size=4, max_steps=3, max_length=MAX_LENGTH, beta=BETA)

    def run(name: str, seed: int) -> bytes:
        out = tmp_path / name
        seeded = replace(settings, seed=seed)
        train_dpo(checkpoint, None, TRAIN[:8], LoraSettings(rank=4), seeded, out, progress=False)
        return adapter_bytes(out)

    first = run("first", 0)
    assert run("second", 0) == first
    assert run("other_seed", 1) != first
    fresh = tmp_path / "fresh_interpreter"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(checkpoint), str(fresh)]
    subprocess.run([*command, str(MAX_LENGTH)], env=env, check=True, cwd=ROOT, timeout=120)
    assert adapter_bytes(fresh) == first


def test_policy_equal_to_reference_has_learned_nothing(
    checkpoint: Path, init_adapter: Path
) -> None:
    same = preference_metrics(checkpoint, init_adapter, init_adapter, HELD_OUT, BETA, MAX_LENGTH)
    assert (same["accuracy"], same["mean_margin"]) == (0.0, 0.0)
    base = preference_metrics(checkpoint, None, None, HELD_OUT, BETA, MAX_LENGTH)
    assert (base["accuracy"], base["mean_margin"]) == (0.0, 0.0)


def test_dpo_refuses_pairs_it_cannot_train_on(checkpoint: Path, tmp_path: Path) -> None:
    def train(data: list[Pair], max_length: int = MAX_LENGTH) -> None:
        settings = TrainSettings(max_length=max_length, max_steps=1)
        train_dpo(checkpoint, None, data, LoraSettings(), settings, tmp_path / "x", False)

    with pytest.raises(DPOError, match="no preference pairs"):
        train([])
    with pytest.raises(DPOError, match="pair 1: chosen and rejected are the same"):
        train([TRAIN[0], Pair("p", "same", "same")])
    with pytest.raises(DPOError, match="pair 0: prompt, chosen and rejected must be non-empty"):
        train([Pair("p", "", "x")])
    with pytest.raises(DPOError, match="no pair keeps an answer token within max_length=8"):
        train(TRAIN[:2], max_length=8)
    assert not (tmp_path / "x").exists()
