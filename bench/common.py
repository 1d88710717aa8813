"""Shared benchmark plumbing: the machine's description, where and how results are written,
phase timing with the machine's load around it, targets and the readable tables."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

log = logging.getLogger("bench")


# ---------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def log_progress() -> None:
    """Libraries log warnings only; the benchmarks' own loggers (under "bench") their progress."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)


def warn_if_busy(busy_load: float) -> float:
    """The 1-minute load average now, with a warning when it is above ``busy_load``: other
    processes then slow every number down on a small machine."""
    load = os.getloadavg()[0]
    if load > busy_load:
        log.warning(
            "load average %.1f: other processes compete for the %d cores, so every number "
            "below is slower and noisier than on an idle machine",
            load,
            os.cpu_count(),
        )
    return load


@contextmanager
def phase(
    name: str, phases: dict[str, dict[str, Any]], probe: Callable[[], float] | None = None
) -> Iterator[None]:
    """Records a phase's seconds and the load average around it in ``phases[name]`` (other
    processes on a small machine slow every number down; the load shows when that happened),
    and ``probe``'s milliseconds before and after where one is given."""
    load_before = os.getloadavg()[0]
    probe_before = probe() if probe else None
    started = time.perf_counter()
    yield
    phases[name] = {
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    if probe:
        phases[name] |= {"probe_ms_before": probe_before, "probe_ms_after": probe()}
    log.info("%s: %.0f s", name, phases[name]["seconds"])


# ---------------------------------------------------------------------------- results


def default_out(name: str, quick: bool) -> Path:
    """Where a run's results go unless ``--out`` says: bench/results/NAME.json, or a temporary
    file for a ``--quick`` smoke run (which must not replace the committed numbers)."""
    if quick:
        return Path(tempfile.gettempdir()) / f"{name}-quick.json"
    return RESULTS_DIR / f"{name}.json"


def write_results(out: str | Path, payload: dict[str, Any], **machine_extra: Any) -> Path:
    """The one way a benchmark's results are written: ``payload`` after the machine's
    description (``machine_extra`` added to it), as indented JSON at ``out`` (a bare name:
    bench/results/NAME.json), folders made."""
    path = RESULTS_DIR / f"{out}.json" if isinstance(out, str) else out
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": {**machine(), **machine_extra}, **payload}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def finish(
    result: dict[str, Any],
    out: Path,
    report: Callable[[dict[str, Any]], None],
    **machine_extra: Any,
) -> int:
    """Writes a benchmark's ``result`` (with ``targets``) to ``out``, prints its report; the
    exit code: 0 when every target was met."""
    path = write_results(out, result, **machine_extra)
    report(result)
    print(f"\nelapsed {result['elapsed_s']:.0f} s; wrote {path}")
    return 0 if all(t["met"] for t in result["targets"]) else 1


# ---------------------------------------------------------------------------- targets


def target(
    name: str, value: Any, threshold: str, met: bool, digits: int | None = 3
) -> dict[str, Any]:
    """One target as results record it; a float value rounded to ``digits`` (None: as is)."""
    if digits is not None and isinstance(value, float):
        value = round(value, digits)
    return {"target": name, "value": value, "threshold": threshold, "met": bool(met)}


def at_least(
    name: str, value: float, minimum: float, fmt: str = "", digits: int | None = 3
) -> dict[str, Any]:
    """The target ``value >= minimum`` (its threshold shown with format spec ``fmt``)."""
    return target(name, value, f">= {minimum:{fmt}}", value >= minimum, digits)


def at_most(
    name: str, value: float, maximum: float, fmt: str = "", digits: int | None = 3
) -> dict[str, Any]:
    """The target ``value <= maximum`` (its threshold shown with format spec ``fmt``)."""
    return target(name, value, f"<= {maximum:{fmt}}", value <= maximum, digits)


# ---------------------------------------------------------------------------- tables


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def targets_table(targets: list[dict[str, Any]], result_header: str = "result") -> str:
    return table(
        ["target", "value", "threshold", result_header],
        [
            [t["target"], t["value"], t["threshold"], "PASS" if t["met"] else "FAIL"]
            for t in targets
        ],
    )


def phases_table(phases: dict[str, dict[str, Any]]) -> str:
    """Each phase's seconds and load around it (and the probe's, where ``phase`` ran one)."""
    probed = any("probe_ms_before" in r for r in phases.values())
    headers = ["phase", "seconds", "load avg before/after"]
    if probed:
        headers.append("contention probe ms before/after")
    rows = []
    for name, r in phases.items():
        row = [name, r["seconds"], f"{r['loadavg_1min_before']} / {r['loadavg_1min_after']}"]
        if probed:
            row.append(f"{r.get('probe_ms_before')} / {r.get('probe_ms_after')}")
        rows.append(row)
    return table(headers, rows)


# ---------------------------------------------------------------------------- models


def random_weights_copy(base_dir: Path, folder: Path) -> Path:
    """``base_dir``'s architecture and tokenizer with seeded random weights: the same compute
    where the checkpoint itself cannot be brought (the GPU machine takes 64 MiB of files)."""
    import torch  # here: the other helpers serve benchmarks that need no torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(base_dir)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder)
    return folder
