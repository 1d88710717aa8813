"""bench/common.py: the targets, tables, phases and results file every benchmark shares."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

# loaded by path: bench/ on sys.path would shadow top-level names (api, storage) for the session
_SPEC = importlib.util.spec_from_file_location(
    "bench_common", Path(__file__).resolve().parents[1] / "bench" / "common.py"
)
assert _SPEC is not None and _SPEC.loader is not None
common = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = common
_SPEC.loader.exec_module(common)


def test_targets_round_floats_and_show_thresholds() -> None:
    assert common.at_least("ratio", 0.82345, 0.8) == {
        "target": "ratio",
        "value": 0.823,
        "threshold": ">= 0.8",
        "met": True,
    }
    assert common.at_least("loss", 0.25, 0.30, ".0%")["threshold"] == ">= 30%"
    assert not common.at_least("loss", 0.25, 0.30)["met"]
    assert common.at_most("ms", 20.0, 20.0)["met"]
    assert common.at_most("share", 0.04321, 0.05, digits=None)["value"] == 0.04321
    assert common.target("same", True, "true", True)["value"] is True  # not rounded to 1


def test_tables() -> None:
    targets = [common.at_least("a", 1.0, 0.5), common.at_most("bb", 2.0, 1.0)]
    assert common.targets_table(targets).splitlines() == [
        "target  value  threshold  result",
        "------  -----  ---------  ------",
        "a         1.0     >= 0.5    PASS",
        "bb        2.0     <= 1.0    FAIL",
    ]
    assert common.targets_table(targets, result_header="").splitlines()[0].rstrip() == (
        "target  value  threshold"
    )


def test_phases_record_load_and_the_probe_where_given() -> None:
    phases: dict[str, dict[str, object]] = {}
    with common.phase("plain", phases):
        pass
    with common.phase("probed", phases, probe=lambda: 1.5):
        pass
    assert list(phases["plain"]) == ["seconds", "loadavg_1min_before", "loadavg_1min_after"]
    assert phases["probed"]["probe_ms_before"] == phases["probed"]["probe_ms_after"] == 1.5
    header = common.phases_table(phases).splitlines()[0]
    assert "contention probe ms before/after" in header
    assert "contention" not in common.phases_table({"plain": phases["plain"]})


def test_results_file_and_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "bench.json"
    result = {"targets": [common.at_least("a", 1.0, 0.5)], "elapsed_s": 1.0}
    assert common.finish(result, out, lambda _: None, gpu="test") == 0
    written = json.loads(out.read_text())
    assert list(written) == ["machine", "targets", "elapsed_s"]
    assert written["machine"]["gpu"] == "test" and "cpu" in written["machine"]
    result["targets"].append(common.at_most("b", 2.0, 1.0))
    assert common.finish(result, out, lambda _: None) == 1
    assert common.default_out("serving", quick=False) == common.RESULTS_DIR / "serving.json"
    assert common.default_out("serving", quick=True).parent != common.RESULTS_DIR
