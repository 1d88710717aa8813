"""The training manifest: complete (every example of the job, each an approved contribution of
the version), canonical, checkable against the data, and strict about what it reads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from backend.datanets.formats import DataFormat
from backend.datanets.manifest import Manifest, ManifestEntry
from backend.modelfactory.dataset import (
    BuildReport,
    Example,
    VersionData,
    build_examples,
    load_version_data,
    split_examples,
)
from backend.modelfactory.import_record import DataFileRecord, ImportRecord, ImportRecordError
from backend.modelfactory.provenance import (
    ProvenanceError,
    TrainingManifest,
    build_import_manifest,
    build_training_manifest,
)
from backend.modelfactory.spec import JobSpec, TrainSettings
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from tests.modelfactory.test_dataset import DATANET, VERSION, contributor, jsonl, store_version

SPEC = JobSpec(DATANET, VERSION, train=TrainSettings(eval_fraction=0.25, seed=3))
BASE_CID = compute_cid(b"base model weights")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> VersionData:
    store = DirectoryStore(tmp_path_factory.mktemp("store"))
    files = [
        jsonl(*({"prompt": f"q{c}.{i}", "response": f"a{c}.{i}"} for i in range(6)), b"bad row")
        for c in range(4)
    ]
    manifest_cid, metadata_cid = store_version(store, DataFormat.INSTRUCTION, files)
    return load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)


@pytest.fixture(scope="module")
def built(data: VersionData) -> tuple[list[Example], BuildReport]:
    return build_examples(data)


@pytest.fixture(scope="module")
def manifest(data: VersionData, built: tuple[list[Example], BuildReport]) -> TrainingManifest:
    examples, report = built
    train, held = split_examples(examples, SPEC.train.eval_fraction, SPEC.train.seed)
    return build_training_manifest(SPEC, data, report, train, held, "tiny", BASE_CID, unused=[1])


def test_every_example_is_recorded_with_its_origin(
    data: VersionData, built: tuple[list[Example], BuildReport], manifest: TrainingManifest
) -> None:
    examples, _ = built
    assert len(manifest.examples) == len(examples) == 24
    recorded = {(r.contribution_id, r.line, r.byte_start, r.byte_end) for r in manifest.examples}
    assert recorded == {(e.contribution_id, e.line, e.byte_start, e.byte_end) for e in examples}
    by_place = {(e.contribution_id, e.byte_start): e for e in examples}
    for r in manifest.examples:
        example = by_place[(r.contribution_id, r.byte_start)]
        assert (r.cid, r.contributor) == (example.cid, example.contributor)
        assert r.content_sha256 == example.content_sha256
        assert data.files[r.contribution_id][r.byte_start : r.byte_end].startswith(b'{"prompt"')
    assert [r.index for r in manifest.examples] == list(range(24))
    splits = [r.split for r in manifest.examples]
    assert splits == sorted(splits, key=("train", "eval").index) and "eval" in splits
    assert len(manifest.split("eval")) == len(split_examples(examples, 0.25, 3)[1])
    manifest.verify_against(data.manifest)  # every example: an approved contribution
    manifest.verify_data(data)  # every byte range holds the content hashed


def test_manifest_names_version_base_model_settings_and_counts(
    data: VersionData, manifest: TrainingManifest
) -> None:
    doc = json.loads(manifest.to_json_bytes())
    assert (doc["datanet_id"], doc["version"]) == (DATANET, VERSION)
    assert doc["datanet_manifest_cid"] == data.manifest_cid
    assert doc["base_model"] == {"name": "tiny", "cid": BASE_CID}
    assert doc["job"] == SPEC.to_json() and doc["job"]["train"]["seed"] == 3
    assert doc["build"] == {"total_rows": 28, "kept": 24, "skipped": 4, "max_chars": 2000}
    assert doc["unused"] == [1]


def test_json_is_canonical_and_round_trips(manifest: TrainingManifest) -> None:
    raw = manifest.to_json_bytes()
    assert (
        raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode() + b"\n"
    )
    again = TrainingManifest.from_json(raw)
    assert again == manifest and again.to_json_bytes() == raw


def test_example_from_another_contribution_or_cid_is_caught(
    data: VersionData, manifest: TrainingManifest
) -> None:
    entries = list(data.manifest.contributions)
    without_2 = Manifest.of(DATANET, VERSION, [e for e in entries if e.id != 2])
    with pytest.raises(ProvenanceError, match="contribution 2 is not in it"):
        manifest.verify_against(without_2)
    swapped = Manifest.of(
        DATANET, VERSION, [replace(e, cid=BASE_CID) if e.id == 3 else e for e in entries]
    )
    with pytest.raises(ProvenanceError, match=f"contribution 3 has CID {BASE_CID}"):
        manifest.verify_against(swapped)
    other = [ManifestEntry(e.id, e.cid, contributor(99), e.size) for e in entries]
    with pytest.raises(ProvenanceError, match="is by"):
        manifest.verify_against(Manifest.of(DATANET, VERSION, other))
    with pytest.raises(ProvenanceError, match=f"version {VERSION + 1}"):
        manifest.verify_against(Manifest.of(DATANET, VERSION + 1, entries))


def test_a_hash_or_range_that_does_not_match_the_data_is_caught(
    data: VersionData, manifest: TrainingManifest
) -> None:
    records = list(manifest.examples)
    records[5] = replace(records[5], content_sha256="0" * 64)
    with pytest.raises(ProvenanceError, match=r"example 5: .* hold other content"):
        replace(manifest, examples=tuple(records)).verify_data(data)
    records = list(manifest.examples)
    records[7] = replace(records[7], byte_start=records[7].byte_start + 1)
    with pytest.raises(ProvenanceError, match=r"example 7: .* hold no example"):
        replace(manifest, examples=tuple(records)).verify_data(data)


def test_build_refuses_examples_of_another_version(
    data: VersionData, built: tuple[list[Example], BuildReport]
) -> None:
    examples, report = built
    with pytest.raises(ProvenanceError, match="job is for datanet 3 version 9"):
        build_training_manifest(replace(SPEC, version=9), data, report, examples, [], "tiny")
    stranger = replace(examples[0], contribution_id=77)
    with pytest.raises(ProvenanceError, match="contribution 77 is not in it"):
        build_training_manifest(SPEC, data, report, [stranger], [], "tiny")
    with pytest.raises(ProvenanceError, match="examples 0 and 1 are the same row"):
        build_training_manifest(SPEC, data, report, examples[:1], examples[:1], "tiny")


def corrupt(doc: dict, path: tuple, value: object) -> dict:
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("schema_version",), 3, "schema_version 3"),
        (("extra",), 1, r"has unknown field\(s\) extra"),
        (("examples",), KeyError, r"lacks field\(s\) examples"),
        (("datanet_manifest_cid",), "not-a-cid", "is not a CID"),
        (("datanet_id",), 4, "the job is for datanet 3"),
        (("job", "lora", "rank"), 0, "job: lora.rank must be a positive integer"),
        (("base_model", "name"), "", "base_model.name"),
        (("build", "kept"), 3, "kept \\+ skipped"),
        (("examples", 0, "split"), "test", "example 0: split 'test'"),
        (("examples", 1, "index"), 5, "example 1 has index 5"),
        (("examples", 2, "line"), 0, "example 2: line must be"),
        (("examples", 3, "byte_end"), 0, "example 3: byte range"),
        (("examples", 4, "content_sha256"), "ab", "example 4: content_sha256"),
        (("examples", 5, "contributor"), "me", "example 5: contributor 'me'"),
        (("examples", 6, "cid"), KeyError, r"example 6 lacks field\(s\) cid"),
        (("examples", 0, "split"), "eval", "every train example before the eval"),
        (("unused",), [99], "unused must be"),
        (("attribution",), "not-a-cid", "attribution 'not-a-cid' is not a CID"),
        (("attribution",), KeyError, r"lacks field\(s\) attribution"),
    ],
)
def test_malformed_manifests_are_refused(
    manifest: TrainingManifest, path: tuple, value: object, error: str
) -> None:
    with pytest.raises(ProvenanceError, match=error):
        TrainingManifest.from_json(corrupt(manifest.to_json(), path, value))


def test_manifests_name_their_attribution_index_and_schema_1_still_reads(
    manifest: TrainingManifest,
) -> None:
    index = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    named = replace(manifest, attribution=index)
    assert TrainingManifest.from_json(named.to_json_bytes()).attribution == index
    assert json.loads(manifest.to_json_bytes())["attribution"] is None
    # a manifest written before attribution indexes: read, and written back byte for byte
    old = {k: v for k, v in manifest.to_json().items() if k != "attribution"}
    raw = json.dumps({**old, "schema_version": 1}, sort_keys=True, separators=(",", ":"))
    parsed = TrainingManifest.from_json(raw)
    assert parsed.attribution is None and parsed.to_json_bytes() == raw.encode() + b"\n"
    with pytest.raises(ProvenanceError, match=r"has unknown field\(s\) attribution"):
        TrainingManifest.from_json({**old, "schema_version": 1, "attribution": index})


@pytest.mark.parametrize("raw", [b"not json", b"[]", "\u00ff".encode("latin-1")])
def test_non_json_is_refused(raw: bytes) -> None:
    with pytest.raises(ProvenanceError, match=r"not JSON|JSON object"):
        TrainingManifest.from_json(raw)


def test_text_manifest_records_chunks_without_lines(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    text = "\n".join(f"line {i}" for i in range(50)).encode()
    manifest_cid, metadata_cid = store_version(store, DataFormat.TEXT, [text])
    data = load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)
    examples, report = build_examples(data, max_chars=100)
    train, held = split_examples(examples, 0.2, 0)
    made = build_training_manifest(SPEC, data, report, train, held, "tiny", max_chars=100)
    assert made.build.max_chars == 100 and made.base_model_cid is None
    assert all(r.line is None for r in made.examples) and len(made.examples) == len(examples)
    again = TrainingManifest.from_json(made.to_json_bytes())
    again.verify_data(data)  # rebuilt with the recorded max_chars
    with pytest.raises(ProvenanceError, match="hold no example"):
        replace(again, build=replace(again.build, max_chars=2000)).verify_data(data)


# Issue 13, point 16: an imported adapter's manifest (schema 3) has no job, but an import record


DATA_FILES = (DataFileRecord("train.jsonl", "ab" * 32, 5, 3, 1, 0, (4,)),)


def imported_manifest(
    data: VersionData, built: tuple[list[Example], BuildReport], evidence: str
) -> TrainingManifest:
    examples, report = built
    record = ImportRecord("sft", evidence, DATA_FILES if evidence == "content_sha256" else ())
    matched = examples[2:5] if evidence == "content_sha256" else []
    return build_import_manifest(record, data, report, matched, "tiny", BASE_CID)


@pytest.mark.parametrize("evidence", ["content_sha256", "declared_unverified"])
def test_imported_manifests_round_trip_and_check_against_the_data(
    data: VersionData, built: tuple[list[Example], BuildReport], evidence: str
) -> None:
    imported = imported_manifest(data, built, evidence)
    raw = imported.to_json_bytes()
    parsed = TrainingManifest.from_json(raw)
    assert parsed == imported and parsed.to_json_bytes() == raw
    assert parsed.schema_version == 3 and parsed.job is None and parsed.method == "sft"
    assert json.loads(raw)["import"]["evidence"] == evidence
    parsed.verify_against(data.manifest)
    parsed.verify_data(data)
    assert [r.split for r in parsed.examples] == ["train"] * len(parsed.examples)


def test_imported_manifests_list_only_examples_of_the_version(
    data: VersionData, built: tuple[list[Example], BuildReport]
) -> None:
    examples, report = built
    stranger = replace(examples[0], contribution_id=77)
    record = ImportRecord("sft", "content_sha256", DATA_FILES)
    with pytest.raises(ProvenanceError, match="contribution 77 is not in it"):
        build_import_manifest(record, data, report, [stranger], "tiny")
    with pytest.raises(ImportRecordError, match="data_files must list"):
        ImportRecord("sft", "declared_unverified", record.data_files)


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("import",), KeyError, r"schema_version 3\) lacks field\(s\) import"),
        (("job",), SPEC.to_json(), "job must be null"),
        (("import", "method"), "rlhf", "method 'rlhf'"),
        (("import", "evidence"), "trust me", "evidence 'trust me'"),
        (("import", "data_files"), [], "data_files must list"),
        (("import", "data_files", 0, "matched"), 9, "matched \\+ repeated exceeds examples"),
        (("import", "data_files", 0, "name"), "../x", "name must be a file name"),
        (("import", "data_files", 0, "unmatched_lines"), [4, 4], "unmatched_lines must be"),
        (("import", "data_files", 0, "sha256"), "ab", "sha256 must be 64"),
    ],
)
def test_malformed_imported_manifests_are_refused(
    data: VersionData, built: tuple[list[Example], BuildReport], path: tuple, value: object,
    error: str,
) -> None:  # fmt: skip
    doc = imported_manifest(data, built, "content_sha256").to_json()
    with pytest.raises(ProvenanceError, match=error):
        TrainingManifest.from_json(corrupt(doc, path, value))
