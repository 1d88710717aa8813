"""The training manifest: which bytes of which contribution every example came from.

Proof of Attribution scores a model's answers against the data it was trained on, so the
manifest names, for every example of the job (train and eval), its contribution id, CID,
contributor, JSONL line and byte range, and a sha256 of its normalized content; with the
Datanet id, version and manifest CID, the base model and every setting of the job. It is
canonical JSON (sorted keys, no spaces), so the same job gives the same bytes and CID, and
anyone holding the Datanet version can check it: :meth:`TrainingManifest.verify_against`
(every example is an approved contribution of that version) and
:meth:`TrainingManifest.verify_data` (every byte range holds the content hashed).

An adapter trained outside ModelFactory and imported (schema 3) has no job: its manifest holds
instead an import record (:mod:`backend.modelfactory.import_record`) saying how its examples
were established, and lists only examples matched to the version by content.

The format's types, its builders, its checks against the data and its strict reader are one
file because they change together: a field is added to all four in one diff.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from eth_utils import is_hex_address

from backend.datanets.manifest import Manifest
from backend.modelfactory.dataset import BuildReport, Example, VersionData, build_examples
from backend.modelfactory.import_record import ImportRecord, ImportRecordError
from backend.modelfactory.spec import JobSpec, JobSpecError
from backend.protocol.json_fields import exact_keys, is_sha256, is_uint
from backend.storage.cid import CID, InvalidCIDError

SCHEMA_VERSION = 2  # 2 adds "attribution": the CID of the job's attribution index
IMPORT_SCHEMA_VERSION = 3  # an imported adapter: "import" instead of a job ("job": null)
READABLE_SCHEMAS = (1, 2, 3)
SPLITS = ("train", "eval")
MAX_PROBLEMS_NAMED = 10
_TOP_KEYS = {
    "schema_version", "datanet_id", "version", "datanet_manifest_cid", "base_model", "job",
    "build", "examples", "unused",
}  # fmt: skip
_EXAMPLE_KEYS = {
    "index", "split", "contribution_id", "cid", "contributor", "line", "byte_start", "byte_end",
    "content_sha256",
}  # fmt: skip
_BUILD_KEYS = {"total_rows", "kept", "skipped", "max_chars"}


class ProvenanceError(ValueError):
    """A training manifest that is malformed, or does not match the data it names."""


@dataclass(frozen=True)
class ExampleRecord:
    """Where example ``index`` came from: ``files[contribution_id][byte_start:byte_end]``."""

    index: int
    split: str  # "train" or "eval"
    contribution_id: int
    cid: str
    contributor: str
    line: int | None  # 1-based JSONL line; None for text
    byte_start: int
    byte_end: int
    content_sha256: str

    @classmethod
    def of(cls, index: int, split: str, example: Example) -> ExampleRecord:
        return cls(
            index, split, example.contribution_id, example.cid, example.contributor,
            example.line, example.byte_start, example.byte_end, example.content_sha256,
        )  # fmt: skip


@dataclass(frozen=True)
class BuildCounts:
    total_rows: int
    kept: int
    skipped: int
    max_chars: int  # the text chunk bound the examples were built with


@dataclass(frozen=True)
class TrainingManifest:
    datanet_id: int
    version: int
    datanet_manifest_cid: str
    base_model: str  # "smollm2" or the model folder's name
    base_model_cid: str | None
    job: JobSpec | None  # None for an imported adapter (schema 3): see ``imported``
    build: BuildCounts
    examples: tuple[ExampleRecord, ...]  # train first, then eval; record i has index i
    unused: tuple[int, ...] = ()  # indices of train examples no loss was taken on (too long)
    attribution: str | None = None  # CID of the attribution index's index.json (schema 2)
    schema_version: int = SCHEMA_VERSION
    imported: ImportRecord | None = None  # schema 3: how an imported adapter's examples are known

    @property
    def method(self) -> str:
        """How the examples were trained on ("sft" or "dpo"): the job's method, or what the
        developer of an imported adapter declared."""
        if self.job is not None:
            return self.job.method
        assert self.imported is not None  # schema 3 holds one or the other
        return self.imported.method

    def split(self, name: str) -> list[ExampleRecord]:
        return [r for r in self.examples if r.split == name]

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.schema_version >= 2:
            extra["attribution"] = self.attribution
        if self.schema_version >= IMPORT_SCHEMA_VERSION:
            extra["import"] = None if self.imported is None else self.imported.to_json()
        return {
            **extra,
            "schema_version": self.schema_version,
            "datanet_id": self.datanet_id,
            "version": self.version,
            "datanet_manifest_cid": self.datanet_manifest_cid,
            "base_model": {"name": self.base_model, "cid": self.base_model_cid},
            "job": None if self.job is None else self.job.to_json(),
            "build": asdict(self.build),
            "examples": [
                {key: getattr(r, key) for key in sorted(_EXAMPLE_KEYS)} for r in self.examples
            ],
            "unused": list(self.unused),
        }

    def to_json_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, one trailing newline."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return text.encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str | dict[str, Any]) -> TrainingManifest:
        """Parses a training manifest; :class:`ProvenanceError` names what is wrong."""
        return _parse(raw)

    def verify_against(self, manifest: Manifest) -> None:
        """Every example comes from a contribution of ``manifest`` (this Datanet version),
        under the same CID and contributor; else :class:`ProvenanceError` naming them."""
        if (manifest.datanet_id, manifest.version) != (self.datanet_id, self.version):
            raise ProvenanceError(
                f"the training manifest is of datanet {self.datanet_id} version {self.version}, "
                f"the version manifest of datanet {manifest.datanet_id} version {manifest.version}"
            )
        _raise_problems(_origin_problems(self.examples, manifest))

    def verify_data(self, data: VersionData) -> None:
        """Every example's byte range in ``data`` holds the content its hash names (the
        examples are rebuilt with the same ``max_chars``)."""
        if data.manifest_cid != self.datanet_manifest_cid:
            raise ProvenanceError(
                f"the data is of version manifest {data.manifest_cid}, "
                f"not {self.datanet_manifest_cid}"
            )
        self.verify_against(data.manifest)
        rebuilt, _ = build_examples(data, self.build.max_chars)
        hashes = {(e.contribution_id, e.byte_start, e.byte_end): e.content_sha256 for e in rebuilt}
        problems = []
        for r in self.examples:
            found = hashes.get((r.contribution_id, r.byte_start, r.byte_end))
            if found != r.content_sha256:
                what = "no example" if found is None else "other content"
                problems.append(
                    f"example {r.index}: contribution {r.contribution_id} bytes "
                    f"{r.byte_start}-{r.byte_end} hold {what}"
                )
        _raise_problems(problems)


def build_training_manifest(
    spec: JobSpec,
    data: VersionData,
    report: BuildReport,
    train: Sequence[Example],
    eval_examples: Sequence[Example],
    base_model: str,
    base_model_cid: str | None = None,
    max_chars: int = 2000,
    unused: Sequence[int] = (),
    attribution: str | None = None,
) -> TrainingManifest:
    """The manifest of a job that trained on ``train`` and held out ``eval_examples``, both
    built from ``data`` with ``max_chars``; ``unused`` are indices into ``train`` (the SFT
    result's ``dropped``). Refuses examples that are not of ``data``'s version."""
    if (spec.datanet_id, spec.version) != (data.datanet_id, data.version):
        raise ProvenanceError(
            f"the job is for datanet {spec.datanet_id} version {spec.version}, the data is "
            f"datanet {data.datanet_id} version {data.version}"
        )
    records = [ExampleRecord.of(i, "train", e) for i, e in enumerate(train)]
    records += [ExampleRecord.of(len(records) + i, "eval", e) for i, e in enumerate(eval_examples)]
    bad_unused = [i for i in unused if not 0 <= i < len(train)]
    problems = [f"unused indices {bad_unused} are not train examples"] if bad_unused else []
    return _checked_manifest(
        data, report, max_chars, base_model, base_model_cid, records, problems, job=spec,
        unused=tuple(sorted(set(unused))), attribution=attribution,
    )  # fmt: skip


def build_import_manifest(
    record: ImportRecord,
    data: VersionData,
    report: BuildReport,
    matched: Sequence[Example],
    base_model: str,
    base_model_cid: str | None = None,
    max_chars: int = 2000,
) -> TrainingManifest:
    """The manifest of an imported adapter (schema 3): ``matched`` are examples of ``data``
    (built with ``max_chars``) the developer's training data was matched to, all "train"."""
    records = [ExampleRecord.of(i, "train", e) for i, e in enumerate(matched)]
    return _checked_manifest(
        data, report, max_chars, base_model, base_model_cid, records, [], job=None,
        schema_version=IMPORT_SCHEMA_VERSION, imported=record,
    )  # fmt: skip


def _checked_manifest(
    data: VersionData,
    report: BuildReport,
    max_chars: int,
    base_model: str,
    base_model_cid: str | None,
    records: list[ExampleRecord],
    problems: list[str],
    **rest: Any,
) -> TrainingManifest:
    """The manifest of ``records`` (examples of ``data`` built with ``max_chars``) and the
    fields in ``rest``; refused with the records' problems and then ``problems``."""
    _raise_problems(_record_problems(records, data.manifest) + problems)
    return TrainingManifest(
        datanet_id=data.datanet_id,
        version=data.version,
        datanet_manifest_cid=data.manifest_cid,
        base_model=base_model,
        base_model_cid=base_model_cid,
        build=BuildCounts(report.total_rows, report.kept, report.skipped, max_chars),
        examples=tuple(records),
        **rest,
    )


def _record_problems(records: Sequence[ExampleRecord], manifest: Manifest) -> list[str]:
    """Rows listed twice, and rows that are not contributions of ``manifest``."""
    seen: dict[tuple[int, int, int], int] = {}
    problems = []
    for r in records:
        where = (r.contribution_id, r.byte_start, r.byte_end)
        if where in seen:
            problems.append(f"examples {seen[where]} and {r.index} are the same row")
        seen[where] = r.index
    return problems + _origin_problems(records, manifest)


def _origin_problems(records: Sequence[ExampleRecord], manifest: Manifest) -> list[str]:
    entries = {e.id: e for e in manifest.contributions}
    problems = []
    for r in records:
        entry = entries.get(r.contribution_id)
        if entry is None:
            problems.append(f"example {r.index}: contribution {r.contribution_id} is not in it")
        elif entry.cid != r.cid:
            problems.append(
                f"example {r.index}: contribution {r.contribution_id} has CID {entry.cid}, "
                f"not {r.cid}"
            )
        elif entry.contributor != r.contributor:
            problems.append(
                f"example {r.index}: contribution {r.contribution_id} is by {entry.contributor}, "
                f"not {r.contributor}"
            )
    return problems


def _raise_problems(problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_NAMED])
        more = f" (and {len(problems) - MAX_PROBLEMS_NAMED} more)"
        raise ProvenanceError(shown + (more if len(problems) > MAX_PROBLEMS_NAMED else ""))


