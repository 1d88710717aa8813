"""Match a developer's training data files to a Datanet version's examples, by content.

An adapter trained elsewhere comes with the data it was trained on, as files in the Datanet's
format. Each file is cut into examples exactly as a contribution is
(:func:`~backend.modelfactory.dataset.contribution_examples`), and each example is looked up by
the sha256 of its normalized content (:attr:`~backend.modelfactory.dataset.Example.content_sha256`:
field order, JSON spacing and escapes do not matter; the text does). A match names the
contribution, contributor and byte range of the version's example, which is what a training
manifest records; the same content twice matches two distinct rows of the version if it has
them, and is counted as repeated otherwise. What does not match is reported by line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example, contribution_examples
from backend.modelfactory.import_record import MAX_UNMATCHED_LISTED, DataFileRecord

NO_CONTRIBUTOR = "0x0000000000000000000000000000000000000000"  # the developer's own files


@dataclass(frozen=True)
class MatchResult:
    matched: list[Example]  # the version's examples matched, in position order, each once
    files: tuple[DataFileRecord, ...]  # per data file, in the order given

    @property
    def unmatched(self) -> int:
        return sum(f.unmatched for f in self.files)

    @property
    def examples(self) -> int:
        return sum(f.examples for f in self.files)


def match_files(
    version_examples: Sequence[Example],
    fmt: DataFormat,
    files: Sequence[Path],
    max_chars: int = 2000,
) -> MatchResult:
    """Matches every example of ``files`` (in the Datanet's format ``fmt``, cut with
    ``max_chars`` as the version's examples were) to ``version_examples``."""
    by_content: dict[str, list[Example]] = {}
    for example in version_examples:
        by_content.setdefault(example.content_sha256, []).append(example)
    taken: set[tuple[int, int, int]] = set()
    records = []
    for path in files:
        content = Path(path).read_bytes()
        examples, report = contribution_examples(content, fmt, 0, NO_CONTRIBUTOR, max_chars)
        matched = repeated = 0
        unmatched_lines: list[int] = []
        for example in examples:
            candidates = by_content.get(example.content_sha256, [])
            free = next((c for c in candidates if _place(c) not in taken), None)
            if free is not None:
                taken.add(_place(free))
                matched += 1
            elif candidates:
                repeated += 1
            else:
                unmatched_lines.append(_line(content, example))
        listed = sorted(set(unmatched_lines))[:MAX_UNMATCHED_LISTED]
        records.append(DataFileRecord(
            Path(path).name, hashlib.sha256(content).hexdigest(), len(examples), matched,
            repeated, report.skipped, tuple(listed),
        ))  # fmt: skip
    chosen = sorted((e for e in version_examples if _place(e) in taken), key=lambda e: _place(e))
    return MatchResult(chosen, tuple(records))


def _place(example: Example) -> tuple[int, int, int]:
    return (example.contribution_id, example.byte_start, example.byte_end)


def _line(content: bytes, example: Example) -> int:
    """The 1-based line an example starts on (text chunks carry no line of their own)."""
    if example.line is not None:
        return example.line
    return content.count(b"\n", 0, example.byte_start) + 1
