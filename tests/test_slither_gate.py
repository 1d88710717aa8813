"""The slither gate (tools/slither_gate.py, issue 13 point 7) on small synthetic reports.

Why: the gate decides whether CI goes red, so what it lets through and what it stops must be
pinned down without running slither itself (seconds, its own virtualenv): an untriaged
Medium fails, a triaged one and any Low pass, a stale entry warns, keys ignore line numbers,
and a crashed slither or a malformed triage file is an error, never a pass.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GATE_PATH = ROOT / "tools" / "slither_gate.py"


def _load_gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slither_gate", GATE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


gate = _load_gate()


def _mapping(filename: str, lines: list[int]) -> dict[str, Any]:
    return {"filename_relative": filename, "lines": lines, "is_dependency": False}


def _contract(name: str, filename: str = "contracts/Vault.sol") -> dict[str, Any]:
    return {"type": "contract", "name": name, "source_mapping": _mapping(filename, [1, 99])}


def _function(contract: str, name: str, lines: list[int]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "source_mapping": _mapping("contracts/Vault.sol", lines),
        "type_specific_fields": {"parent": _contract(contract), "signature": f"{name}(uint256)"},
    }


def _local(contract: str, function: str, name: str, line: int) -> dict[str, Any]:
    return {
        "type": "variable",
        "name": name,
        "source_mapping": _mapping("contracts/Vault.sol", [line]),
        "type_specific_fields": {"parent": _function(contract, function, [line - 2, line + 5])},
    }


def _node(contract: str, function: str, expression: str, line: int) -> dict[str, Any]:
    return {
        "type": "node",
        "name": expression,
        "source_mapping": _mapping("contracts/Vault.sol", [line]),
        "type_specific_fields": {"parent": _function(contract, function, [line - 3, line + 3])},
    }


def _result(
    check: str, impact: str, elements: list[dict[str, Any]], description: str
) -> dict[str, Any]:
    return {
        "check": check,
        "impact": impact,
        "confidence": "Medium",
        "description": description,
        "elements": elements,
        "id": "0" * 64,
    }


def _report(*results: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "error": None, "results": {"detectors": list(results)}}


UNUSED_RETURN = _result(
    "unused-return",
    "Medium",
    [
        _function("Vault", "fund", [10, 20]),
        _node("Vault", "fund", "registry.check(id)", 12),
    ],
    "Vault.fund(uint256) (contracts/Vault.sol#10-20) ignores return value by "
    "registry.check(id) (contracts/Vault.sol#12)\n",
)
TIMESTAMP = _result(
    "timestamp",
    "Low",
    [_function("Vault", "withdraw", [30, 40]), _node("Vault", "withdraw", "now < t", 31)],
    "Vault.withdraw(uint256) (contracts/Vault.sol#30-40) uses timestamp for comparisons\n",
)
UNINITIALIZED_LOCAL = _result(
    "uninitialized-local",
    "Medium",
    [_local("Vault", "sum", "total", 52)],
    "Vault.sum(uint256).total (contracts/Vault.sol#52) is a local variable never initialized\n",
)

FUND_ENTRY = """
[[finding]]
detector = "unused-return"
target = "Vault.fund"
verdict = "accepted"
reason = "an existence check: check() reverts for an unknown id"
"""


def _run(
    tmp_path: Path, report: dict[str, Any], triage: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps(report))
    triage_path = tmp_path / "triage.toml"
    triage_path.write_text(triage)
    code = gate.main([str(report_path), "--triage", str(triage_path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_untriaged_medium_fails_and_names_the_finding(tmp_path, capsys):
    code, out, _ = _run(tmp_path, _report(UNUSED_RETURN), "", capsys)

    assert code == 1
    assert "FAIL: 1 High/Medium finding(s)" in out
    assert "[Medium] unused-return  Vault.fund  (contracts/Vault.sol#L10-L20)" in out
    assert "ignores return value by registry.check(id)" in out
    assert 'target = "Vault.fund"' in out  # a stub to paste, once the code is read


def test_triaged_medium_passes(tmp_path, capsys):
    code, out, _ = _run(tmp_path, _report(UNUSED_RETURN), FUND_ENTRY, capsys)

    assert code == 0
    assert "1 triaged" in out
    assert "OK: every High/Medium finding is triaged." in out
    assert "WARNING" not in out


def test_low_findings_are_listed_but_do_not_fail(tmp_path, capsys):
    code, out, _ = _run(tmp_path, _report(TIMESTAMP), "", capsys)

    assert code == 0
    assert "Low/Informational, listed only (Low 1)" in out
    assert "[Low] timestamp  Vault.withdraw" in out


def test_stale_entry_is_a_warning_not_a_failure(tmp_path, capsys):
    code, out, _ = _run(tmp_path, _report(TIMESTAMP), FUND_ENTRY, capsys)

    assert code == 0
    assert "WARNING: stale triage entry, it matches no finding: unused-return  Vault.fund" in out


def test_keys_survive_line_shifts_and_signature_changes():
    moved = json.loads(json.dumps(UNUSED_RETURN).replace("#10-20", "#110-120"))
    moved["elements"][0]["source_mapping"]["lines"] = [110, 120]
    moved["elements"][0]["type_specific_fields"]["signature"] = "fund(uint256,address)"
    moved["id"] = "f" * 64
    entries = gate.parse_triage(tomllib.loads(FUND_ENTRY), source="inline")

    (original,) = gate.parse_findings(_report(UNUSED_RETURN))
    (shifted,) = gate.parse_findings(_report(moved))

    assert original.target == shifted.target == "Vault.fund"
    assert entries[0].matches(shifted)
    assert shifted.location == "contracts/Vault.sol#L110-L120"


def test_local_variable_key_names_its_function(tmp_path, capsys):
    (finding,) = gate.parse_findings(_report(UNINITIALIZED_LOCAL))
    assert finding.target == "Vault.sum.total"

    other_local = """
