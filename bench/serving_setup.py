"""What bench/serving.py's measurements share: the plan's fields, the requests, the adapters
(PEFT's config, keys and shapes with seeded weights), the device helpers and the probe."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from backend.storage.local import DirectoryStore
from inference_node.engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from inference_node.engine.packaging import put_adapter

RANK, ALPHA = 8, 16
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
WEIGHT_STD = 0.02  # small random LoRA weights: outputs change but stay sane
REQUESTS = 32
SYSTEM_PROMPT = "Answer briefly."
QUESTIONS = (
    "What is the capital of France?",
    "How do plants make food from sunlight?",
    "Why is the sky blue?",
    "What is a prime number?",
    "Who wrote the play Romeo and Juliet?",
    "How far is the Moon from the Earth?",
    "What does a compiler do?",
    "Name three primary colours.",
    "Why do we have seasons on Earth?",
    "What is the boiling point of water at sea level?",
    "How does a bicycle stay upright when it moves?",
    "What is the difference between weather and climate?",
    "Explain what an API is in one sentence.",
    "What causes ocean tides?",
    "How many legs does a spider have?",
    "What is photosynthesis?",
    "Give me a synonym for happy.",
    "What is the largest planet in the solar system?",
    "How do vaccines work?",
    "What is the square root of 144?",
    "Why do cats purr?",
    "What language is spoken in Brazil?",
    "How does a rainbow form after rain?",
    "What is the main ingredient of guacamole?",
    "What does DNA stand for?",
    "Suggest a name for a small black and white dog.",
    "How long does light take to travel from the Sun to the Earth?",
    "What is the freezing point of water in Fahrenheit?",
    "Why do leaves change colour in autumn?",
    "What is a haiku?",
    "How many continents are there, and which is the largest?",
    "What is the tallest mountain in the world?",
)


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to run."""

    runs: int  # timed runs of the target configurations (no adapter, 32 distinct): the median
    secondary_runs: int  # timed runs of 1 shared, 8 distinct and the other kernels
    new_tokens: int
    warmup_tokens: int
    cold_levels: tuple[int, ...]  # adapters resident in the CPU tier
    cold_samples: int  # cold loads timed at each level
    memory_n: int  # adapters loaded after levels[-2] for the first memory point
    peft_levels: tuple[int, ...]  # adapters already loaded into the PeftModel
    peft_samples: int  # load_adapter calls timed around each level
    one_by_one_requests: int  # requests PEFT serves one at a time (its rate is per request)


def contention_probe_ms() -> float:
    """Milliseconds of 210 small multithreaded torch ops (a few ms on an idle machine).

    Any other busy process on a 2-core machine costs torch's thread team several ms per
    parallel region, so this shows how much the numbers around it were slowed down."""
    slabs = torch.zeros(210, 64, 576)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        for slab in slabs:
            slab.zero_()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def accelerator(device: str) -> dict[str, Any]:
    if torch.device(device).type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(torch.device(device))
    return {
        "gpu": props.name,
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]


def prompts_of(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    return [
        list(
            tokenizer.apply_chat_template(
                [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}],
                add_generation_prompt=True,
            )
        )
        for q in QUESTIONS[:REQUESTS]
    ]


class AdapterFactory:
    """Distinct PEFT adapters: the config, keys and shapes of one PEFT saved, seeded weights."""

    def __init__(self, base_dir: Path, folder: Path) -> None:
        config = LoraConfig(
            r=RANK,
            lora_alpha=ALPHA,
            target_modules=list(TARGET_MODULES),
            init_lora_weights=False,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        )
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        get_peft_model(base, config).save_pretrained(folder)
        self.config = (folder / CONFIG_FILE).read_bytes()
        self.shapes = {k: v.shape for k, v in load_file(folder / WEIGHTS_FILE).items()}

    def write(self, folder: Path, seed: int) -> Path:
        generator = torch.Generator().manual_seed(seed)
        tensors = {
            key: torch.randn(shape, generator=generator) * WEIGHT_STD
            for key, shape in self.shapes.items()
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_bytes(self.config)
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        return folder

    def archives(self, store: DirectoryStore, scratch: Path, seeds: range) -> list[str]:
        """CIDs of adapter archives put into ``store``, one per seed."""
        return [put_adapter(store, self.write(scratch, seed)) for seed in seeds]
