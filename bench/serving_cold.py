"""bench/serving.py's cold-load and memory part: ``pool.acquire`` of never-loaded adapters at
several CPU-tier sizes, its stages timed one by one, and RSS per resident adapter."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving_setup import AdapterFactory, Plan, p95, synchronize

from backend.storage.local import DirectoryStore
from inference_node.engine import AdapterPool, MultiLoraModel, parse_adapter
from inference_node.engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from inference_node.engine.packaging import cache_adapter_files, unpack_adapter

log = logging.getLogger("bench.serving")

_LIBC = ctypes.CDLL("libc.so.6")


def rss_bytes() -> int:
    """Resident set size after collecting garbage and returning freed heap pages to the OS."""
    gc.collect()
    _LIBC.malloc_trim(0)
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


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