# --- parsing ---------------------------------------------------------------------------------


def _cid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ProvenanceError(f"{what} must be a CID string, not {value!r}")
    try:
        CID.parse(value)
    except InvalidCIDError as why:
        raise ProvenanceError(f"{what} {value!r} is not a CID: {why}") from None
    return value


def _object(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    return exact_keys(value, keys, what, ProvenanceError)


def _record(index: int, row: Any) -> ExampleRecord:
    what = f"example {index}"
    row = _object(row, _EXAMPLE_KEYS, what)
    for key in ("index", "contribution_id", "byte_start", "byte_end"):
        if not is_uint(row[key]):
            raise ProvenanceError(f"{what}: {key} must be a non-negative integer")
    if row["index"] != index:
        raise ProvenanceError(f"{what} has index {row['index']}")
    if row["split"] not in SPLITS:
        raise ProvenanceError(f"{what}: split {row['split']!r}, not one of {list(SPLITS)}")
    line = row["line"]
    if line is not None and (not is_uint(line) or line == 0):
        raise ProvenanceError(f"{what}: line must be a positive integer or null, not {line!r}")
    if row["byte_start"] > row["byte_end"]:
        raise ProvenanceError(f"{what}: byte range {row['byte_start']}-{row['byte_end']}")
    if not isinstance(row["contributor"], str) or not is_hex_address(row["contributor"]):
        raise ProvenanceError(f"{what}: contributor {row['contributor']!r} is not an address")
    sha = row["content_sha256"]
    if not is_sha256(sha):
        raise ProvenanceError(f"{what}: content_sha256 must be 64 lowercase hex digits")
    return ExampleRecord(
        index, row["split"], row["contribution_id"], _cid(row["cid"], f"{what}: cid"),
        row["contributor"], line, row["byte_start"], row["byte_end"], sha,
    )  # fmt: skip


def _parse(raw: bytes | str | dict[str, Any]) -> TrainingManifest:
    try:
        data = raw if isinstance(raw, dict) else json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as why:
        raise ProvenanceError(f"the training manifest is not JSON: {why}") from None
    if not isinstance(data, dict):
        raise ProvenanceError("the training manifest must be a JSON object")
    schema = data.get("schema_version")
    if not is_uint(schema) or schema not in READABLE_SCHEMAS:
        raise ProvenanceError(
            f"schema_version {schema!r}; this code reads {list(READABLE_SCHEMAS)}"
        )
    imported_schema = schema == IMPORT_SCHEMA_VERSION
    keys = _TOP_KEYS | ({"attribution"} if schema >= 2 else set())
    keys |= {"import"} if imported_schema else set()
    what = f"the training manifest (schema_version {schema})"
    data = _object(data, keys, what if imported_schema else "the training manifest")
    attribution = data.get("attribution")
    if attribution is not None:
        attribution = _cid(attribution, "attribution")
    for key in ("datanet_id", "version"):
        if not is_uint(data[key]):
            raise ProvenanceError(f"{key} must be a non-negative integer, not {data[key]!r}")
    manifest_cid = _cid(data["datanet_manifest_cid"], "datanet_manifest_cid")
    base = _object(data["base_model"], {"name", "cid"}, "base_model")
    if not isinstance(base["name"], str) or not base["name"]:
        raise ProvenanceError("base_model.name must be a non-empty string")
    base_cid = None if base["cid"] is None else _cid(base["cid"], "base_model.cid")
    job, imported = _job_or_import(data, imported_schema)
    if job is not None and (job.datanet_id, job.version) != (data["datanet_id"], data["version"]):
        raise ProvenanceError(
            f"the job is for datanet {job.datanet_id} version {job.version}, the manifest "
            f"names datanet {data['datanet_id']} version {data['version']}"
        )
    build = _object(data["build"], _BUILD_KEYS, "build")
    if not all(is_uint(build[k]) for k in _BUILD_KEYS) or build["max_chars"] == 0:
        raise ProvenanceError("build counts must be non-negative integers (max_chars positive)")
    if build["kept"] + build["skipped"] != build["total_rows"]:
        raise ProvenanceError("build: kept + skipped differs from total_rows")
    rows = data["examples"]
    if not isinstance(rows, list):
        raise ProvenanceError("examples must be a list")
    records = tuple(_record(i, row) for i, row in enumerate(rows))
    splits = [r.split for r in records]
    if splits != sorted(splits, key=lambda s: SPLITS.index(s)):
        raise ProvenanceError("examples must list every train example before the eval ones")
    unused = data["unused"]
    train_count = splits.count("train")
    if not isinstance(unused, list) or not all(is_uint(i) and i < train_count for i in unused):
        raise ProvenanceError("unused must be a list of train example indices")
    if unused != sorted(set(unused)):
        raise ProvenanceError("unused must be sorted without repeats")
    return TrainingManifest(
        datanet_id=data["datanet_id"],
        version=data["version"],
        datanet_manifest_cid=manifest_cid,
        base_model=base["name"],
        base_model_cid=base_cid,
        job=job,
        build=BuildCounts(**{k: build[k] for k in _BUILD_KEYS}),
        examples=records,
        unused=tuple(unused),
        attribution=attribution,
        schema_version=schema,
        imported=imported,
    )


def _job_or_import(
    data: dict[str, Any], imported_schema: bool
) -> tuple[JobSpec | None, ImportRecord | None]:
    """A ModelFactory job's spec, or (schema 3) an imported adapter's import record."""
    if imported_schema:
        if data["job"] is not None:
            raise ProvenanceError("an imported adapter's manifest has no job (job must be null)")
        try:
            return None, ImportRecord.from_json(data["import"])
        except ImportRecordError as why:
            raise ProvenanceError(str(why)) from None
    try:
        return JobSpec.from_json(data["job"]), None
    except JobSpecError as why:
        raise ProvenanceError(f"job: {why}") from None
