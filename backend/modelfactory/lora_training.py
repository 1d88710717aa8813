"""What ModelFactory's LoRA training loops (SFT, DPO) and their evaluation share: the device,
seeded deterministic kernels, batches of labelled token rows, the decoder pass that computes a
prefix shared by every row once, and saving an adapter in PEFT format. The loop itself is
training_loop.py's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from backend.modelfactory.spec import DEVICES, LoraSettings
from backend.models.adapter_archive import canonical_config

IGNORE = -100  # label of tokens that carry no loss
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MAX_GRAD_NORM = 1.0  # as trl's trainers: one outlier batch cannot blow up a step
MIN_SHARED_PREFIX = 4  # tokens; below this, computing the prefix once saves nothing

Row = tuple[list[int], list[int]]  # (input_ids, labels) of one training sequence


class DeviceError(RuntimeError):
    """A job asks for a device this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """The torch device a job's ``train.device`` names; a clear error where there is none."""
    if name not in DEVICES:
        raise DeviceError(f"device must be one of {list(DEVICES)}, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("train.device is 'cuda' but torch sees no CUDA device on this machine")
    return torch.device(name)


def shares_prefix(device: torch.device) -> bool:
    """Whether computing the rows' shared prefix once pays on ``device``: on a CPU a step costs
    its FLOPs, so it does; on a GPU a small model's step costs its kernel launches, which a
    second decoder pass doubles."""
    return device.type == "cpu"


@contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seeded kernels, deterministic on CPU (byte-identical adapters from the same inputs; on
    CUDA only seeded: cuBLAS' deterministic mode must be chosen before it starts); restores the
    caller's global torch state afterwards."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)  # seeds every CUDA device too
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_rng_state(rng_state)


def new_lora_model(base: PreTrainedModel, lora: LoraSettings, seed: int) -> PeftModel:
    """``base`` with a fresh trainable LoRA adapter named ``default`` (A drawn at random from
    ``seed``, B zero: the adapter starts as the identity)."""
    alpha = int(lora.alpha) if float(lora.alpha).is_integer() else lora.alpha
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    return get_peft_model(base, config)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id padding uses (never attended to nor labelled): pad, else eos, else 0."""
    ids = (tokenizer.pad_token_id, tokenizer.eos_token_id)
    return next((i for i in ids if i is not None), 0)


def collate(rows: Sequence[Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``, each [rows, longest]."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for row, (ids, row_labels) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(row_labels)] = torch.tensor(row_labels)
    return input_ids, attention_mask, labels


def index_batches(
    count: int, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[list[int]]:
    """``steps`` batches of indices into ``count`` rows: each epoch a fresh permutation, cut
    into batches."""
    done = 0
    while done < steps:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count, batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading tokens every row has in common (at most all but the last one)."""
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)  # [seq]
    differing = (~same).nonzero()
    length = int(differing[0]) if len(differing) else input_ids.shape[1]
    return min(length, input_ids.shape[1] - 1)


def decoder_hidden_states(
    decoder: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    share_prefix: bool = True,
) -> torch.Tensor:
    """The decoder's last hidden states [rows, seq, hidden]. With ``share_prefix``, the prefix
    every row has in common (a chat template's system text) runs once: its keys and values come
    from one row and are repeated for the batch (the same result, less work)."""
    rows = input_ids.shape[0]
    prefix = shared_prefix_length(input_ids, attention_mask) if share_prefix else 0
    if rows == 1 or prefix < MIN_SHARED_PREFIX:
        return decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
    first = decoder(input_ids=input_ids[:1, :prefix], use_cache=True)
    cache = first.past_key_values
    cache.batch_repeat_interleave(rows)
    rest = decoder(
        input_ids=input_ids[:, prefix:],
        attention_mask=attention_mask,  # [rows, seq]: covers the cached prefix too
        past_key_values=cache,
        use_cache=True,
    )
    shared = first.last_hidden_state.expand(rows, -1, -1)  # [rows, prefix, hidden]
    return torch.cat([shared, rest.last_hidden_state], dim=1)


def save_adapter(model: torch.nn.Module, out_dir: Path, base_name: str | None = None) -> None:
    """Writes a PEFT model's two adapter files aside, then moves them into ``out_dir`` (config
    last: a folder with a config holds a whole adapter). ``base_name``: the base model the
    config names (a folder's name, so that no local path leaks out)."""
    if base_name is not None:
        model.peft_config["default"].base_model_name_or_path = base_name
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".incoming-"))
    try:
        # The embeddings are not trained; "auto" would ask the Hugging Face hub to be sure.
        model.save_pretrained(staging, save_embedding_layers=False)
        config_path = staging / CONFIG_FILE  # PEFT writes target_modules in set order
        config_path.write_bytes(canonical_config(config_path.read_bytes(), out_dir))
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
