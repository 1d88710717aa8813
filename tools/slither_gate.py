#!/usr/bin/env python3
"""Fail the build on High/Medium slither findings that nobody has triaged (issue 13, point 7).

Slither reports dozens of findings on these contracts, nearly all false positives (it cannot
see OpenZeppelin's transient reentrancy guard, it flags every zero-initialised local, ...).
Running it with a plain ``--fail-medium`` would keep CI red for ever; ignoring it would let a
real finding through. This gate sits in between: every High or Medium finding must match an
entry of a checked-in, reviewed triage file that says *why* it is harmless (or that it is a
known bug); anything else fails the build. Low and Informational findings are listed, never
fatal.

Findings are matched by a key that survives edits elsewhere in a file: the detector plus the
qualified name of the finding's first element (``Contract.function``,
``Contract.function.localVariable``, ``Contract.stateVariable``, ``Contract``), optionally
narrowed by ``detail``, a substring of slither's description such as the flagged expression.
Slither's own ``id`` is not used: it hashes the source mapping (offsets and lines) of the
statements involved, so it changes whenever a line is added above the finding. Function
signatures are left out of the key as well, so a new parameter does not orphan a triage.

Standard library only: it runs in slither's own virtualenv or under any Python >= 3.11.
Exit status: 0 when every gated finding is triaged, 1 when some are not, 2 on bad input
(slither crashed, no report, malformed triage file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GATED_IMPACTS: tuple[str, ...] = ("High", "Medium")
IMPACT_ORDER: tuple[str, ...] = ("High", "Medium", "Low", "Informational", "Optimization")
VERDICTS: tuple[str, ...] = ("false-positive", "accepted", "known-bug")
ENTRY_KEYS_REQUIRED: frozenset[str] = frozenset({"detector", "target", "verdict", "reason"})
ENTRY_KEYS_OPTIONAL: frozenset[str] = frozenset({"detail"})
DEFAULT_TRIAGE = Path(__file__).resolve().parent / "slither-triage.toml"


class GateError(Exception):
    """Input the gate cannot judge (a crashed slither, a malformed triage file): exit 2."""


@dataclass(frozen=True)
class Finding:
    """One slither result, reduced to what the key and the report need."""

    detector: str
    impact: str
    confidence: str
    target: str
    location: str
    description: str

    @property
    def gated(self) -> bool:
        """Whether an untriaged finding of this impact fails the build."""
        return self.impact in GATED_IMPACTS

    def headline(self) -> str:
        """One line naming the finding, for summaries."""
        return f"[{self.impact}] {self.detector}  {self.target}  ({self.location})"


@dataclass(frozen=True)
class TriageEntry:
    """One reviewed explanation from the triage file."""

    detector: str
    target: str
    verdict: str
    reason: str
    detail: str | None = None

    def matches(self, finding: Finding) -> bool:
        """Whether this entry explains `finding` (same detector and target, detail if given)."""
        return (
            self.detector == finding.detector
            and self.target == finding.target
            and (self.detail is None or self.detail in finding.description)
        )

    def label(self) -> str:
        """How the entry is named in warnings."""
        suffix = f" (detail {self.detail!r})" if self.detail is not None else ""
        return f"{self.detector}  {self.target}{suffix}"


@dataclass(frozen=True)
class Outcome:
    """The gate's verdict: the report lines and the exit status."""

    lines: list[str]
    exit_code: int


# ------------------------------------------------------------------ reading slither's report


def qualified_name(element: dict[str, Any]) -> str:
    """The element's name qualified by its parents, e.g. ``Contract.function.variable``.

    A statement (``node``) is named after its function: its own name is the expression's
    text, which belongs in ``detail``, not in the key. Elements without a parent contract
    (pragmas, free functions) are qualified by their file instead.
    """
    name = str(element.get("name", ""))
    parent = element.get("type_specific_fields", {}).get("parent")
    if element.get("type") == "node":
        return qualified_name(parent) if parent else name
    if element.get("type") == "contract":
        return name
    if parent:
        return f"{qualified_name(parent)}.{name}"
    filename = element.get("source_mapping", {}).get("filename_relative", "")
    return f"{filename}:{name}" if filename else name


def _location(element: dict[str, Any]) -> str:
    """``file#Lfirst-Llast`` of an element (for people; never part of a key)."""
    mapping = element.get("source_mapping") or {}
    filename = mapping.get("filename_relative", "?")
    lines = mapping.get("lines") or []
    if not lines:
        return filename
    first, last = min(lines), max(lines)
    return f"{filename}#L{first}" if first == last else f"{filename}#L{first}-L{last}"


def parse_findings(report: dict[str, Any]) -> list[Finding]:
    """The findings of a slither ``--json`` report; a failed run is an error, not a pass."""
    if not report.get("success", False):
        raise GateError(f"slither did not succeed: {report.get('error') or 'no error given'}")
    findings = []
    for result in (report.get("results") or {}).get("detectors", []):
        elements = result.get("elements") or []
        first = elements[0] if elements else {}
        findings.append(
            Finding(
                detector=str(result.get("check", "?")),
                impact=str(result.get("impact", "?")),
                confidence=str(result.get("confidence", "?")),
                target=qualified_name(first) if first else "(no element)",
                location=_location(first) if first else "?",
                description=str(result.get("description", "")).strip(),
            )
        )
    return findings


