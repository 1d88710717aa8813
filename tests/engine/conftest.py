"""A tiny random Llama and random PEFT adapters of different ranks and targets, built once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

MAX_RANK = 16
VOCAB = 300


@dataclass(frozen=True)
class AdapterRecipe:
    rank: int
    alpha: int
    targets: tuple[str, ...]
    rslora: bool = False
    layers: tuple[int, ...] | None = None  # PEFT's layers_to_transform; None = every layer


RECIPES = {
    "attn_qv_r4": AdapterRecipe(4, 8, ("q_proj", "v_proj")),
    "all_r8": AdapterRecipe(
        8, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    ),
    "mlp_r2_rslora": AdapterRecipe(2, 4, ("gate_proj", "up_proj", "down_proj"), rslora=True),
    "ko_r16": AdapterRecipe(16, 4, ("k_proj", "o_proj")),
}


def tiny_llama_config(hidden: int = 64) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation="eager",
    )


def build_base(folder: Path, seed: int = 0, hidden: int = 64) -> Path:
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(hidden)).save_pretrained(folder)
    return folder


def load_base(folder: Path) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def build_adapter(
    base_folder: Path, folder: Path, recipe: AdapterRecipe, seed: int, **options: object
) -> Path:
    """A PEFT adapter saved by PEFT itself, random weights; ``options`` go to ``LoraConfig``."""
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        target_modules=list(recipe.targets),
        use_rslora=recipe.rslora,
        layers_to_transform=list(recipe.layers) if recipe.layers is not None else None,
        init_lora_weights=False,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        **options,  # type: ignore[arg-type]
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(load_base(base_folder), config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.2)
    peft_model.save_pretrained(folder)
    return folder


def peft_reference(base_folder: Path, adapter_folder: Path) -> PeftModel:
    return PeftModel.from_pretrained(load_base(base_folder), adapter_folder).eval()


@pytest.fixture(scope="session")
def base_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def adapter_folders(base_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: build_adapter(base_folder, root / name, recipe, seed)
        for seed, (name, recipe) in enumerate(RECIPES.items(), start=1)
    }
