"""A Datanet version as examples: verified fetch, every format, bad rows counted, hash split."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.manifest import Manifest, ManifestEntry
from backend.modelfactory.dataset import (
    MAX_SKIPPED_LISTED,
    DatasetError,
    Example,
    VersionData,
    build_examples,
    load_version_data,
    split_examples,
)
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid

DATANET, VERSION = 3, 2


def contributor(n: int) -> str:
    return to_checksum_address(f"0x{n:040x}")


def store_version(
    store: DirectoryStore,
    fmt: DataFormat,
    files: list[bytes],
    datanet_id: int = DATANET,
    version: int = VERSION,
) -> tuple[str, str]:
    """Stores ``files`` as contributions 1..n of a version; ``(manifest_cid, metadata_cid)``."""
    metadata = DatanetMetadata("test", "a test Datanet", "CC0-1.0", fmt)
    metadata_cid = store.put(metadata.to_json_bytes())
    entries = [
        ManifestEntry(i, store.put(data), contributor(i), len(data))
        for i, data in enumerate(files, start=1)
    ]
    manifest = Manifest.of(datanet_id, version, entries)
    return store.put(manifest.to_json_bytes()), metadata_cid


def jsonl(*rows: object) -> bytes:
    return b"".join(
        (row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows
    )


def load(store: DirectoryStore, fmt: DataFormat, files: list[bytes]) -> VersionData:
    manifest_cid, metadata_cid = store_version(store, fmt, files)
    return load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


def assert_ranges_hold_their_rows(data: VersionData, examples: list[Example]) -> None:
    for e in examples:
        raw = data.files[e.contribution_id][e.byte_start : e.byte_end]
        if e.kind == DataFormat.TEXT.value:
            assert raw.decode() == e.text
            continue
        record = json.loads(raw)
        assert data.files[e.contribution_id].split(b"\n")[e.line - 1] == raw
        if e.kind == DataFormat.CHAT.value:
            assert e.messages == tuple((m["role"], m["content"]) for m in record["messages"])
        else:
            assert {k: getattr(e, k) for k in record} == record


def test_load_fetches_every_contribution_verified(store: DirectoryStore) -> None:
    files = [jsonl({"prompt": "a", "response": "b"}), jsonl({"prompt": "c", "response": "d"})]
    data = load(store, DataFormat.INSTRUCTION, files)
    assert (data.datanet_id, data.version) == (DATANET, VERSION)
    assert data.metadata.format is DataFormat.INSTRUCTION
    assert data.files == {1: files[0], 2: files[1]}
    assert [e.cid for e in data.manifest.contributions] == [compute_cid(f) for f in files]


def test_tampered_contribution_aborts_naming_it(store: DirectoryStore) -> None:
    files = [jsonl({"prompt": "a", "response": "b"}), jsonl({"prompt": "c", "response": "d"})]
    manifest_cid, metadata_cid = store_version(store, DataFormat.INSTRUCTION, files)
    cid = compute_cid(files[1])
    (store.root / "blocks" / cid).write_bytes(jsonl({"prompt": "c", "response": "EVIL"}))
    with pytest.raises(DatasetError, match=f"contribution 2: content stored under {cid} hashes"):
        load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)


def test_missing_contribution_aborts_naming_it(store: DirectoryStore) -> None:
    files = [jsonl({"prompt": "a", "response": "b"})]
    manifest_cid, metadata_cid = store_version(store, DataFormat.INSTRUCTION, files)
    cid = compute_cid(files[0])
    (store.root / "blocks" / cid).unlink()
    with pytest.raises(DatasetError, match=f"contribution 1: no content stored under {cid}"):
        load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)


def test_tampered_manifest_is_refused(store: DirectoryStore) -> None:
    manifest_cid, metadata_cid = store_version(store, DataFormat.TEXT, [b"hello"])
    (store.root / "blocks" / manifest_cid).write_bytes(b"{}")
    with pytest.raises(DatasetError, match="the version manifest: content stored under"):
        load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)


def test_manifest_entry_that_is_not_a_cid_aborts(store: DirectoryStore) -> None:
    metadata_cid = store.put(DatanetMetadata("t", "d", "CC0-1.0", DataFormat.TEXT).to_json_bytes())
    entry = ManifestEntry(5, "../../etc/passwd", contributor(5), 3)
    manifest_cid = store.put(Manifest.of(DATANET, VERSION, [entry]).to_json_bytes())
    with pytest.raises(
        DatasetError, match=re.escape("contribution 5: '../../etc/passwd' is not a CID")
    ):
        load_version_data(store, DATANET, VERSION, manifest_cid, metadata_cid)


@pytest.mark.parametrize(("datanet_id", "version"), [(DATANET + 1, VERSION), (DATANET, 1)])
def test_manifest_of_another_version_is_refused(
    store: DirectoryStore, datanet_id: int, version: int
) -> None:
    manifest_cid, metadata_cid = store_version(store, DataFormat.TEXT, [b"hello"])
    with pytest.raises(DatasetError, match=f"not datanet {datanet_id} version {version}"):
        load_version_data(store, datanet_id, version, manifest_cid, metadata_cid)


def test_instruction_rows_become_examples_and_bad_rows_are_counted(
    store: DirectoryStore,
) -> None:
    first = jsonl(
        {"prompt": "What is 1 ft in m?", "response": "0.3048 m"},
        b"{not json",
        {"prompt": "no answer"},
        b"",  # a blank line is no row
        ["a", "list"],
        b'{"prompt": "caf\xe9", "response": "latin-1"}',
        {"prompt": "  ", "response": "empty prompt"},
        {"prompt": "Grüße?", "response": "Hallo — 👋"},
    )
    second = b'{"prompt": "last", "response": "no trailing newline"}'
    data = load(store, DataFormat.INSTRUCTION, [first, second])
    examples, report = build_examples(data)
    assert [(e.contribution_id, e.line, e.prompt, e.response) for e in examples] == [
        (1, 1, "What is 1 ft in m?", "0.3048 m"),
        (1, 8, "Grüße?", "Hallo — 👋"),
        (2, 1, "last", "no trailing newline"),
    ]
    assert {e.kind for e in examples} == {"instruction"}
    assert examples[0].contributor == contributor(1) and examples[0].cid == compute_cid(first)
    assert_ranges_hold_their_rows(data, examples)
    assert (report.total_rows, report.kept, report.skipped) == (8, 3, 5)
    reasons = [(s.contribution_id, s.line, s.reason) for s in report.skipped_rows]
    assert reasons == [
        (1, 2, "not JSON (Expecting property name enclosed in double quotes)"),
        (1, 3, "missing 'response'"),
        (1, 5, "each line must be a JSON object"),
        (1, 6, "not UTF-8 text"),
        (1, 7, "field 'prompt' is empty"),
    ]
    assert report.to_json()["skipped_rows"][1] == {
        "contribution_id": 1, "line": 3, "reason": "missing 'response'"
    }  # fmt: skip


def test_chat_rows_keep_their_messages(store: DirectoryStore) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    data = load(
        store,
        DataFormat.CHAT,
        [jsonl({"messages": chat}, {"messages": chat[:2]}, {"messages": []}, {"messages": "x"})],
    )
    examples, report = build_examples(data)
    assert len(examples) == 1 and examples[0].messages == tuple(
        (m["role"], m["content"]) for m in chat
    )
    assert examples[0].prompt is None and examples[0].kind == "chat"
    assert_ranges_hold_their_rows(data, examples)
    assert [s.reason for s in report.skipped_rows] == [
        "a chat needs at least one user and one assistant message",
        "'messages' must be a non-empty list",
        "'messages' must be a non-empty list",
    ]


def test_preference_rows_keep_chosen_and_rejected(store: DirectoryStore) -> None:
    good = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
    same = {"prompt": "2+2?", "chosen": "4", "rejected": "4"}
    data = load(store, DataFormat.PREFERENCE, [jsonl(same, good)])
    examples, report = build_examples(data)
    assert [(e.line, e.prompt, e.chosen, e.rejected) for e in examples] == [(2, "2+2?", "4", "5")]
    assert_ranges_hold_their_rows(data, examples)
    assert [(s.line, s.reason) for s in report.skipped_rows] == [
        (1, "'chosen' and 'rejected' are the same answer")
    ]


def test_text_is_cut_at_line_boundaries_with_byte_ranges(store: DirectoryStore) -> None:
    lines = [f"Line {i}: {'é' * (i % 7)} words." for i in range(40)]
    lines[10] = ""
    lines[11] = "   "
    lines[20] = "x" * 95  # longer than max_chars: cut into pieces
    text = ("\n".join(lines) + "\n\n").encode()
    data = load(store, DataFormat.TEXT, [text, b"  \n\n", b"one line only"])
    examples, report = build_examples(data, max_chars=40)
    assert all(e.kind == "text" and e.line is None for e in examples)
    assert all(0 < len(e.text) <= 40 and e.text.strip() == e.text for e in examples)
    assert_ranges_hold_their_rows(data, examples)
    first = [e for e in examples if e.contribution_id == 1]
    # every non-blank character of the file is in exactly one chunk, in order
    assert "".join(e.text for e in first).replace("\n", "").replace(" ", "") == (
        text.decode().replace("\n", "").replace(" ", "")
    )
    assert [e.byte_start for e in first] == sorted(e.byte_start for e in first)
    assert all(a.byte_end <= b.byte_start for a, b in itertools.pairwise(first))
    assert [e.text for e in first if e.text.startswith("x" * 40)] == ["x" * 40, "x" * 40]
    assert examples[-1].text == "one line only" and examples[-1].contribution_id == 3
    assert report.skipped == 1 and report.skipped_rows[0].reason == "the file is empty"
    assert report.kept == len(examples)


def test_bigger_max_chars_gives_fewer_chunks(store: DirectoryStore) -> None:
    text = "\n".join(f"sentence number {i}" for i in range(100)).encode()
    data = load(store, DataFormat.TEXT, [text])
    small, _ = build_examples(data, max_chars=60)
    large, _ = build_examples(data, max_chars=2000)
    assert len(large) == 1 < len(small)
    assert large[0].text == text.decode()
    with pytest.raises(ValueError, match="max_chars"):
        build_examples(data, max_chars=0)


def test_skipped_rows_are_counted_all_but_listed_first_fifty(store: DirectoryStore) -> None:
    rows = [b"nope"] * 60 + [json.dumps({"prompt": "p", "response": "r"}).encode()]
    examples, report = build_examples(load(store, DataFormat.INSTRUCTION, [jsonl(*rows)]))
    assert len(examples) == 1 and (report.total_rows, report.skipped) == (61, 60)
    assert len(report.skipped_rows) == MAX_SKIPPED_LISTED == 50
    assert [s.line for s in report.skipped_rows] == list(range(1, 51))


def many_examples(count: int) -> list[Example]:
    return [
        Example(1 + i % 5, f"cid{i % 5}", contributor(1), i, 10 * i, 10 * i + 9, "text", text="t")
        for i in range(count)
    ]


def test_split_is_deterministic_and_independent_of_order() -> None:
    examples = many_examples(1000)
    train, held = split_examples(examples, 0.1, seed=7)
    shuffled = examples[:]
    random.Random(1).shuffle(shuffled)
    assert split_examples(shuffled, 0.1, seed=7) == (train, held)
    assert sorted(train + held, key=lambda e: e.line) == examples
    assert 60 <= len(held) <= 140  # about a tenth
    _, other_held = split_examples(examples, 0.1, seed=8)
    assert other_held != held
    # a row keeps its side whatever else is in the version
    _, sub_held = split_examples(examples[:500], 0.1, seed=7)
    assert {e.line for e in sub_held} == {e.line for e in held if e.line < 500}


def test_split_holds_out_at_least_one_and_keeps_one() -> None:
    for seed in range(20):
        train, held = split_examples(many_examples(2), 0.01, seed)
        assert len(train) == len(held) == 1
        train, held = split_examples(many_examples(3), 0.5, seed)
        assert train and held
    assert split_examples(many_examples(5), 0.0, 0) == (many_examples(5), [])
    assert split_examples(many_examples(1), 0.3, 0) in (
        ([], many_examples(1)),
        (many_examples(1), []),
    )
    with pytest.raises(ValueError, match="eval_fraction"):
        split_examples(many_examples(5), 1.0, 0)