def load_report(path: Path) -> list[Finding]:
    """Read slither's JSON report; a missing one means slither crashed before writing it."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GateError(f"no slither report at {path} (did slither fail to compile?)") from exc
    except json.JSONDecodeError as exc:
        raise GateError(f"{path} is not JSON: {exc}") from exc
    return parse_findings(report)


# ------------------------------------------------------------------ reading the triage file


def parse_triage(data: dict[str, Any], source: str = "triage file") -> list[TriageEntry]:
    """Validate the triage entries strictly: a typo in a key must not silently match nothing."""
    unknown_tables = set(data) - {"finding"}
    if unknown_tables:
        raise GateError(f"{source}: unknown top-level keys {sorted(unknown_tables)}")
    raw_entries = data.get("finding", [])
    if not isinstance(raw_entries, list):
        raise GateError(f"{source}: 'finding' must be an array of tables ([[finding]])")
    entries: list[TriageEntry] = []
    seen: set[tuple[str, str, str | None]] = set()
    for number, raw in enumerate(raw_entries, start=1):
        where = f"{source}: entry {number}"
        if not isinstance(raw, dict):
            raise GateError(f"{where}: not a table")
        missing = ENTRY_KEYS_REQUIRED - set(raw)
        extra = set(raw) - ENTRY_KEYS_REQUIRED - ENTRY_KEYS_OPTIONAL
        if missing or extra:
            raise GateError(
                f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(extra)}"
            )
        if not all(isinstance(value, str) for value in raw.values()):
            raise GateError(f"{where}: every value must be a string")
        if raw["verdict"] not in VERDICTS:
            raise GateError(f"{where}: verdict {raw['verdict']!r} is not one of {list(VERDICTS)}")
        if not raw["reason"].strip():
            raise GateError(f"{where}: the reason is empty; say why the finding is harmless")
        entry = TriageEntry(
            detector=raw["detector"],
            target=raw["target"],
            verdict=raw["verdict"],
            reason=raw["reason"].strip(),
            detail=raw.get("detail"),
        )
        key = (entry.detector, entry.target, entry.detail)
        if key in seen:
            raise GateError(f"{where}: duplicate of an earlier entry ({entry.label()})")
        seen.add(key)
        entries.append(entry)
    return entries


def load_triage(path: Path) -> list[TriageEntry]:
    """Read the TOML triage file (chosen for comments and multi-line reasons in review)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GateError(f"no triage file at {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"{path}: invalid TOML: {exc}") from exc
    return parse_triage(data, source=str(path))


# ------------------------------------------------------------------ the gate


def _indent(text: str, prefix: str = "      ") -> list[str]:
    return [prefix + line for line in text.splitlines()]


def _stub(finding: Finding) -> list[str]:
    """A triage entry to paste once the code has been read and the finding understood."""
    return [
        "    [[finding]]",
        f'    detector = "{finding.detector}"',
        f'    target = "{finding.target}"',
        '    verdict = "false-positive | accepted | known-bug"  # pick one',
        '    reason = """WHY, after reading the code"""',
    ]


def _counts(findings: Iterable[Finding]) -> str:
    counter = Counter(f.impact for f in findings)
    order = [i for i in IMPACT_ORDER if i in counter] + sorted(set(counter) - set(IMPACT_ORDER))
    return ", ".join(f"{impact} {counter[impact]}" for impact in order) or "none"


def evaluate(
    findings: Sequence[Finding], entries: Sequence[TriageEntry], triage_name: str
) -> Outcome:
    """Match findings to triage entries and write the report; fail on untriaged gated ones."""
    used: set[int] = set()
    explained: dict[int, list[TriageEntry]] = {}
    for index, finding in enumerate(findings):
        for entry_index, entry in enumerate(entries):
            if entry.matches(finding):
                used.add(entry_index)
                explained.setdefault(index, []).append(entry)

    untriaged = [f for i, f in enumerate(findings) if f.gated and i not in explained]
    triaged = [f for i, f in enumerate(findings) if i in explained]
    ungated = [f for i, f in enumerate(findings) if not f.gated and i not in explained]
    known_bugs = [
        (f, e)
        for i, f in enumerate(findings)
        for e in explained.get(i, [])
        if e.verdict == "known-bug"
    ]
    stale = [e for i, e in enumerate(entries) if i not in used]

    lines = [
        f"slither gate: {len(findings)} finding(s) ({_counts(findings)}); "
        f"{len(triaged)} triaged in {triage_name}, "
        f"{len(untriaged)} untriaged High/Medium",
    ]
    if ungated:
        lines.append(f"Low/Informational, listed only ({_counts(ungated)}):")
        lines.extend(f"  {f.headline()}" for f in ungated)
    for finding, entry in known_bugs:
        lines.append(f"KNOWN BUG (triaged, still open): {finding.headline()}")
        lines.extend(_indent(entry.reason))
    for entry in stale:
        lines.append(f"WARNING: stale triage entry, it matches no finding: {entry.label()}")
    if untriaged:
        lines.append(
            f"FAIL: {len(untriaged)} High/Medium finding(s) not explained in {triage_name}:"
        )
        for finding in untriaged:
            lines.append(f"  {finding.headline()}  confidence {finding.confidence}")
            lines.extend(_indent(finding.description))
            lines.extend(_stub(finding))
        lines.append(
            "Read the code; fix a real bug, or add an entry saying why the finding is harmless."
        )
        return Outcome(lines, 1)
    lines.append("OK: every High/Medium finding is triaged.")
    return Outcome(lines, 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``slither_gate.py REPORT.json [--triage FILE]``; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="slither's --json output")
    parser.add_argument(
        "--triage", type=Path, default=DEFAULT_TRIAGE, help=f"default: {DEFAULT_TRIAGE}"
    )
    args = parser.parse_args(argv)
    try:
        findings = load_report(args.report)
        entries = load_triage(args.triage)
    except GateError as exc:
        sys.stderr.write(f"slither gate: ERROR: {exc}\n")
        return 2
    outcome = evaluate(findings, entries, triage_name=args.triage.name)
    sys.stdout.write("\n".join(outcome.lines) + "\n")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
