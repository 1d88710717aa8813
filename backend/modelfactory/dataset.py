"""A Datanet version as training examples, each one traceable to the bytes it came from.

The version's manifest, metadata and every contribution are fetched by CID and verified: a
job never trains on bytes other than those the curators approved. Contributions are then cut
into examples per the Datanet's format, each carrying its contribution id, CID, contributor,
line and byte range, which is what the training manifest (and Proof of Attribution) records.
A malformed row is skipped and counted, never fatal: one bad line must not stop a job over a
version of thousands. The train/eval split is by hash of each example's position, so it does
not depend on the order examples arrive in, and the same row always lands on the same side.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.datanets.formats import (
    DataFormat,
    DatanetMetadata,
    MetadataError,
    record_problem,
)
from backend.datanets.manifest import Manifest, ManifestError
from backend.storage.base import (
    CIDMismatchError,
    ContentNotFoundError,
    ContentStore,
    ContentStoreError,
    ContentTooLargeError,
)
from backend.storage.unixfs import compute_cid

log = logging.getLogger(__name__)

MAX_SKIPPED_LISTED = 50  # skipped rows named in a build report; the rest are only counted
MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists ids and CIDs: far below this
MAX_METADATA_BYTES = 1 << 20


class DatasetError(RuntimeError):
    """The version's data cannot be used as a whole (missing, tampered, inconsistent)."""


@dataclass(frozen=True)
class VersionData:
    """Every verified byte of one Datanet version."""

    datanet_id: int
    version: int
    manifest_cid: str
    metadata: DatanetMetadata
    manifest: Manifest
    files: dict[int, bytes]  # contribution id -> its verified content


def _fetch(store: ContentStore, cid: str, what: str, max_bytes: int) -> bytes:
    try:
        return store.get(cid, max_bytes=max_bytes)
    except CIDMismatchError as why:
        raise DatasetError(
            f"{what}: content stored under {cid} hashes to {why.actual}; refusing to train on it"
        ) from None
    except ContentNotFoundError:
        raise DatasetError(f"{what}: no content stored under {cid}") from None
    except ContentTooLargeError:
        raise DatasetError(f"{what}: content under {cid} exceeds {max_bytes} bytes") from None
    except ContentStoreError as why:
        raise DatasetError(f"{what}: cannot read {cid}: {why}") from None
    except ValueError as why:  # the store refuses a string that is not a CID
        raise DatasetError(f"{what}: {cid!r} is not a CID: {why}") from None


def load_version_data(
    store: ContentStore, datanet_id: int, version: int, manifest_cid: str, metadata_cid: str
) -> VersionData:
    """Fetches and verifies version ``version`` of Datanet ``datanet_id``.

    Raises :class:`DatasetError` naming the contribution id and CID of any content that is
    missing or does not hash to its CID, and refuses a manifest of another Datanet or version.
    """
    raw_manifest = _fetch(store, manifest_cid, "the version manifest", MAX_MANIFEST_BYTES)
    try:
        manifest = Manifest.from_json(raw_manifest)
    except ManifestError as why:
        raise DatasetError(f"the version manifest {manifest_cid}: {why}") from None
    if (manifest.datanet_id, manifest.version) != (datanet_id, version):
        raise DatasetError(
            f"manifest {manifest_cid} is of datanet {manifest.datanet_id} version "
            f"{manifest.version}, not datanet {datanet_id} version {version}"
        )
    raw_metadata = _fetch(store, metadata_cid, "the Datanet metadata", MAX_METADATA_BYTES)
    try:
        metadata = DatanetMetadata.from_json(raw_metadata)
    except MetadataError as why:
        raise DatasetError(f"the Datanet metadata {metadata_cid}: {why}") from None
    files: dict[int, bytes] = {}
    for entry in manifest.contributions:
        if entry.id in files:
            raise DatasetError(f"manifest {manifest_cid} lists contribution {entry.id} twice")
        limit = max(metadata.max_file_bytes, entry.size)
        data = _fetch(store, entry.cid, f"contribution {entry.id}", limit)
        if len(data) != entry.size:
            log.warning(
                "contribution %d (%s): %d bytes, declared %d; the CID is authoritative",
                entry.id, entry.cid, len(data), entry.size,
            )  # fmt: skip
        files[entry.id] = data
    log.info(
        "datanet %d version %d: %d contributions, %d bytes, verified",
        datanet_id, version, len(files), sum(map(len, files.values())),
    )  # fmt: skip
    return VersionData(datanet_id, version, manifest_cid, metadata, manifest, files)


