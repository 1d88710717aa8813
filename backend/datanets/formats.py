"""Datanet metadata and the data formats contributions are checked against.

A Datanet's metadata (stored by CID, named on-chain) says what it is, under which licence, in
which format, and how large a file may be. Every contribution is validated against it before
anything is stored or sent on-chain; a bad file is refused with the line and the reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from backend.protocol.canonical import canonical_json

METADATA_SCHEMA_VERSION = 1
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ERRORS_REPORTED = 20
CHAT_ROLES = frozenset({"system", "user", "assistant"})


class DataFormat(StrEnum):
    TEXT = "text"  # UTF-8 plain text
    INSTRUCTION = "instruction"  # JSONL {"prompt": str, "response": str}
    CHAT = "chat"  # JSONL {"messages": [{"role": ..., "content": str}, ...]}
    PREFERENCE = "preference"  # JSONL {"prompt": str, "chosen": str, "rejected": str}


class MetadataError(ValueError):
    """Datanet metadata that is malformed or incomplete."""


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based; 0 for the whole file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


class ContributionFormatError(ValueError):
    """A contribution that does not match its Datanet's format; ``errors`` says where and why."""

    def __init__(self, data_format: DataFormat, errors: list[LineError], total: int) -> None:
        shown = "; ".join(str(e) for e in errors)
        more = f" (and {total - len(errors)} more)" if total > len(errors) else ""
        super().__init__(f"not valid {data_format.value} data: {shown}{more}")
        self.data_format = data_format
        self.errors = errors
        self.total = total


@dataclass(frozen=True)
class DatanetMetadata:
    """What a Datanet is. Stored as canonical JSON in the content store."""

    name: str
    description: str
    license: str  # an SPDX identifier, e.g. CC-BY-4.0
    format: DataFormat
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    schema_version: int = METADATA_SCHEMA_VERSION

    def to_json_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the same metadata gives the same CID."""
        data = {**asdict(self), "format": self.format.value}
        return canonical_json(data, newline=False)

    @classmethod
    def from_json(cls, raw: bytes | str | dict[str, Any]) -> DatanetMetadata:
        try:
            data = raw if isinstance(raw, dict) else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as why:
            raise MetadataError(f"Datanet metadata is not JSON: {why}") from None
        if not isinstance(data, dict):
            raise MetadataError("Datanet metadata must be a JSON object")
        missing = [k for k in ("name", "description", "license", "format") if not data.get(k)]
        if missing:
            raise MetadataError(f"Datanet metadata lacks {', '.join(missing)}")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise MetadataError(
                f"Datanet metadata has unknown fields: {', '.join(sorted(unknown))}"
            )
        for key in ("name", "description", "license"):
            if not isinstance(data[key], str):
                raise MetadataError(f"Datanet metadata field {key!r} must be a string")
        try:
            data_format = DataFormat(data["format"])
        except ValueError:
            choices = ", ".join(f.value for f in DataFormat)
            raise MetadataError(
                f"unknown data format {data['format']!r}; one of {choices}"
            ) from None
        max_bytes = data.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise MetadataError(f"max_file_bytes must be a positive integer, not {max_bytes!r}")
        version = data.get("schema_version", METADATA_SCHEMA_VERSION)
        if version != METADATA_SCHEMA_VERSION:
            raise MetadataError(f"metadata schema_version {version!r}; this code reads 1")
        return cls(
            name=data["name"], description=data["description"], license=data["license"],
            format=data_format, max_file_bytes=max_bytes,
        )  # fmt: skip


def _check_text_fields(record: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    for name in fields:
        value = record.get(name)
        if not isinstance(value, str):
            return f"field {name!r} must be a string" if name in record else f"missing {name!r}"
        if not value.strip():
            return f"field {name!r} is empty"
    return None


def record_problem(data_format: DataFormat, record: Any) -> str | None:
    """What is wrong with one parsed JSONL row of ``data_format`` (None: nothing)."""
    if not isinstance(record, dict):
        return "each line must be a JSON object"
    if data_format is DataFormat.INSTRUCTION:
        return _check_text_fields(record, ("prompt", "response"))
    if data_format is DataFormat.PREFERENCE:
        problem = _check_text_fields(record, ("prompt", "chosen", "rejected"))
        if problem is None and record["chosen"] == record["rejected"]:
            return "'chosen' and 'rejected' are the same answer"
        return problem
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            return f"message {i} needs a role among {', '.join(sorted(CHAT_ROLES))}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f"message {i} needs non-empty string content"
    roles = {m["role"] for m in messages}
    if not {"user", "assistant"} <= roles:
        return "a chat needs at least one user and one assistant message"
    return None


def validate_contribution(metadata: DatanetMetadata, data: bytes) -> int:
    """Checks ``data`` against the Datanet's format and limits; returns its record count
    (lines of JSONL, or 1 for text). Raises :class:`ContributionFormatError`."""
    fmt = metadata.format
    if len(data) > metadata.max_file_bytes:
        reason = f"{len(data)} bytes, above this Datanet's limit of {metadata.max_file_bytes}"
        raise ContributionFormatError(fmt, [LineError(0, reason)], 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as why:
        line = data[: why.start].count(b"\n") + 1
        raise ContributionFormatError(fmt, [LineError(line, "not UTF-8 text")], 1) from None
    if not text.strip():
        raise ContributionFormatError(fmt, [LineError(0, "the file is empty")], 1)
    if fmt is DataFormat.TEXT:
        return 1
    errors: list[LineError] = []
    total_errors = records = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        records += 1
        try:
            problem = record_problem(fmt, json.loads(line))
        except json.JSONDecodeError as why:
            problem = f"not JSON ({why.msg})"
        if problem is not None:
            total_errors += 1
            if len(errors) < MAX_ERRORS_REPORTED:
                errors.append(LineError(number, problem))
    if total_errors:
        raise ContributionFormatError(fmt, errors, total_errors)
    return records
