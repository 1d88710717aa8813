"""Serving engine: batched multi-LoRA throughput, adapter cold load and adapter memory on
SmolLM2-135M-Instruct (fp32, CPU, torch threads = all cores), with PEFT measured on the same
requests and adapters in the same run, so every ratio compares numbers of one run.

1. Throughput: 32 concurrent chat requests x 64 greedy tokens (stop tokens off: every request
   generates exactly 64) through the Scheduler with no adapter, 1 shared adapter, 8 and 32
   distinct adapters (request i on adapter i mod n, so neighbouring rows differ as with random
   arrivals), all on the engine's default LoRA kernel, and 32 distinct on each other kernel.
   Baselines: PEFT's mixed batch (``generate(adapter_names=...)``, one left-padded batch), PEFT
   one request at a time with ``set_adapter`` (8 requests spread over the adapters, its rate
   scaled to all 32), and the plain base model's ``generate``. The engine's runs are
   interleaved in rounds; no adapter and 32 distinct report the median of 3, the others 1
   (to keep the run near 15 minutes on 2 cores).
2. Cold load: ``pool.acquire`` of an adapter that is registered and whose archive is in the
   local content store but was never loaded, at 1/10/100/1000 adapters resident in the CPU tier
   (every device slot taken from 32 on, so a slot is reused), with the stages timed from outside
   on other adapters; vs ``PeftModel.load_adapter`` at 1/10/50 adapters loaded.
3. Memory: RSS growth per adapter resident in the CPU tier vs ``LoraAdapter.num_bytes``.

Adapters are real PEFT LoRA adapters (rank 8, alpha 16, q/k/v/o): one saved by PEFT, the others
written with its config, keys and shapes and seeded random weights. The engine is configured
with the node's defaults (``NodeSettings``: slots, max rank, max batch, every projection wrapped).

On a 2-core machine any other busy process slows torch's threaded ops by several ms each; the
load average and a small probe are recorded around every phase to show when that happened.

Writes bench/results/serving.json (``--out``) and prints tables; ``--quick`` is a smoke run of
every part with fewer tokens, samples and adapters (written to a temporary file by default).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import torch
import transformers
from common import RESULTS_DIR, finish, machine, random_weights_copy, table
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.local import DirectoryStore
from inference_node.engine import (
    AdapterPool,
    MultiLoraModel,
    SamplingParams,
    Scheduler,
    parse_adapter,
)
from inference_node.engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from inference_node.engine.lora import Kernel
from inference_node.engine.packaging import cache_adapter_files, put_adapter, unpack_adapter
from inference_node.server.settings import NodeSettings

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

TARGET_LORA_VS_BASE = 0.8  # engine 32 distinct / engine no adapter
TARGET_VS_PEFT = 2.0  # engine 32 distinct / PEFT mixed batch 32 distinct
TARGET_COLD_P50_MS = 20.0
TARGET_COLD_FLATNESS = 1.5  # p50 at the most resident / p50 at the fewest
TARGET_MEMORY_TOLERANCE = 0.10
BUSY_LOAD = 1.0  # 1-minute load average above which the machine is not idle

log = logging.getLogger("bench.serving")


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


FULL = Plan(3, 1, 64, 2, (1, 10, 100, 1000), 20, 200, (1, 10, 50), 3, 8)
QUICK = Plan(1, 1, 4, 1, (1, 10, 50), 5, 20, (1, 10), 1, 4)


# ---------------------------------------------------------------------------- helpers


_LIBC = ctypes.CDLL("libc.so.6")


def rss_bytes() -> int:
    """Resident set size after collecting garbage and returning freed heap pages to the OS."""
    gc.collect()
    _LIBC.malloc_trim(0)
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


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


@contextmanager
def phase(name: str, phases: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Records a phase's seconds and the machine's load average around it (other processes
    on a small machine slow every number down; the load shows when that happened)."""
    load_before, probe_before = os.getloadavg()[0], contention_probe_ms()
    started = time.perf_counter()
    yield
    phases[name] = {
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "probe_ms_before": probe_before,
        "probe_ms_after": contention_probe_ms(),
    }
    log.info("%s: %.0f s", name, phases[name]["seconds"])


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