[[finding]]
detector = "uninitialized-local"
target = "Vault.sum.count"
verdict = "false-positive"
reason = "a counter"
"""
    code, out, _ = _run(tmp_path, _report(UNINITIALIZED_LOCAL), other_local, capsys)
    assert code == 1  # another variable of the same function is not triaged by it
    assert "stale triage entry" in out


def test_detail_narrows_an_entry_to_one_statement(tmp_path, capsys):
    narrowed = FUND_ENTRY + 'detail = "registry.check(id)"\n'
    assert _run(tmp_path, _report(UNUSED_RETURN), narrowed, capsys)[0] == 0

    other_call = FUND_ENTRY + 'detail = "token.balanceOf(this)"\n'
    code, out, _ = _run(tmp_path, _report(UNUSED_RETURN), other_call, capsys)
    assert code == 1
    assert "stale triage entry" in out


def test_known_bug_passes_but_is_printed(tmp_path, capsys):
    known = FUND_ENTRY.replace('"accepted"', '"known-bug"')
    code, out, _ = _run(tmp_path, _report(UNUSED_RETURN), known, capsys)

    assert code == 0
    assert "KNOWN BUG (triaged, still open): [Medium] unused-return  Vault.fund" in out
    assert "an existence check" in out


def test_a_failed_slither_run_is_an_error(tmp_path, capsys):
    crashed = {"success": False, "error": "Invalid compilation", "results": {}}
    code, out, err = _run(tmp_path, crashed, "", capsys)

    assert code == 2
    assert "slither did not succeed: Invalid compilation" in err
    assert out == ""


def test_a_missing_report_is_an_error(tmp_path, capsys):
    code = gate.main([str(tmp_path / "absent.json"), "--triage", str(tmp_path / "t.toml")])

    assert code == 2
    assert "no slither report" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("triage", "message"),
    [
        (FUND_ENTRY.replace("target", "targt"), "missing keys ['target']"),
        (FUND_ENTRY.replace('"accepted"', '"fine"'), "is not one of"),
        (
            FUND_ENTRY.replace('"an existence check: check() reverts for an unknown id"', '" "'),
            "the reason is empty",
        ),
        (FUND_ENTRY + FUND_ENTRY, "duplicate"),
        ("[[findings]]\n", "unknown top-level keys"),
        ("[[finding]\n", "invalid TOML"),
    ],
)
def test_a_malformed_triage_file_is_an_error(tmp_path, capsys, triage, message):
    code, _, err = _run(tmp_path, _report(UNUSED_RETURN), triage, capsys)

    assert code == 2
    assert message in err


def test_no_findings_passes(tmp_path, capsys):
    code, out, _ = _run(tmp_path, {"success": True, "error": None, "results": {}}, "", capsys)

    assert code == 0
    assert "0 finding(s) (none)" in out


def test_the_checked_in_triage_file_is_valid():
    entries = gate.load_triage(ROOT / "tools" / "slither-triage.toml")

    assert entries
    assert all(entry.reason for entry in entries)


def test_runs_as_a_script_under_plain_python(tmp_path):
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps(_report(UNUSED_RETURN)))
    triage_path = tmp_path / "triage.toml"
    triage_path.write_text("")

    done = subprocess.run(
        [sys.executable, str(GATE_PATH), str(report_path), "--triage", str(triage_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 1
    assert "unused-return" in done.stdout
