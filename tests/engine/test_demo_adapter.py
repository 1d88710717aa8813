"""The demo adapter: a real LoRA fine-tune on instruction pairs, on the tiny chat checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from inference_node.engine import BaseModelSpec, load_adapter
from inference_node.engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from inference_node.engine.demo_adapter import (
    IGNORE,
    decoder_hidden_states,
    encode_pair,
    load_instruction_pairs,
    shared_prefix_length,
    train_demo_adapter,
)
from tests.engine.conftest import MAX_RANK
from tests.engine.tiny_tokenizer import build_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "datasets" / "unit-conversions"
TRAIN = {"steps": 30, "max_length": 128, "seed": 0}  # the tiny model has 128 positions
PAIRS = 32  # the first pairs of the dataset, seen several times in 30 steps of 8

# The same training in a fresh interpreter with another hash seed (set order differs).
TRAIN_IN_SUBPROCESS = """
import json, sys
from pathlib import Path
from inference_node.engine.demo_adapter import train_demo_adapter
base, pairs, out, kwargs = sys.argv[1:]
pairs = [tuple(pair) for pair in json.loads(Path(pairs).read_text())]
train_demo_adapter(Path(base), pairs, Path(out), **json.loads(kwargs))
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; on a busy machine more threads spin at barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat_llama"))


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return load_instruction_pairs(DATASET)[:PAIRS]


