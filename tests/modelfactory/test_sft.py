"""LoRA SFT on the tiny chat checkpoint: answer-only loss, a falling loss, identical bytes for
identical inputs, a PEFT adapter, and an eval report that sees the gain (the loss curve's PNG:
test_training_loop.py)."""

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
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.modelfactory.dataset import Example
from backend.modelfactory.evaluate import evaluate, greedy_answers
from backend.modelfactory.lora_training import CONFIG_FILE, IGNORE, WEIGHTS_FILE
from backend.modelfactory.sft import (
    SFTResult,
    encode_example,
    train_sft,
)
from backend.modelfactory.spec import LoraSettings, TrainSettings
from tests.engine.tiny_tokenizer import build_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
CONTRIBUTOR = "0x" + "12" * 20
LORA = LoraSettings(rank=8, alpha=16, target_modules=("v_proj", "q_proj", "o_proj", "k_proj"))
SETTINGS = TrainSettings(epochs=8, batch_size=8, learning_rate=2e-2, max_length=128, seed=0)

# The same training in a fresh interpreter with another hash seed (set order differs).
TRAIN_IN_SUBPROCESS = """
import sys
from pathlib import Path
from backend.modelfactory.spec import TrainSettings
from tests.modelfactory.test_sft import LORA, SETTINGS, instruction_examples
from backend.modelfactory.sft import train_sft
train_sft(Path(sys.argv[1]), instruction_examples()[:24], LORA, SETTINGS, Path(sys.argv[2]),
          progress=False)
"""


def instruction_example(i: int) -> Example:
    where = {"contribution_id": 1 + i % 3, "cid": f"cid{i % 3}", "contributor": CONTRIBUTOR}
    return Example(
        **where, line=i + 1, byte_start=0, byte_end=0, kind="instruction",
        prompt=f"What is {i} plus {2 * i + 1}?", response=f"The answer is {3 * i + 1}.",
    )  # fmt: skip


def instruction_examples(count: int = 32) -> list[Example]:
    return [instruction_example(i) for i in range(count)]


def chat_example(*turns: tuple[str, str]) -> Example:
    return Example(1, "cid", CONTRIBUTOR, 1, 0, 0, "chat", messages=tuple(turns))


def text_example(text: str) -> Example:
    return Example(1, "cid", CONTRIBUTOR, None, 0, len(text), "text", text=text)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat_llama"))


