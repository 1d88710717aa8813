"""Shared benchmark plumbing: machine description, results files and tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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


def save_json(path: Path, result: dict[str, Any]) -> Path:
    """The one way a benchmark's result is written: indented JSON, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """``payload`` with this machine's description, as ``bench/results/<name>.json``."""
    return save_json(RESULTS_DIR / f"{name}.json", {"machine": machine(), **payload})


def table(headers: list[str], rows: list[list[Any]]) -> str:
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


def finish(result: dict[str, Any], out: Path, report: Callable[[dict[str, Any]], None]) -> int:
    """Writes a benchmark's ``result`` (with ``targets``) to ``out`` as JSON, prints its report;
    the exit code: 0 when every target was met."""
    save_json(out, result)
    report(result)
    print(f"\nelapsed {result['elapsed_s']:.0f} s; wrote {out}")
    return 0 if all(t["met"] for t in result["targets"]) else 1
