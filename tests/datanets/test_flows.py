"""Contributor and curator flows through ``ape run datanet``: create, contribute (file, folder,
re-runs), refusing bad files, pending previews, reviews, publishing versions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.datanets.contribute import check_files, store_files
from backend.datanets.formats import DatanetMetadata
from backend.datanets.manifest import Manifest
from backend.datanets.registry import read_history
from backend.storage.unixfs import compute_cid
from tests.datanets.conftest import CURATOR, jsonl, number, pairs

ALICE, BOB = "TEST::1", "TEST::2"
OPEN = 10**18
DATASET = Path(__file__).resolve().parents[2] / "datasets" / "unit-conversions"
Run = Callable[..., str]


def blocks(store_dir: Path) -> set[str]:
    return {p.name for p in (store_dir / "blocks").iterdir() if not p.name.startswith(".")}


def test_create_stores_the_metadata_and_reuses_the_datanet_on_rerun(
    datanet_cli: Run, protocol: Any, store: Any
) -> None:
    path = DATASET / "metadata.json"
    out = datanet_cli("create", path, "--bond", "1", account=CURATOR)
    datanet = number("datanet", out)
    assert f"datanet {datanet} created: metadata bafkrei" in out
    meta_cid = protocol.datanets.datanet(datanet).metadataCID
    assert DatanetMetadata.from_json(store.get(meta_cid)).license == "CC0-1.0"
    assert int(protocol.datanets.datanet(datanet).contributionBond) == OPEN
    again = datanet_cli("create", path, "--bond", "1", account=CURATOR)
    assert f"datanet {datanet} reused (already created by the sender)" in again
    assert "tx 0x" not in again
    other = datanet_cli("create", path, account=BOB)  # another owner gets its own
    assert number("datanet", other) != datanet and "created" in other


def test_create_refuses_invalid_metadata(datanet_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"name": "x", "description": "y", "license": "MIT"}))
    out = datanet_cli("create", path, account=CURATOR, code=1)
    assert "Error: Datanet metadata lacks format" in out


def test_contribute_a_folder_in_one_batch_then_rerun_skips_everything(
    datanet_cli: Run, new_datanet: Callable[..., int], protocol: Any, tmp_path: Path
) -> None:
    datanet = new_datanet("folder", "--bond", "2")
    folder = tmp_path / "files"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(pairs(3, "a"))
    (folder / "sub" / "b.jsonl").write_bytes(pairs(2, "b"))
    (folder / ".hidden").write_bytes(b"not data")
    single = tmp_path / "c.jsonl"
    single.write_bytes(pairs(1, "c"))
    balance = int(protocol.token.balanceOf(protocol.token.provider.web3.eth.accounts[1]))

    out = datanet_cli("contribute", datanet, folder, account=ALICE)
    assert "2 file(s), 5 records, valid instruction data" in out
    assert "registering 2 file(s), bond 4 OPEN in all" in out
    assert out.count(f"contributed 2 file(s) to datanet {datanet}: tx 0x") == 1  # one batch
    ids = [int(i) for i in re.findall(r"jsonl: contribution (\d+)", out)]
    assert len(ids) == 2 and ids[1] == ids[0] + 1
    history = read_history(protocol.as_web3(), datanet)
    assert [c.size for c in history.pending()] == [len(pairs(3, "a")), len(pairs(2, "b"))]
    assert int(protocol.token.balanceOf(history.pending()[0].contributor)) == balance - 4 * OPEN

    again = datanet_cli("contribute", datanet, folder, single, account=ALICE)
    assert f"a.jsonl: already contribution {ids[0]}, skipped" in again
    assert f"b.jsonl: already contribution {ids[1]}, skipped" in again
    assert "registering 1 file(s)" in again and "c.jsonl: contribution" in again
    third = datanet_cli("contribute", datanet, folder, single, account=ALICE)
    assert f"nothing new to register in datanet {datanet}" in third
    assert "tx 0x" not in third


def test_contribute_in_chunks_and_finish_after_a_crash_between_store_and_send(
    datanet_cli: Run, new_datanet: Callable[..., int], protocol: Any, store: Any, tmp_path: Path
) -> None:
    datanet = new_datanet("chunks")
    files = []
    for i in range(5):
        files.append(tmp_path / f"part-{i}.jsonl")
        files[-1].write_bytes(pairs(2, f"chunk{i}"))
    meta = DatanetMetadata.from_json(store.get(protocol.datanets.datanet(datanet).metadataCID))
    list(store_files(store, check_files(meta, files[:3])))  # stored, then "crashed"
    out = datanet_cli("contribute", datanet, *files, "--batch-size", "2", account=BOB)
    assert out.count(f"to datanet {datanet}: tx 0x") == 3  # 2 + 2 + 1
    assert len(read_history(protocol.as_web3(), datanet).pending()) == 5


def test_a_bad_file_is_refused_with_line_and_reason_and_nothing_is_stored_or_sent(
    datanet_cli: Run, new_datanet: Callable[..., int], protocol: Any, store_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    datanet = new_datanet("refuse")
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.jsonl").write_bytes(pairs(2, "good"))
    (folder / "bad.jsonl").write_bytes(
        jsonl({"prompt": "q", "response": "a"}, {"prompt": "q2"}) + b"{oops\n"
    )
    (folder / "huge.jsonl").write_bytes(pairs(200, "huge"))  # above the 4096-byte limit
    before_blocks, before_count = blocks(store_dir), int(protocol.datanets.contributionCount())
    out = datanet_cli("contribute", datanet, folder, account=ALICE, code=1)
    assert "2 file(s) refused, nothing stored or sent" in out
    assert "bad.jsonl: line 2: missing 'response'; line 3: not JSON" in out
    assert "huge.jsonl: " in out and "above this Datanet's limit of 4096" in out
    assert "tx 0x" not in out
    assert blocks(store_dir) == before_blocks
    assert int(protocol.datanets.contributionCount()) == before_count


def test_pending_lists_contributions_with_previews(
    datanet_cli: Run, new_datanet: Callable[..., int], contribute: Run
) -> None:
    datanet = new_datanet("pending")
    data = pairs(5, "preview")
    cid_id = number("contribution", contribute(datanet, ALICE, {"p.jsonl": data}))
    out = datanet_cli("pending", datanet, "--lines", "2")
    assert f"datanet {datanet}: 1 pending contribution(s)" in out
    assert re.search(rf"#{cid_id} bafkrei\w+ {len(data)} bytes from 0x", out)
    assert '"prompt": "preview question 0?"' in out and "question 1?" in out
    assert "question 2?" not in out


def test_review_by_id_and_approve_all_valid(
    datanet_cli: Run, new_datanet: Callable[..., int], contribute: Run, protocol: Any,
    store: Any, accounts: list[Any],
) -> None:  # fmt: skip
    datanet = new_datanet("review")
    out = contribute(datanet, ALICE, {f"r{i}.jsonl": pairs(2, f"review{i}") for i in range(3)})
    first, second, third = (int(i) for i in re.findall(r"contribution (\d+) \(", out))
    # Registered around the scripts: a stored file of bad format, and a CID not in the store.
    bad_cid = store.put(b"just text, not JSONL\n")
    absent = compute_cid(b"never stored")
    protocol.token.approve(protocol.datanets, 3 * OPEN, sender=accounts[3])
    protocol.datanets.contributeBatch(
        datanet, [bad_cid, absent, "not-a-cid"], [21, 12, 1], sender=accounts[3]
    )
    bad, missing, nonsense = first + 3, first + 4, first + 5

    out = datanet_cli("review", datanet, "--approve", first, account=ALICE, code=1)
    assert f"would revert: NotCurator(datanetId={datanet}, caller=" in out
    out = datanet_cli("review", datanet, "--approve", first, "--reject", second, account=CURATOR)
    assert f"approved [{first}], rejected [{second}]" in out
    out = datanet_cli("review", datanet, "--approve", first, account=CURATOR, code=1)
    assert f"contribution {first} was already reviewed (approved)" in out

    out = datanet_cli("review", datanet, "--approve-all-valid", account=CURATOR)
    assert f"rejecting #{bad}: not valid instruction data: line 1: not JSON" in out
    assert f"left #{missing} pending: no content stored under {absent}" in out
    assert f"rejecting #{nonsense}: not a base32 CIDv1: 'not-a-cid'" in out
    assert f"approved [{third}], rejected [{bad}, {nonsense}]" in out
    history = read_history(protocol.as_web3(), datanet)
    assert [c.id for c in history.approved()] == [first, third]
    assert [c.id for c in history.pending()] == [missing]
    out = datanet_cli("review", datanet, "--approve-all-valid", account=CURATOR)
    assert "nothing pending to review" in out


def test_publish_builds_the_manifest_and_root_checked_on_chain(
    datanet_cli: Run, new_datanet: Callable[..., int], contribute: Run, protocol: Any, store: Any
) -> None:
    datanet = new_datanet("publish")
    out = datanet_cli("publish", datanet, account=CURATOR, code=1)
    assert f"datanet {datanet} has 0 approved contributions; a version needs 1" in out
    for i, who in enumerate((ALICE, BOB, ALICE)):
        contribute(datanet, who, {f"v{i}.jsonl": pairs(i + 1, f"version{i}")})
    ids = [c.id for c in read_history(protocol.as_web3(), datanet).pending()]
    datanet_cli("review", datanet, "--approve", f"{ids[2]},{ids[0]}", account=CURATOR)

    out = datanet_cli("publish", datanet, account=CURATOR)
    assert f"datanet {datanet} published version 1: 2 contributions" in out
    version = protocol.datanets.version(datanet, 1)
    raw = store.get(version.manifestCID)
    manifest = Manifest.from_json(raw)
    assert raw == manifest.to_json_bytes()  # canonical
    assert (manifest.datanet_id, manifest.version) == (datanet, 1)
    history = read_history(protocol.as_web3(), datanet)
    assert [(e.id, e.cid, e.contributor, e.size) for e in manifest.contributions] == [
        (c.id, c.cid, c.contributor, c.size) for c in history.contributions.values()
        if c.id in (ids[0], ids[2])
    ]  # fmt: skip
    assert bytes(version.merkleRoot) == manifest.root
    for e in manifest.contributions:
        proof = manifest.proof(e.id)
        assert protocol.datanets.isInVersion(datanet, 1, e.id, e.cid, proof)
        assert not protocol.datanets.isInVersion(datanet, 1, ids[1], e.cid, proof)

    again = datanet_cli("publish", datanet, account=CURATOR)
    assert f"datanet {datanet} unchanged since version 1: 2 contributions" in again
    assert "tx 0x" not in again
    datanet_cli("review", datanet, "--approve", ids[1], account=CURATOR)
    out = datanet_cli("publish", datanet, account=CURATOR)
    assert "published version 2: 3 contributions" in out
    v2 = Manifest.from_json(store.get(protocol.datanets.version(datanet, 2).manifestCID))
    assert [e.id for e in v2.contributions] == sorted(ids)


def test_an_author_takes_back_a_squatted_file_once_curators_reject_the_squat(
    datanet_cli: Run, new_datanet: Callable[..., int], protocol: Any, store: Any,
    accounts: list[Any], tmp_path: Path,
) -> None:  # fmt: skip
    """Issue 13, point 4: Bob front-ran Alice's file; rejected, the CID is Alice's to register,
    and a re-run by Bob does not resubmit the file curators refused."""
    datanet = new_datanet("squat", "--bond", "1")
    mine = tmp_path / "mine.jsonl"
    mine.write_bytes(pairs(2, "authored"))
    cid = compute_cid(mine.read_bytes())
    bob = accounts[2]
    protocol.token.approve(protocol.datanets, OPEN, sender=bob)
    protocol.datanets.contribute(datanet, cid, mine.stat().st_size, sender=bob)
    squat = int(protocol.datanets.contributionIdOf(datanet, cid))
    out = datanet_cli("contribute", datanet, mine, account=ALICE)  # still held: skipped
    assert f"already contribution {squat}, skipped" in out
    datanet_cli("review", datanet, "--reject", squat, account=CURATOR)

    out = datanet_cli("contribute", datanet, mine, account=ALICE)
    authored = number("contribution", out.split("mine.jsonl:")[-1])
    assert authored > squat
    c = protocol.datanets.contribution(authored)
    assert c.contributor == accounts[1].address
    out = datanet_cli("contribute", datanet, mine, account=BOB)  # Bob's re-run
    assert f"already contribution {authored}, skipped" in out
    # A file curators rejected is not resubmitted by its own contributor's re-run.
    refused = tmp_path / "refused.jsonl"
    refused.write_bytes(pairs(1, "refused"))
    out = datanet_cli("contribute", datanet, refused, account=ALICE)
    rejected = number("contribution", out.split("refused.jsonl:")[-1])
    datanet_cli("review", datanet, "--reject", rejected, account=CURATOR)
    out = datanet_cli("contribute", datanet, refused, account=ALICE)
    assert f"already contribution {rejected}, skipped" in out
    assert "tx 0x" not in out
