"""bench/serving.py's throughput part: the engine's Scheduler over every adapter configuration,
and the PEFT / plain transformers baselines on the same requests (with PEFT's adapter loads)."""

from __future__ import annotations

import gc
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
from peft import PeftModel
from serving_setup import Plan
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from backend.storage.local import DirectoryStore
from inference_node.engine import AdapterPool, MultiLoraModel, SamplingParams, Scheduler
from inference_node.engine.lora import Kernel
from inference_node.engine.packaging import put_adapter

log = logging.getLogger("bench.serving")


class NoStopTokenizer:
    """The tokenizer without an eos token: the scheduler then stops on ``max_tokens`` only."""

    eos_token_id: int | None = None

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)


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


def calibrate(model: MultiLoraModel, rows: int) -> dict[str, Any]:
    """What the node does at start-up: measure the base projections' path and which kernel
    ``auto`` runs in each regime here, for batches of ``rows``; what each measured."""
    base = model.calibrate_base_matmul(rows)
    return {
        "base_matmul": base
        and {"chosen": base.best, "ms": {k: round(s * 1e3, 2) for k, s in base.seconds.items()}},
        "kernel_choice": {
            m.regime: {
                "chosen": m.best,
                "ms": {k: round(s * 1e3, 4) for k, s in m.seconds.items()},
            }
            for m in model.calibrate_kernels(rows)
        },
    }


Run = tuple[float, list[list[int]], int, int]  # engine_once's answer


def interleaved(
    model: MultiLoraModel,
    scheduler: Scheduler,
    prompts: list[list[int]],
    configs: dict[str, EngineConfig],
    plan: Plan,
) -> dict[str, list[Run]]:
    """Every configuration's timed runs, interleaved in rounds so that a slow spell of the
    machine hits all configurations alike instead of one of them (each adapter mix is run
    once untimed first: that loads its adapters into their slots)."""
    default = next(iter(model.lora_layers.values())).kernel
    runs: dict[str, list[Run]] = {name: [] for name in configs}
    try:
        warmed: list[list[str | None]] = []
        for config in configs.values():
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
        model.set_kernel(default)
    return runs


def summary(
    configs: dict[str, EngineConfig], runs: dict[str, list[Run]], requests: int, plan: Plan
) -> dict[str, dict[str, Any]]:
    """Each configuration's median rate over its runs, with its first run's tokens."""
    results = {}
    for name, config in configs.items():
        seconds = [r[0] for r in runs[name]]
        median = statistics.median(seconds)
        results[name] = {
            "kernel": config.kernel,
            "distinct_adapters": len({a for a in config.adapters if a is not None}),
            "tokens_per_s": round(requests * plan.new_tokens / median, 1),
            "median_s": round(median, 3),
            "runs_s": [round(s, 3) for s in seconds],
            "prefills": runs[name][0][2],
            "decode_steps": runs[name][0][3],
            "tokens": runs[name][0][1],
        }
    return results


def registered_pool(
    model: MultiLoraModel, folders: list[Path], work: Path, cache_bytes: int
) -> AdapterPool:
    """A pool over its own content store with adapter ``a{i}`` registered from folder i."""
    store = DirectoryStore(work / "store")
    pool = AdapterPool(model, store, work / "cache", cache_bytes)
    for i, folder in enumerate(folders):
        pool.register(f"a{i}", put_adapter(store, folder))
    return pool


def engine_scheduler(
    model: MultiLoraModel,
    tokenizer: PreTrainedTokenizerBase,
    folders: list[Path],
    work: Path,
    settings: dict[str, Any],
) -> Scheduler:
    """The engine as the node runs it (started): the bench's one multi-threaded torch thread,
    which the PEFT baselines borrow too (``Scheduler.call``, engine/threads.py)."""
    pool = registered_pool(model, folders, work / "serving", settings["cpu_cache_bytes"])
    return Scheduler(model, NoStopTokenizer(tokenizer), pool, max_batch=settings["max_batch"])


def measure_engine(
    scheduler: Scheduler, prompts: list[list[int]], plan: Plan, settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every configuration on ``scheduler`` with the node's settings (``settings`` gets the
    start-up calibration's measurements, taken on the engine's thread as the node does)."""
    model = scheduler.model
    default: Kernel = next(iter(model.lora_layers.values())).kernel
    settings.update(scheduler.call(lambda: calibrate(model, settings["max_batch"])))
    configs = engine_configs(len(prompts), plan, default)
    runs = interleaved(model, scheduler, prompts, configs, plan)
    return summary(configs, runs, len(prompts), plan)


def measure_wide(
    base_dir: Path,
    device: str,
    dtype: torch.dtype,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    folders: list[Path],
    work: Path,
    plan: Plan,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """``len(folders)`` concurrent requests (the prompts cycled) with no adapter and each on
    its own adapter, on a second engine whose slots and max batch are that many (the node's
    other settings), calibrated as the node does; the model is freed before returning."""
    n = len(folders)
    requests = [prompts[i % len(prompts)] for i in range(n)]
    model = MultiLoraModel.from_pretrained(
        base_dir, slots=n, max_rank=settings["max_rank"], dtype=dtype, device=device
    )
    pool = registered_pool(model, folders, work / "wide", settings["cpu_cache_bytes"])
    default: Kernel = next(iter(model.lora_layers.values())).kernel
    configs = {
        "no adapter": EngineConfig([None] * n, default, plan.runs),
        f"{n} distinct": EngineConfig([f"a{i}" for i in range(n)], default, plan.runs),
    }
    scheduler = Scheduler(model, NoStopTokenizer(tokenizer), pool, max_batch=n).start()
    try:
        calibration = scheduler.call(lambda m=model: calibrate(m, n))
        runs = interleaved(model, scheduler, requests, configs, plan)
    finally:
        scheduler.close()
        del scheduler, pool, model
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return {
        "requests": n,
        "engine": {"slots": n, "max_batch": n, **calibration},
        **summary(configs, runs, n, plan),
    }


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