class NoStopTokenizer:
    """The tokenizer without an eos token: the scheduler then stops on ``max_tokens`` only."""

    eos_token_id: int | None = None

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)


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


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> dict[str, float | int]:
    """How far two runs' greedy tokens agree: identical requests, mean common-prefix share."""
    prefixes = []
    for a, b in zip(ours, theirs, strict=True):
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        prefixes.append(same / len(a))
    return {
        "identical_requests": sum(p == 1.0 for p in prefixes),
        "requests": len(prefixes),
        "mean_common_prefix": round(statistics.mean(prefixes), 3),
    }


# ---------------------------------------------------------------------------- engine throughput


def engine_once(
    scheduler: Scheduler, prompts: list[list[int]], adapters: list[str | None], tokens: int
) -> tuple[float, list[list[int]], int, int]:
    """Seconds from submit to the last completion, tokens, prefills and decode steps."""
    params = SamplingParams(max_tokens=tokens, temperature=0.0)
    before = scheduler.stats()
    started = time.perf_counter()
    # Queued under the loop's lock, so all requests arrive together (as PEFT's one batch)
    # instead of the loop starting on the first one while the others are still submitted.
    with scheduler._wake:
        handles = [
            scheduler.submit(p, params, adapter=a) for p, a in zip(prompts, adapters, strict=True)
        ]
    done = [handle.result(timeout=1_800) for handle in handles]
    seconds = time.perf_counter() - started
    after = scheduler.stats()
    short = [c.request_id for c in done if c.completion_tokens != tokens]
    if short:
        raise RuntimeError(f"requests {short} did not generate {tokens} tokens")
    return (
        seconds,
        [list(c.token_ids) for c in done],
        after.prefills - before.prefills,
        after.steps - before.steps,
    )


@dataclass(frozen=True)
class EngineConfig:
    adapters: list[str | None]  # per request
    kernel: Kernel
    runs: int


def engine_configs(n: int, plan: Plan, default: Kernel) -> dict[str, EngineConfig]:
    """The configurations on the engine's default kernel, then 32 distinct on the others."""
    distinct = [f"a{i}" for i in range(n)]
    configs = {
        "no adapter": EngineConfig([None] * n, default, plan.runs),
        "1 adapter shared": EngineConfig(["a0"] * n, default, plan.secondary_runs),
        "8 distinct": EngineConfig([f"a{i % 8}" for i in range(n)], default, plan.secondary_runs),
        "32 distinct": EngineConfig(distinct, default, plan.runs),
    }
    for kernel in get_args(Kernel):
        if kernel != default:
            configs[f"32 distinct, {kernel} kernel"] = EngineConfig(
                distinct, kernel, plan.secondary_runs
            )
    return configs