@pytest.fixture(scope="module")
def trained(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> SFTResult:
    out = tmp_path_factory.mktemp("sft") / "adapter"
    return train_sft(checkpoint, instruction_examples()[:24], LORA, SETTINGS, out, progress=False)


def test_instruction_loss_covers_only_the_answer(checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids, labels = encode_example(tokenizer, instruction_examples()[1], max_length=128)
    assert tokenizer.decode(ids) == (
        "<|im_start|>user\nWhat is 1 plus 3?<|im_end|>\n<|im_start|>assistant\n"
        "The answer is 4.<|im_end|>"
    )
    answer = [label for label in labels if label != IGNORE]
    assert tokenizer.decode(answer) == "The answer is 4.<|im_end|>"
    assert labels[-len(answer) :] == ids[-len(answer) :] and len(ids) == len(labels)
    assert encode_example(tokenizer, instruction_examples()[1], 30) == (ids[:30], labels[:30])


def test_chat_loss_covers_every_assistant_turn(checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    chat = chat_example(
        ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."),
        ("user", "Bye"), ("assistant", "Goodbye."), ("user", "unanswered"),
    )  # fmt: skip
    ids, labels = encode_example(tokenizer, chat, max_length=128)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\nGoodbye.<|im_end|>")
    assert "unanswered" not in tokenizer.decode(ids)
    spans = [tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE])]
    assert spans == ["Hello.<|im_end|>Goodbye.<|im_end|>"]


def test_text_loss_covers_every_token_after_the_first(checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids, labels = encode_example(tokenizer, text_example("plain text\nsecond line"), 128)
    assert tokenizer.decode(ids) == "plain text\nsecond line"
    assert labels == [IGNORE, *ids[1:]]
    long_ids, long_labels = encode_example(tokenizer, text_example("x" * 200), 128)
    assert len(long_labels) == 128 and tokenizer.decode(long_ids) == "x" * 128


def test_training_lowers_the_loss(trained: SFTResult) -> None:
    losses = [point["loss"] for point in trained.loss_curve]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.4, losses


def test_result_counts_steps_epochs_and_tokens(checkpoint: Path, trained: SFTResult) -> None:
    assert trained.steps == SETTINGS.epochs * math.ceil(24 / 8) == len(trained.loss_curve)
    assert [p["step"] for p in trained.loss_curve] == list(range(1, trained.steps + 1))
    assert trained.loss_curve[2]["epoch"] == 1.0 and trained.loss_curve[-1]["epoch"] == 8.0
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    lengths = [len(encode_example(tokenizer, e, 128)[0]) for e in instruction_examples()[:24]]
    assert trained.tokens == SETTINGS.epochs * sum(lengths)  # every example once an epoch
    assert trained.examples == 24 and trained.dropped == ()
    assert trained.tokens_per_second == pytest.approx(trained.tokens / trained.seconds)


def test_adapter_is_peft_format(checkpoint: Path, trained: SFTResult) -> None:
    adapter = trained.adapter_dir
    assert sorted(p.name for p in adapter.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((adapter / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and (config["r"], config["lora_alpha"]) == (8, 16)
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == checkpoint.name  # no local path leaks out
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(checkpoint), adapter)
    b_weights = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert len(b_weights) == 2 * 4 and all(p.abs().max() > 0 for p in b_weights)


def test_same_inputs_give_the_same_bytes(
    checkpoint: Path, trained: SFTResult, tmp_path: Path
) -> None:
    train = instruction_examples()[:24]
    again = train_sft(checkpoint, train, LORA, SETTINGS, tmp_path / "again", progress=False)
    env = {**os.environ, "PYTHONHASHSEED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(checkpoint), str(tmp_path / "sub")]
    subprocess.run(command, check=True, cwd=ROOT, env=env, timeout=120)
    reseeded = replace(SETTINGS, seed=1)
    other = train_sft(checkpoint, train, LORA, reseeded, tmp_path / "seed1", progress=False)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        expected = (trained.adapter_dir / name).read_bytes()
        assert (again.adapter_dir / name).read_bytes() == expected, name
        assert (tmp_path / "sub" / name).read_bytes() == expected, name
    assert again.loss_curve == trained.loss_curve
    assert (other.adapter_dir / WEIGHTS_FILE).read_bytes() != (
        trained.adapter_dir / WEIGHTS_FILE
    ).read_bytes()


def test_eval_report_shows_the_adapter_gain_on_held_out_examples(
    checkpoint: Path, trained: SFTResult
) -> None:
    held_out = instruction_examples()[24:]
    report = evaluate(checkpoint, trained.adapter_dir, held_out, 128, samples=2, max_new_tokens=8)
    assert report.examples == 8
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    labelled = [encode_example(tokenizer, e, 128)[1] for e in held_out]
    assert report.tokens == sum(sum(t != IGNORE for t in labels[1:]) for labels in labelled)
    assert report.adapter_loss < report.base_loss - 0.4, report
    assert report.relative_loss_reduction == pytest.approx(
        (report.base_loss - report.adapter_loss) / report.base_loss
    )
    assert report.base_perplexity == pytest.approx(math.exp(report.base_loss))
    assert report.adapter_perplexity == pytest.approx(math.exp(report.adapter_loss))
    assert [(s.prompt, s.reference) for s in report.samples] == [
        (e.prompt, e.response) for e in held_out[:2]
    ]
    assert all(s.adapter_answer != s.base_answer for s in report.samples)
    assert (
        json.loads(json.dumps(report.to_json()))["samples"][0]["reference"] == "The answer is 73."
    )


def test_greedy_answers_are_the_eval_samples_a_node_would_give(
    checkpoint: Path, trained: SFTResult
) -> None:
    held_out = instruction_examples()[24:26]
    report = evaluate(checkpoint, trained.adapter_dir, held_out, 128, samples=2, max_new_tokens=8)
    questions = [e.prompt or "" for e in held_out]
    answers = greedy_answers(checkpoint, trained.adapter_dir, questions, max_new_tokens=8)
    assert answers == [s.adapter_answer for s in report.samples]
    assert greedy_answers(checkpoint, trained.adapter_dir, [], max_new_tokens=8) == []


def test_eval_loss_is_the_models_own_loss_on_answer_tokens(
    checkpoint: Path, trained: SFTResult
) -> None:
    """The fast path (logits only at answers, shared prefix) agrees with ``labels=``."""
    one = instruction_examples()[30:31]
    report = evaluate(checkpoint, trained.adapter_dir, one, 128, samples=0)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids, labels = encode_example(tokenizer, one[0], 128)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(checkpoint),
                                      trained.adapter_dir).eval()  # fmt: skip
    with torch.no_grad():
        tuned = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        with model.disable_adapter():
            base = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    assert report.adapter_loss == pytest.approx(tuned.item(), abs=1e-4)
    assert report.base_loss == pytest.approx(base.item(), abs=1e-4)
    assert report.samples == ()


def test_chat_and_text_examples_train(checkpoint: Path, tmp_path: Path) -> None:
    chats = [
        chat_example(("user", f"Hi {i}"), ("assistant", f"Hello {i}."), ("user", "Bye"),
                     ("assistant", "Goodbye."))
        for i in range(6)
    ]  # fmt: skip
    texts = [text_example(f"Paragraph {i} of plain text.\nIt has two lines.") for i in range(6)]
    settings = replace(SETTINGS, batch_size=4, max_steps=2)
    references = {}
    for name, examples in (("chat", chats), ("text", texts)):
        result = train_sft(checkpoint, examples, LORA, settings, tmp_path / name, progress=False)
        assert result.steps == 2 and result.examples == 6
        assert (tmp_path / name / WEIGHTS_FILE).stat().st_size > 0
        report = evaluate(checkpoint, tmp_path / name, examples[:2], 128, 1, max_new_tokens=4)
        assert report.examples == 2 and len(report.samples) == 1
        references[name] = (report.samples[0].prompt, report.samples[0].reference)
    assert references == {
        "chat": ("Bye", "Goodbye."),
        "text": ("Paragraph 0 of plain t", "ext.\nIt has two lines."),
    }


def test_examples_without_an_answer_within_max_length_are_left_out(
    checkpoint: Path, tmp_path: Path
) -> None:
    examples = instruction_examples(4)
    examples[2] = replace(examples[2], prompt="a much longer question " * 3)
    settings = replace(SETTINGS, max_length=44, max_steps=1)
    result = train_sft(checkpoint, examples, LORA, settings, tmp_path / "out", progress=False)
    assert result.dropped == (2,) and result.examples == 3
    with pytest.raises(ValueError, match="max_length=20"):
        train_sft(checkpoint, examples, LORA, replace(settings, max_length=20), tmp_path / "x")
    with pytest.raises(ValueError, match="no training examples"):
        train_sft(checkpoint, [], LORA, settings, tmp_path / "x")
    assert not (tmp_path / "x").exists()
