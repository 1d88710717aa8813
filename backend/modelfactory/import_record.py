"""What a training manifest says of an adapter trained outside ModelFactory (schema 3).

ModelFactory cannot know how an imported adapter was trained, so its manifest says only what it
can justify, and how: with ``evidence`` ``"content_sha256"`` the developer handed in the
training data, each example was matched to the Datanet version's examples by the sha256 of its
normalized content (the manifest lists the matched ones; per file, how many examples matched,
repeated one already matched, did not match, or were not examples of the Datanet's format at
all); with ``"declared_unverified"`` the developer gave no data, the manifest lists no example
and the Datanet version is the developer's word alone. In both cases, that the adapter was
trained on those examples (and how: ``method``) is the developer's declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.protocol.json_fields import exact_keys, is_sha256, is_uint

EVIDENCE = ("content_sha256", "declared_unverified")
METHODS = ("sft", "dpo")  # how the examples become gradient rows for attribution
MAX_UNMATCHED_LISTED = 100  # unmatched lines named per file; the rest are only counted
_FILE_KEYS = {"name", "sha256", "examples", "matched", "repeated", "malformed", "unmatched_lines"}
_KEYS = {"method", "evidence", "data_files"}


class ImportRecordError(ValueError):
    """A malformed import record; the message names the field."""


@dataclass(frozen=True)
class DataFileRecord:
    """How one training data file of the developer matched the Datanet version."""

    name: str  # the file's name, without its folder
    sha256: str  # of the file's bytes
    examples: int  # examples read from it (in the Datanet's format)
    matched: int  # found among the version's examples, each a distinct one
    repeated: int  # the same content as an example already matched
    malformed: int  # rows that are not examples of the Datanet's format
    unmatched_lines: tuple[int, ...]  # 1-based lines of unmatched examples (the first 100)

    @property
    def unmatched(self) -> int:
        return self.examples - self.matched - self.repeated

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "sha256": self.sha256, "examples": self.examples,
            "matched": self.matched, "repeated": self.repeated, "malformed": self.malformed,
            "unmatched_lines": list(self.unmatched_lines),
        }  # fmt: skip


@dataclass(frozen=True)
class ImportRecord:
    method: str  # "sft" or "dpo", declared by the developer
    evidence: str  # one of EVIDENCE
    data_files: tuple[DataFileRecord, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ImportRecordError(f"method {self.method!r}, expected one of {list(METHODS)}")
        if self.evidence not in EVIDENCE:
            raise ImportRecordError(f"evidence {self.evidence!r}, expected one of {list(EVIDENCE)}")
        if (self.evidence == "content_sha256") != bool(self.data_files):
            raise ImportRecordError(
                "data_files must list the developer's files exactly when evidence is "
                "'content_sha256'"
            )

    @property
    def unmatched(self) -> int:
        return sum(f.unmatched for f in self.data_files)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "evidence": self.evidence,
            "data_files": [f.to_json() for f in self.data_files],
        }

    @classmethod
    def from_json(cls, data: Any) -> ImportRecord:
        """Parses an import record; :class:`ImportRecordError` names what is wrong."""
        data = _object(data, _KEYS, "import")
        files = data["data_files"]
        if not isinstance(files, list):
            raise ImportRecordError("import.data_files must be a list")
        parsed = tuple(_file(i, f) for i, f in enumerate(files))
        return cls(data["method"], data["evidence"], parsed)


def _object(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    return exact_keys(value, keys, what, ImportRecordError)


def _file(index: int, row: Any) -> DataFileRecord:
    what = f"import.data_files[{index}]"
    row = _object(row, _FILE_KEYS, what)
    if not isinstance(row["name"], str) or not row["name"] or "/" in row["name"]:
        raise ImportRecordError(f"{what}: name must be a file name, not {row['name']!r}")
    if not is_sha256(row["sha256"]):
        raise ImportRecordError(f"{what}: sha256 must be 64 lowercase hex digits")
    counts = ("examples", "matched", "repeated", "malformed")
    if not all(is_uint(row[key]) for key in counts):
        raise ImportRecordError(f"{what}: {', '.join(counts)} must be non-negative integers")
    if row["matched"] + row["repeated"] > row["examples"]:
        raise ImportRecordError(f"{what}: matched + repeated exceeds examples")
    lines = row["unmatched_lines"]
    unmatched = row["examples"] - row["matched"] - row["repeated"]
    if (
        not isinstance(lines, list)
        or not all(is_uint(n) and n > 0 for n in lines)
        or lines != sorted(set(lines))
        or len(lines) > min(unmatched, MAX_UNMATCHED_LISTED)
    ):
        raise ImportRecordError(
            f"{what}: unmatched_lines must be at most {MAX_UNMATCHED_LISTED} ascending line "
            "numbers of unmatched examples"
        )
    return DataFileRecord(
        row["name"], row["sha256"], row["examples"], row["matched"], row["repeated"],
        row["malformed"], tuple(lines),
    )  # fmt: skip
