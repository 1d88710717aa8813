"""What SFT and DPO share: the device check, the shared-prefix pass (the same hidden states
as a plain pass), batches that cover every row once an epoch, and whole-or-nothing saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.modelfactory.lora_training import (
    CONFIG_FILE,
    MIN_SHARED_PREFIX,
    WEIGHTS_FILE,
    DeviceError,
    collate,
    decoder_hidden_states,
    index_batches,
    new_lora_model,
    resolve_device,
    save_adapter,
    shared_prefix_length,
    shares_prefix,
)
from backend.modelfactory.spec import LoraSettings
from tests.engine.tiny_tokenizer import build_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat_llama"))


def test_unknown_or_missing_devices_are_refused_by_name() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="device must be one of \\['cpu', 'cuda'\\], not 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch sees no CUDA device"):
            resolve_device("cuda")


def test_the_prefix_is_shared_on_cpu_only() -> None:
    assert shares_prefix(torch.device("cpu"))
    assert not shares_prefix(torch.device("cuda"))


def chats(checkpoint: Path, questions: list[str]) -> list[tuple[list[int], list[int]]]:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = []
    for question in questions:
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": "ok"}]
        ids = list(tokenizer.apply_chat_template(chat))
        rows.append((ids, ids))
    return rows


def test_shared_prefix_pass_gives_the_plain_pass_hidden_states(checkpoint: Path) -> None:
    rows = chats(checkpoint, ["amber cedar", "amber cedar delta ember", "amber fjord"])
    input_ids, attention_mask, _ = collate(rows, pad_id=0)
    assert shared_prefix_length(input_ids, attention_mask) >= MIN_SHARED_PREFIX
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        shared = decoder_hidden_states(model.get_decoder(), input_ids, attention_mask, True)
        plain = decoder_hidden_states(model.get_decoder(), input_ids, attention_mask, False)
    real = attention_mask.bool()  # padding's hidden states are never read
    torch.testing.assert_close(shared[real], plain[real], atol=1e-5, rtol=1e-5)


def test_shared_prefix_stops_before_the_last_token_and_at_padding() -> None:
    same = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(same, torch.ones_like(same)) == 2
    padded = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]])
    assert shared_prefix_length(padded, (padded != 0).long()) == 2


def test_batches_cover_every_row_once_an_epoch_and_stop_at_steps() -> None:
    batches = list(index_batches(10, 4, 6, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    for epoch in (batches[:3], batches[3:]):
        assert sorted(i for batch in epoch for i in batch) == list(range(10))
    assert batches[:3] != batches[3:]  # a fresh order each epoch
    again = list(index_batches(10, 4, 4, torch.Generator().manual_seed(0)))
    assert again == batches[:4]


def test_saved_adapter_holds_exactly_the_two_peft_files(checkpoint: Path, tmp_path: Path) -> None:
    lora = LoraSettings(rank=4, alpha=8.0, target_modules=("v_proj", "q_proj"))
    model = new_lora_model(AutoModelForCausalLM.from_pretrained(checkpoint), lora, seed=0)
    save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((tmp_path / "adapter" / CONFIG_FILE).read_text())
    assert config["lora_alpha"] == 8 and config["target_modules"] == ["q_proj", "v_proj"]