@pytest.fixture(scope="module")
def adapter(
    checkpoint: Path, pairs: list[tuple[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return train_demo_adapter(checkpoint, pairs, tmp_path_factory.mktemp("demo_adapter"), **TRAIN)


def answer_loss(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> float:
    """Mean loss on the answer tokens, by the model's own ``labels=`` path."""
    losses = []
    with torch.no_grad():
        for prompt, answer in pairs:
            ids, labels = encode_pair(tokenizer, prompt, answer, TRAIN["max_length"])
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            losses.append(out.loss.item())
    return sum(losses) / len(losses)


def test_pairs_come_from_data_not_bad() -> None:
    all_pairs = load_instruction_pairs(DATASET)
    expected = [
        (record["prompt"], record["response"])
        for path in sorted((DATASET / "data").glob("*.jsonl"))
        for record in map(json.loads, path.read_text(encoding="utf-8").splitlines())
    ]
    assert all_pairs == expected and len(all_pairs) == 396
    bad = (DATASET / "bad" / "wrong-factors.jsonl").read_text(encoding="utf-8").splitlines()
    assert not {json.loads(line)["response"] for line in bad} & {a for _, a in all_pairs}


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", r"broken\.jsonl:2: not valid JSON"),
        ('["a", "b"]', r"broken\.jsonl:2: expected a JSON object"),
        ('{"prompt": "a", "response": 3}', r"broken\.jsonl:2: prompt and response must"),
        ('{"prompt": "a"}', r"broken\.jsonl:2: prompt and response must"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, line: str, error: str) -> None:
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "response": "r"}\n' + line + "\n")
    with pytest.raises(ValueError, match=error):
        load_instruction_pairs(tmp_path)


def test_folder_without_pairs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    with pytest.raises(ValueError, match="no instruction pairs"):
        load_instruction_pairs(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_instruction_pairs(tmp_path / "missing")


def test_loss_covers_only_the_answer_and_end_of_turn(checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids, labels = encode_pair(tokenizer, "1 ft in m?", "0.3048 m", max_length=128)
    assert tokenizer.decode(ids) == (
        "<|im_start|>user\n1 ft in m?<|im_end|>\n<|im_start|>assistant\n0.3048 m<|im_end|>"
    )
    answer = [label for label in labels if label != IGNORE]
    assert tokenizer.decode(answer) == "0.3048 m<|im_end|>"
    assert labels[-len(answer) :] == ids[-len(answer) :]
    short_ids, short_labels = encode_pair(tokenizer, "1 ft in m?", "0.3048 m", max_length=40)
    assert (short_ids, short_labels) == (ids[:40], labels[:40])


def test_shared_prefix_changes_neither_states_nor_gradients(
    checkpoint: Path, pairs: list[tuple[str, str]]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = [encode_pair(tokenizer, p, a, 128)[0] for p, a in pairs[:5]]
    width = max(map(len, rows))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])  # [5, width]
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    common = next(i for i in range(width) if len({row[i] for row in rows}) > 1)
    assert shared_prefix_length(ids, mask) == common >= 1 + len(b"user\n")  # <|im_start|>user\n
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["k_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(checkpoint), lora)
    decoder = model.get_base_model().get_decoder()
    real = mask.bool()

    def states_and_grads(shared: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        if shared:
            states = decoder_hidden_states(decoder, ids, mask)
        else:
            states = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        (states[real] ** 2).mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return states[real].detach(), grads

    plain_states, plain_grads = states_and_grads(shared=False)
    shared_states, shared_grads = states_and_grads(shared=True)
    assert torch.allclose(shared_states, plain_states, rtol=0, atol=1e-5)
    for plain, shared in zip(plain_grads, shared_grads, strict=True):
        assert torch.allclose(shared, plain, rtol=1e-4, atol=1e-7)


def test_adapter_lowers_the_answer_loss(
    checkpoint: Path, adapter: Path, pairs: list[tuple[str, str]]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    base = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    before = answer_loss(base, tokenizer, pairs)
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    after = answer_loss(tuned, tokenizer, pairs)
    # The tiny model's final norm and small random head cap how far any adapter can go
    # (about 5.7 -> 5.2 nats); an untrained (zero) adapter would leave the loss unchanged.
    assert after < before - 0.15, (before, after)


def test_adapter_is_peft_format_and_loads_in_the_engine(checkpoint: Path, adapter: Path) -> None:
    assert sorted(p.name for p in adapter.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((adapter / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and (config["r"], config["lora_alpha"]) == (8, 16)
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == checkpoint.name  # no local path leaks out
    spec = BaseModelSpec.from_model(AutoModelForCausalLM.from_pretrained(checkpoint))
    loaded = load_adapter(adapter, spec, max_rank=MAX_RANK)
    assert loaded.rank == 8 and loaded.scaling == 2.0
    assert loaded.target_modules == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert sorted(loaded.weights) == sorted(
        (layer, module) for layer in range(spec.num_layers) for module in loaded.target_modules
    )
    assert any(b.abs().max() > 0 for _, b in loaded.weights.values())  # B was trained off zero


def test_same_inputs_give_the_same_bytes(
    checkpoint: Path, adapter: Path, pairs: list[tuple[str, str]], tmp_path: Path
) -> None:
    again = train_demo_adapter(checkpoint, pairs, tmp_path / "again", **TRAIN)
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    elsewhere = tmp_path / "subprocess"
    arguments = [str(checkpoint), str(pairs_file), str(elsewhere), json.dumps(TRAIN)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", TRAIN_IN_SUBPROCESS, *arguments]
    subprocess.run(command, check=True, cwd=ROOT, env=env, timeout=120)
    other_seed = train_demo_adapter(checkpoint, pairs, tmp_path / "seed1", **{**TRAIN, "seed": 1})
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        expected = (adapter / name).read_bytes()
        assert (again / name).read_bytes() == expected, name
        assert (elsewhere / name).read_bytes() == expected, name
    assert (other_seed / WEIGHTS_FILE).read_bytes() != (adapter / WEIGHTS_FILE).read_bytes()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"rank": 0}, "rank=0"),
        ({"steps": -1}, "steps=-1"),
        ({"targets": ("q_proj", "embed_tokens")}, "embed_tokens"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"max_length": 8}, "max_length=8"),  # the chat header alone is longer
    ],
)
def test_bad_arguments_are_named(
    checkpoint: Path, pairs: list[tuple[str, str]], tmp_path: Path, change: dict, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        train_demo_adapter(checkpoint, pairs, tmp_path / "out", **{**TRAIN, **change})
    assert not (tmp_path / "out").exists()


def test_no_pairs_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training pairs"):
        train_demo_adapter(checkpoint, [], tmp_path / "out")
