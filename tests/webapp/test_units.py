"""The web app's unit tests (webapp/tests/*.test.ts, Node's test runner): the quote checks
that keep a node from getting more than the price signed, amount parsing and formatting, and
the page's CIDs against the backend's own implementation on sizes around every chunk and
DAG-level boundary."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from backend.storage.unixfs import CHUNK_SIZE, MAX_LINKS, compute_cid

ROOT = Path(__file__).resolve().parents[2]
SIZES = (0, 1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7,
         MAX_LINKS * CHUNK_SIZE, MAX_LINKS * CHUNK_SIZE + 1)  # fmt: skip


def pattern(size: int, seed: int) -> bytes:
    """The bytes webapp/tests/cid.test.ts generates for (size, seed)."""
    return bytes((i * 31 + seed) & 0xFF for i in range(size))


def test_the_web_app_unit_tests_pass_with_the_backends_cids(tmp_path: Path) -> None:
    cases = [{"size": n, "seed": n % 7, "cid": compute_cid(pattern(n, n % 7))} for n in SIZES]
    assert cases[-1]["cid"].startswith("bafybei")  # a two-level DAG is among them
    fixture = tmp_path / "cids.json"
    fixture.write_text(json.dumps(cases))
    run = subprocess.run(
        ["node", "webapp/test.mjs"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CID_FIXTURE": str(fixture)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    counts = dict(re.findall(r"^# (pass|fail|skipped) (\d+)$", run.stdout, re.M))
    assert counts == {"pass": counts["pass"], "fail": "0", "skipped": "0"}, run.stdout[-2000:]
    assert int(counts["pass"]) >= 13
