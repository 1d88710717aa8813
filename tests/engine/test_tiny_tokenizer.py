"""The tiny byte-level chat tokenizer round-trips any text and makes a loadable checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from tests.engine.conftest import VOCAB
from tests.engine.tiny_tokenizer import (
    FIRST_BYTE_ID,
    build_tiny_checkpoint,
    build_tiny_tokenizer,
)

MULTIBYTE = "naïve café, 日本語, 🙂👍🏽, ÷ °C, Ω ≈ 3.14\r\n\ttab  two spaces\x00nul"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint"))


@pytest.fixture(scope="module")
def tokenizer(checkpoint: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(checkpoint)


def test_tokens_are_the_utf8_bytes(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.encode(MULTIBYTE)
    assert ids == [FIRST_BYTE_ID + b for b in MULTIBYTE.encode("utf-8")]
    assert tokenizer.decode(ids) == MULTIBYTE


# Any text UTF-8 can encode (no lone surrogates), with punctuation and spaces mixed in: that
# is where tokenizers "clean up" decoded text.
TEXT = st.text(st.sampled_from(" .,!?'nt\n") | st.characters(codec="utf-8"), max_size=60)


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
@example(text="Hello , world . Isn 't it ? A  b ' s")
def test_any_text_round_trips_exactly(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < VOCAB for i in ids)


def test_special_tokens_have_smollm2_ids(tokenizer: PreTrainedTokenizerFast) -> None:
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|endoftext|>", 0)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    assert len(tokenizer) == 3 + 256 <= VOCAB
    # a special token in text is one token and comes back; nothing is added around encodings
    assert tokenizer.encode("a<|im_end|>b") == [FIRST_BYTE_ID + ord("a"), 2, FIRST_BYTE_ID + 98]
    assert tokenizer.decode([2, 1, 0]) == "<|im_end|><|im_start|><|endoftext|>"
    assert tokenizer.decode([FIRST_BYTE_ID + 120, 2], skip_special_tokens=True) == "x"


def test_chat_template_is_chatml(tokenizer: PreTrainedTokenizerFast) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1 ft in m?"},
        {"role": "assistant", "content": "0.3048 m"},
        {"role": "user", "content": "Ünïcode?"},
    ]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n1 ft in m?<|im_end|>\n"
        "<|im_start|>assistant\n0.3048 m<|im_end|>\n"
        "<|im_start|>user\nÜnïcode?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without_prompt = tokenizer.apply_chat_template(chat[:2], tokenize=False)
    assert without_prompt.endswith("1 ft in m?<|im_end|>\n")
    assert tokenizer.apply_chat_template(chat[:2]) == tokenizer.encode(without_prompt)


def test_build_tiny_tokenizer_returns_what_it_saves(tmp_path: Path) -> None:
    built = build_tiny_tokenizer(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert built.get_vocab() == loaded.get_vocab()
    assert built.chat_template == loaded.chat_template
    assert built.encode(MULTIBYTE) == loaded.encode(MULTIBYTE)


def test_checkpoint_loads_with_auto_classes_and_agrees_on_ids(checkpoint: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert model.config.vocab_size == VOCAB >= len(tokenizer)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, name) == getattr(tokenizer, name)
        assert getattr(model.generation_config, name) == getattr(tokenizer, name)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 3 feet in metres?"}],
        add_generation_prompt=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8)
    assert out.shape[0] == 1 and 1 <= out.shape[1] - prompt.shape[1] <= 8
    assert torch.equal(out[0, : prompt.shape[1]], prompt[0])


def test_checkpoint_depends_on_the_seed(tmp_path: Path) -> None:
    first = build_tiny_checkpoint(tmp_path / "a", seed=1)
    again = build_tiny_checkpoint(tmp_path / "b", seed=1)
    other = build_tiny_checkpoint(tmp_path / "c", seed=2)
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (again / weights).read_bytes()
    assert (first / weights).read_bytes() != (other / weights).read_bytes()