def measure_engine(
    model: MultiLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    folders: list[Path],
    work: Path,
    plan: Plan,
    settings: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Every configuration on one scheduler, runs interleaved in rounds so that a slow spell
    of the machine hits all configurations alike instead of one of them."""
    store = DirectoryStore(work / "store-serving")
    pool = AdapterPool(model, store, work / "cache-serving", settings["cpu_cache_bytes"])
    for i, folder in enumerate(folders):
        pool.register(f"a{i}", put_adapter(store, folder))
    default: Kernel = next(iter(model.lora_layers.values())).kernel
    configs = engine_configs(len(prompts), plan, default)
    runs: dict[str, list[tuple[float, list[list[int]], int, int]]] = {name: [] for name in configs}
    scheduler = Scheduler(
        model, NoStopTokenizer(tokenizer), pool, max_batch=settings["max_batch"]
    ).start()
    try:
        warmed: list[list[str | None]] = []
        for config in configs.values():  # loads every adapter into its slot before timing
            if config.adapters not in warmed:
                engine_once(scheduler, prompts, config.adapters, plan.warmup_tokens)
                warmed.append(config.adapters)
        for round_ in range(max(c.runs for c in configs.values())):
            for name, config in configs.items():
                if round_ < config.runs:
                    model.set_kernel(config.kernel)
                    runs[name].append(
                        engine_once(scheduler, prompts, config.adapters, plan.new_tokens)
                    )
                    log.info("engine %s, run %d: %.1f s", name, round_ + 1, runs[name][-1][0])
    finally:
        scheduler.close()
        model.set_kernel(default)
    results = {}
    for name, config in configs.items():
        seconds = [r[0] for r in runs[name]]
        median = statistics.median(seconds)
        results[name] = {
            "kernel": config.kernel,
            "distinct_adapters": len({a for a in config.adapters if a is not None}),
            "tokens_per_s": round(len(prompts) * plan.new_tokens / median, 1),
            "median_s": round(median, 3),
            "runs_s": [round(s, 3) for s in seconds],
            "prefills": runs[name][0][2],
            "decode_steps": runs[name][0][3],
            "tokens": runs[name][0][1],
        }
    return results


# ---------------------------------------------------------------------------- PEFT baselines


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [batch, width]
    mask = torch.zeros(len(prompts), width, dtype=torch.long)  # [batch, width]
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    return ids, mask


def hf_generate(
    model: Any, prompts: list[list[int]], tokens: int, pad_id: int, **kwargs: Any
) -> tuple[float, list[list[int]]]:
    """One greedy ``generate`` of every prompt in one left-padded batch."""
    ids, mask = left_padded(prompts, pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False, **kwargs
        )
    new = out[:, ids.shape[1] :].cpu()  # [batch, tokens]
    seconds = time.perf_counter() - started
    if new.shape[1] != tokens:
        raise RuntimeError(f"generate gave {new.shape[1]} new tokens, expected {tokens}")
    return seconds, new.tolist()


def peft_one_by_one(
    model: PeftModel, prompts: list[list[int]], names: list[str], tokens: int, pad_id: int
) -> tuple[float, list[list[int]]]:
    """Each request alone on its adapter, switching with ``set_adapter``."""
    started = time.perf_counter()
    out = []
    for prompt, name in zip(prompts, names, strict=True):
        model.set_adapter(name)
        out += hf_generate(model, [prompt], tokens, pad_id)[1]
    return time.perf_counter() - started, out


def timed_load(model: PeftModel, folder: Path, name: str) -> float:
    started = time.perf_counter()
    model.load_adapter(str(folder), adapter_name=name)
    return (time.perf_counter() - started) * 1000


def measure_peft(
    base_dir: Path,
    prompts: list[list[int]],
    folders: list[Path],
    pad_id: int,
    plan: Plan,
    device: str,
    dtype: torch.dtype,
) -> dict[str, Any]:
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype).to(device).eval()
    base.generation_config.eos_token_id = None  # stop tokens off, as in the engine runs
    n, tokens = len(prompts), plan.new_tokens
    throughput: dict[str, dict[str, Any]] = {}

    def record(name: str, seconds: float, out: list[list[int]], **extra: Any) -> None:
        throughput[name] = {
            "tokens_per_s": round(n * tokens / seconds, 1),
            "seconds": round(seconds, 3),
            **extra,
            "tokens": out,
        }
        log.info("%s: %s tok/s", name, throughput[name]["tokens_per_s"])

    hf_generate(base, prompts[:2], 2, pad_id)  # warm-up
    record("HF generate, base model", *hf_generate(base, prompts, tokens, pad_id))

    loads_ms: dict[int, float] = {}  # adapters already loaded -> ms of one more load_adapter
    model = PeftModel.from_pretrained(base, str(folders[0]), adapter_name="a0")
    for i in range(1, len(folders)):
        loads_ms[i] = timed_load(model, folders[i], f"a{i}")
    model.eval()
    for distinct in (8, 32):
        names = [f"a{i % distinct}" for i in range(n)]
        hf_generate(model, prompts[:2], 2, pad_id, adapter_names=names[:2])  # warm-up
        seconds, out = hf_generate(model, prompts, tokens, pad_id, adapter_names=names)
        record(f"PEFT mixed batch, {distinct} distinct", seconds, out, distinct_adapters=distinct)
    alone = plan.one_by_one_requests
    for distinct in (8, 32):
        # requests spread over the distinct adapters, each on its own: every one switches
        picked = [i * distinct // alone for i in range(alone)]
        seconds, out = peft_one_by_one(
            model, [prompts[i] for i in picked], [f"a{i}" for i in picked], tokens, pad_id
        )
        record(
            f"PEFT one by one, {distinct} distinct",
            seconds * n / alone,  # the rate of one request at a time, for all n
            out,
            distinct_adapters=distinct,
            requests_measured=picked,
        )

    top = max(plan.peft_levels) + plan.peft_samples
    for i in range(len(folders), top):
        loads_ms[i] = timed_load(model, folders[i % len(folders)], f"extra{i}")
    load_levels = {}
    for level in plan.peft_levels:
        samples = [loads_ms[k] for k in range(level, level + plan.peft_samples)]
        load_levels[level] = {
            "median_ms": round(statistics.median(samples), 1),
            "samples_ms": [round(s, 1) for s in samples],
        }
    del model, base
    gc.collect()
    return {
        "throughput": throughput,
        "load_adapter": load_levels,
        "load_adapter_curve_ms": {k: round(v, 1) for k, v in sorted(loads_ms.items())},
    }


# ---------------------------------------------------------------------------- cold load, memory


def cold_split(
    model: MultiLoraModel, store: DirectoryStore, cids: list[str], cache: Path
) -> dict[str, float]:
    """The stages of a cold load timed one by one (the pool does the same steps in one call;
    it writes the disk cache afterwards on a background thread, timed here last)."""
    stages: dict[str, list[float]] = {
        "fetch + verify": [],
        "unpack in memory": [],
        "validate + stack": [],
        "copy into slot": [],
        "disk cache write (background)": [],
    }
    dtype = next(iter(model.lora_layers.values())).lora_a.dtype
    for cid in cids:
        t0 = time.perf_counter()
        data = store.get(cid)
        t1 = time.perf_counter()
        files = unpack_adapter(data)
        t2 = time.perf_counter()
        adapter = parse_adapter(
            files[CONFIG_FILE], files[WEIGHTS_FILE], model.spec, model.max_rank, dtype, cid
        )
        t3 = time.perf_counter()
        model.load_adapter(0, adapter)  # over the previous one, as the pool reuses a slot
        synchronize()
        t4 = time.perf_counter()
        cache_adapter_files(cache, cid, files)
        t5 = time.perf_counter()
        for stage, seconds in zip(
            stages.values(), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
        ):
            stage.append(seconds * 1000)
    model.evict(0)
    split = {name: round(statistics.median(ms), 2) for name, ms in stages.items()}
    split["sum of medians (served)"] = round(
        sum(v for k, v in split.items() if "background" not in k), 2
    )
    return split


def cold_loads(pool: AdapterPool, cids: list[str], prefix: str) -> list[float]:
    """Milliseconds of ``acquire`` of adapters never loaded; each is dropped again after."""
    times = []
    for k, cid in enumerate(cids):
        name = f"{prefix}-{k}"
        pool.register(name, cid)
        started = time.perf_counter()
        pool.acquire(name)
        synchronize()  # on a GPU the slot copy is asynchronous: count it
        times.append((time.perf_counter() - started) * 1000)
        pool.release(name)
        pool.unregister(name)  # keeps the resident count at the level being measured
    return times


def populate(pool: AdapterPool, cids: list[str], start: int, stop: int) -> None:
    """Makes adapters ``start..stop`` resident in the CPU tier (through a slot, as served)."""
    for i in range(start, stop):
        name = f"resident-{i}"
        pool.register(name, cids[i])
        pool.acquire(name)
        pool.release(name)
    if pool.stats().cpu_adapters != stop:
        raise RuntimeError(f"{pool.stats().cpu_adapters} adapters resident, expected {stop}")


def measure_cold(
    model: MultiLoraModel, factory: AdapterFactory, work: Path, plan: Plan
) -> dict[str, Any]:
    store = DirectoryStore(work / "store-cold")
    scratch = work / "scratch"
    levels, samples = plan.cold_levels, plan.cold_samples
    memory_from = levels[-2]
    if memory_from + plan.memory_n > levels[-1]:
        raise ValueError("the first memory point must lie below the last resident level")
    started = time.perf_counter()
    seed = 10_000
    resident = factory.archives(store, scratch, range(seed, seed + levels[-1]))
    seed += levels[-1]
    cold = {}
    for level in (*levels, "split"):
        cold[level] = factory.archives(store, scratch, range(seed, seed + samples))
        seed += samples
    log.info("made %d adapter archives in %.0f s", seed - 10_000, time.perf_counter() - started)

    split = cold_split(model, store, cold.pop("split"), work / "cache-split")
    pool = AdapterPool(model, store, work / "cache-cold", cpu_capacity_bytes=1 << 40)
    by_level: dict[int, dict[str, Any]] = {}
    memory: dict[str, Any] = {}
    loaded = 0
    for level in levels:
        if level == levels[-1]:
            pool.flush()  # files waiting for the disk writer are not resident adapters
            rss_from = rss_bytes()
            populate(pool, resident, loaded, memory_from + plan.memory_n)
            pool.flush()
            rss_n = rss_bytes()
            populate(pool, resident, memory_from + plan.memory_n, level)
            pool.flush()
            rss_all = rss_bytes()
            num_bytes = pool.stats().cpu_bytes // pool.stats().cpu_adapters
            memory = {
                "adapter_num_bytes": num_bytes,
                "points": [
                    memory_point(
                        memory_from, memory_from + plan.memory_n, rss_from, rss_n, num_bytes
                    ),
                    memory_point(memory_from, level, rss_from, rss_all, num_bytes),
                ],
            }
        else:
            populate(pool, resident, loaded, level)
        loaded = level
        times = cold_loads(pool, cold[level], f"cold{level}")
        by_level[level] = {
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(p95(times), 2),
            "samples_ms": [round(t, 2) for t in times],
        }
        log.info("cold load at %d resident: p50 %.1f ms", level, by_level[level]["p50_ms"])
    stats = pool.stats()
    return {
        "levels": by_level,
        "split_ms_median": split,
        "memory": memory,
        "pool_stats": asdict(stats),
    }


def memory_point(
    before: int, after: int, rss_before: int, rss_after: int, num_bytes: int
) -> dict[str, Any]:
    n = after - before
    per_adapter = (rss_after - rss_before) / n
    return {
        "resident_before": before,
        "resident_after": after,
        "n": n,
        "rss_growth_bytes": rss_after - rss_before,
        "rss_per_adapter_bytes": round(per_adapter),
        "ratio_to_num_bytes": round(per_adapter / num_bytes, 3),
    }


# ---------------------------------------------------------------------------- report


def targets_of(
    engine: dict[str, dict[str, Any]], peft: dict[str, Any], cold: dict[str, Any]
) -> list[dict[str, Any]]:
    none = engine["no adapter"]["tokens_per_s"]
    distinct = engine["32 distinct"]["tokens_per_s"]
    kernel = engine["32 distinct"]["kernel"]
    peft_mixed = peft["throughput"]["PEFT mixed batch, 32 distinct"]["tokens_per_s"]
    levels = cold["levels"]
    first, last = levels[min(levels)]["p50_ms"], levels[max(levels)]["p50_ms"]
    worst_p50 = max(level["p50_ms"] for level in levels.values())
    memory = cold["memory"]["points"][-1]["ratio_to_num_bytes"]
    rows = [
        (
            f"engine 32 distinct / engine no adapter ({kernel} kernel)",
            distinct / none,
            f">= {TARGET_LORA_VS_BASE}",
            distinct / none >= TARGET_LORA_VS_BASE,
        ),
        (
            f"engine 32 distinct ({kernel} kernel) / PEFT mixed batch 32 distinct",
            distinct / peft_mixed,
            f">= {TARGET_VS_PEFT}",
            distinct / peft_mixed >= TARGET_VS_PEFT,
        ),
        (
            "cold load p50, worst level (ms)",
            worst_p50,
            f"<= {TARGET_COLD_P50_MS}",
            worst_p50 <= TARGET_COLD_P50_MS,
        ),
        (
            f"cold load p50 at {max(levels)} / at {min(levels)} resident",
            last / first,
            f"<= {TARGET_COLD_FLATNESS}",
            last / first <= TARGET_COLD_FLATNESS,
        ),
        (
            "RSS per resident adapter / num_bytes",
            memory,
            f"within {TARGET_MEMORY_TOLERANCE:.0%} of 1",
            abs(memory - 1) <= TARGET_MEMORY_TOLERANCE,
        ),
    ]
    return [
        {"target": name, "value": round(value, 3), "threshold": threshold, "met": met}
        for name, value, threshold, met in rows
    ]


def print_report(result: dict[str, Any]) -> None:
    engine, peft, cold = result["engine"], result["peft"], result["cold_load"]
    none = engine["no adapter"]["tokens_per_s"]
    rows = [
        [
            "engine",
            name,
            r["kernel"],
            r["tokens_per_s"],
            r["median_s"],
            f"{r['tokens_per_s'] / none:.2f}",
            r["prefills"],
            r["decode_steps"],
        ]
        for name, r in engine.items()
    ]
    rows += [
        [
            "hf/peft",
            name,
            "",
            r["tokens_per_s"],
            r["seconds"],
            f"{r['tokens_per_s'] / none:.2f}",
            "",
            "",
        ]
        for name, r in peft["throughput"].items()
    ]
    setup = result["setup"]
    print(
        f"throughput: {setup['requests']} requests x {setup['new_tokens']} new tokens, "
        f"median of {setup['runs']} engine runs"
    )
    print(
        table(
            [
                "system",
                "configuration",
                "kernel",
                "tok/s",
                "seconds",
                "x engine no adapter",
                "prefills",
                "decode steps",
            ],
            rows,
        )
    )
    print("\ngreedy agreement:", json.dumps(result["agreement"]))
    print("\ncold load (registered, archive in the local store -> servable in a slot):")
    print(
        table(
            ["adapters resident in CPU tier", "p50 ms", "p95 ms", "samples"],
            [
                [level, r["p50_ms"], r["p95_ms"], len(r["samples_ms"])]
                for level, r in cold["levels"].items()
            ],
        )
    )
    print(
        table(
            ["stage (median, measured from outside)", "ms"],
            [[k, v] for k, v in cold["split_ms_median"].items()],
        )
    )
    print(
        table(
            ["PEFT adapters already loaded", "load_adapter ms (median)"],
            [[level, r["median_ms"]] for level, r in peft["load_adapter"].items()],
        )
    )
    memory = cold["memory"]
    print(f"\nmemory per resident adapter (LoraAdapter.num_bytes = {memory['adapter_num_bytes']}):")
    print(
        table(
            ["resident before -> after", "RSS growth MiB", "per adapter bytes", "ratio"],
            [
                [
                    f"{p['resident_before']} -> {p['resident_after']}",
                    f"{p['rss_growth_bytes'] / 2**20:.1f}",
                    p["rss_per_adapter_bytes"],
                    p["ratio_to_num_bytes"],
                ]
                for p in memory["points"]
            ],
        )
    )
    print(
        table(
            ["phase", "seconds", "load avg before/after", "contention probe ms before/after"],
            [
                [
                    name,
                    r["seconds"],
                    f"{r['loadavg_1min_before']} / {r['loadavg_1min_after']}",
                    f"{r['probe_ms_before']} / {r['probe_ms_after']}",
                ]
                for name, r in result["phases"].items()
            ],
        )
    )
    print("\ntargets:")
    print(
        table(
            ["target", "value", "threshold", "result"],
            [
                [t["target"], t["value"], t["threshold"], "PASS" if t["met"] else "FAIL"]
                for t in result["targets"]
            ],
        )
    )


def strip_tokens(section: dict[str, dict[str, Any]]) -> None:
    for entry in section.values():
        entry.pop("tokens", None)


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run of every part")
    parser.add_argument(
        "--out", type=Path, help="results JSON (default bench/results/serving[-DEVICE].json)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument(
        "--base", type=Path, help="base model folder (default: SmolLM2, converted if needed)"
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="the base's architecture with random weights (where its checkpoint cannot be)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    dtype = DTYPES[args.dtype]
    device_kind = torch.device(args.device).type
    name = "serving" if device_kind == "cpu" else f"serving-{device_kind}"
    default_out = Path(tempfile.gettempdir()) / f"{name}-quick.json"
    out: Path = args.out or (default_out if args.quick else RESULTS_DIR / f"{name}.json")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    phases: dict[str, dict[str, Any]] = {}
    if os.getloadavg()[0] > BUSY_LOAD:
        log.warning(
            "load average %.1f: other processes compete for the %d cores, so every number "
            "below is slower and noisier than on an idle machine",
            os.getloadavg()[0],
            os.cpu_count(),
        )

    fields = NodeSettings.model_fields
    settings = {k: fields[k].default for k in ("slots", "max_rank", "max_batch", "cpu_cache_bytes")}
    base_dir = args.base or ensure_smollm2(PROJECT_ROOT / ".data")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    prompts = prompts_of(tokenizer)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        if args.random_weights:
            base_dir = random_weights_copy(base_dir, work / base_dir.name)
        factory = AdapterFactory(base_dir, work / "peft-template")
        folders = [factory.write(work / "adapters" / f"a{i}", seed=i) for i in range(REQUESTS)]
        model = MultiLoraModel.from_pretrained(
            base_dir,
            slots=settings["slots"],
            max_rank=settings["max_rank"],
            dtype=dtype,
            device=args.device,
        )
        with phase("engine throughput", phases):
            engine = measure_engine(model, tokenizer, prompts, folders, work, plan, settings)
        with phase("PEFT baselines", phases):
            peft = measure_peft(base_dir, prompts, folders, pad_id, plan, args.device, dtype)
        with phase("cold load and memory", phases):
            cold = measure_cold(model, factory, work, plan)
    hf = peft["throughput"]
    alone = hf["PEFT one by one, 32 distinct"]
    agree = {
        "engine no adapter vs HF generate": agreement(
            engine["no adapter"]["tokens"], hf["HF generate, base model"]["tokens"]
        ),
        "engine 32 distinct vs PEFT mixed batch": agreement(
            engine["32 distinct"]["tokens"], hf["PEFT mixed batch, 32 distinct"]["tokens"]
        ),
        "engine 32 distinct vs PEFT one by one": agreement(
            [engine["32 distinct"]["tokens"][i] for i in alone["requests_measured"]],
            alone["tokens"],
        ),
    }
    strip_tokens(engine)
    strip_tokens(hf)
    lengths = [len(p) for p in prompts]
    result = {
        "machine": {**machine(), **accelerator(args.device)},
        "quick": args.quick,
        "setup": {
            "base_model": base_dir.name,
            "weights": "random (seeded), same architecture"
            if args.random_weights
            else "pretrained",
            "device": args.device,
            "dtype": args.dtype,
            "torch_threads": torch.get_num_threads(),
            "engine": {**settings, "wrapped_modules": sorted(model.target_modules)},
            "adapters": {
                "rank": RANK,
                "alpha": ALPHA,
                "targets": list(TARGET_MODULES),
                "weight_std": WEIGHT_STD,
            },
            "requests": len(prompts),
            "new_tokens": plan.new_tokens,
            "prompt_tokens": {
                "min": min(lengths),
                "max": max(lengths),
                "mean": round(statistics.mean(lengths), 1),
            },
            "runs": plan.runs,
            "adapter_assignment": "request i on adapter i mod n",
        },
        "engine": engine,
        "peft": peft,
        "agreement": agree,
        "cold_load": cold,
    }
    result["targets"] = targets_of(engine, peft, cold)
    result["phases"] = phases
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return finish(result, out, print_report)


if __name__ == "__main__":
    sys.exit(main())