@dataclass(frozen=True)
class Example:
    """One training example and where it came from.

    ``data.files[contribution_id][byte_start:byte_end]`` are exactly the bytes of the record
    (a JSONL line without its newline, or the text of a chunk). Fields unused by ``kind`` are
    ``None``.
    """

    contribution_id: int
    cid: str
    contributor: str
    line: int | None  # 1-based JSONL line; None for text
    byte_start: int
    byte_end: int
    kind: str  # a DataFormat value
    prompt: str | None = None  # instruction, preference
    response: str | None = None  # instruction
    messages: tuple[tuple[str, str], ...] | None = None  # chat: (role, content)
    chosen: str | None = None  # preference
    rejected: str | None = None  # preference
    text: str | None = None  # text

    def content(self) -> dict[str, Any]:
        """What the example says, without where it came from (its normalized form)."""
        data: dict[str, Any] = {"kind": self.kind}
        for name in ("prompt", "response", "chosen", "rejected", "text"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.messages is not None:
            data["messages"] = [list(m) for m in self.messages]
        return data

    @property
    def content_sha256(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`content`."""
        raw = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class SkippedRow:
    contribution_id: int
    line: int  # 1-based; 0 for the whole file
    reason: str


@dataclass
class BuildReport:
    """How many rows the version had, how many became examples, and why the rest did not."""

    total_rows: int = 0
    kept: int = 0
    skipped: int = 0
    skipped_rows: list[SkippedRow] = field(default_factory=list)  # the first 50

    def skip(self, contribution_id: int, line: int, reason: str) -> None:
        self.total_rows += 1
        self.skipped += 1
        if len(self.skipped_rows) < MAX_SKIPPED_LISTED:
            self.skipped_rows.append(SkippedRow(contribution_id, line, reason))

    def keep(self) -> None:
        self.total_rows += 1
        self.kept += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "total_rows": self.total_rows,
            "kept": self.kept,
            "skipped": self.skipped,
            "skipped_rows": [
                {"contribution_id": s.contribution_id, "line": s.line, "reason": s.reason}
                for s in self.skipped_rows
            ],
        }


def _lines(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(number, start, end)`` of every line (1-based, as formats.py counts them), the byte
    range without the newline."""
    start = 0
    number = 1
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            yield number, start, len(data)
            return
        yield number, start, end
        start, number = end + 1, number + 1


def _record_example(base: dict[str, Any], fmt: DataFormat, record: dict[str, Any]) -> Example:
    if fmt is DataFormat.INSTRUCTION:
        return Example(**base, prompt=record["prompt"], response=record["response"])
    if fmt is DataFormat.PREFERENCE:
        return Example(
            **base, prompt=record["prompt"], chosen=record["chosen"], rejected=record["rejected"]
        )
    messages = tuple((m["role"], m["content"]) for m in record["messages"])
    return Example(**base, messages=messages)


def _jsonl_examples(
    data: bytes, fmt: DataFormat, origin: dict[str, Any], report: BuildReport
) -> Iterator[Example]:
    contribution_id = origin["contribution_id"]
    for number, start, end in _lines(data):
        raw = data[start:end]
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            report.skip(contribution_id, number, "not UTF-8 text")
            continue
        except json.JSONDecodeError as why:
            report.skip(contribution_id, number, f"not JSON ({why.msg})")
            continue
        except RecursionError:
            report.skip(contribution_id, number, "JSON nested too deeply")
            continue
        problem = record_problem(fmt, record)
        if problem is not None:
            report.skip(contribution_id, number, problem)
            continue
        report.keep()
        base = {**origin, "line": number, "byte_start": start, "byte_end": end, "kind": fmt.value}
        yield _record_example(base, fmt, record)


def _text_examples(
    data: bytes, max_chars: int, origin: dict[str, Any], report: BuildReport
) -> Iterator[Example]:
    """Chunks of whole lines of at most ``max_chars`` characters (a longer line is cut into
    pieces of ``max_chars``); blank lines between chunks are left out."""
    contribution_id = origin["contribution_id"]
    chunk: list[tuple[int, int, str]] = []  # (start, end, text) of the chunk's lines

    def flush() -> Iterator[Example]:
        while chunk and not chunk[-1][2].strip():
            chunk.pop()
        if chunk:
            start, end = chunk[0][0], chunk[-1][1]
            text = "\n".join(piece for _, _, piece in chunk)
            chunk.clear()
            report.keep()
            yield Example(
                **origin, line=None, byte_start=start, byte_end=end,
                kind=DataFormat.TEXT.value, text=text,
            )  # fmt: skip

    if not data.strip():
        report.skip(contribution_id, 0, "the file is empty")
        return
    for number, start, end in _lines(data):
        try:
            line = data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            yield from flush()
            report.skip(contribution_id, number, "not UTF-8 text")
            continue
        if not chunk and not line.strip():
            continue
        pieces = [(start, end, line)]
        if len(line) > max_chars:
            yield from flush()
            pieces, offset = [], start
            for i in range(0, len(line), max_chars):
                piece = line[i : i + max_chars]
                size = len(piece.encode("utf-8"))
                pieces.append((offset, offset + size, piece))
                offset += size
        for piece in pieces:
            length = sum(len(t) + 1 for _, _, t in chunk) + len(piece[2])
            if chunk and length > max_chars:
                yield from flush()
                if not piece[2].strip():
                    continue
            chunk.append(piece)
    yield from flush()


def _examples_of(
    content: bytes, fmt: DataFormat, origin: dict[str, Any], report: BuildReport, max_chars: int
) -> Iterator[Example]:
    if fmt is DataFormat.TEXT:
        return _text_examples(content, max_chars, origin, report)
    return _jsonl_examples(content, fmt, origin, report)


def contribution_examples(
    content: bytes,
    fmt: DataFormat,
    contribution_id: int,
    contributor: str,
    max_chars: int = 2000,
) -> tuple[list[Example], BuildReport]:
    """The examples of one contribution's bytes, cut exactly as :func:`build_examples` cuts
    them (its CID computed here): for data that is not (yet) a published version."""
    origin = {"contribution_id": contribution_id, "cid": compute_cid(content),
              "contributor": contributor}  # fmt: skip
    report = BuildReport()
    return list(_examples_of(content, fmt, origin, report, max_chars)), report


def build_examples(data: VersionData, max_chars: int = 2000) -> tuple[list[Example], BuildReport]:
    """The examples of every contribution, in contribution-id then byte order.

    JSONL rows are checked by the same rules contributions were validated with
    (backend.datanets.formats); a row that fails is skipped and counted in the report.
    ``max_chars`` bounds the chunks plain text is cut into.
    """
    if not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive integer, not {max_chars!r}")
    fmt = data.metadata.format
    report = BuildReport()
    examples: list[Example] = []
    for entry in data.manifest.contributions:
        content = data.files.get(entry.id)
        if content is None:
            raise DatasetError(f"contribution {entry.id} ({entry.cid}) was not fetched")
        origin = {"contribution_id": entry.id, "cid": entry.cid, "contributor": entry.contributor}
        examples.extend(_examples_of(content, fmt, origin, report, max_chars))
    if report.skipped:
        log.warning(
            "datanet %d version %d: %d of %d rows skipped (first: %s)",
            data.datanet_id, data.version, report.skipped, report.total_rows,
            report.skipped_rows[0],
        )  # fmt: skip
    return examples, report


def _split_key(example: Example, seed: int) -> int:
    where = f"{example.line}:{example.byte_start}-{example.byte_end}"
    digest = hashlib.sha256(f"{seed}\x00{example.cid}\x00{where}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _position(example: Example) -> tuple[int, int, int]:
    return (example.contribution_id, example.byte_start, example.byte_end)


def split_examples(
    examples: Sequence[Example], eval_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """``(train, eval)``: an example is held out when the hash of (seed, CID, position) falls
    below ``eval_fraction``. Independent of input order; both lists come in position order.

    With at least two examples and ``eval_fraction > 0`` neither side is empty (the example
    with the lowest or highest hash moves over).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), not {eval_fraction!r}")
    threshold = int(eval_fraction * 2**64)
    keyed = sorted(
        (((_split_key(e, seed), _position(e)), e) for e in examples), key=lambda pair: pair[0]
    )
    held = [k[0] < threshold for k, _ in keyed]
    if eval_fraction > 0 and len(keyed) >= 2:
        if not any(held):
            held[0] = True
        if all(held):
            held[-1] = False
    train = sorted((e for (_, e), h in zip(keyed, held, strict=True) if not h), key=_position)
    held_out = sorted((e for (_, e), h in zip(keyed, held, strict=True) if h), key=_position)
    return train, held_out
