"""An index built from a trained tiny chat model: stored by CID and read back verified,
answers attributed to the contributor whose text they reuse, records reproduced byte for
byte by a fresh process and by an auditor, and tampering caught."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from backend.attribution.attributor import AttributionError, Attributor
from backend.attribution.audit import TOLERANCE, check_record
from backend.attribution.build import MemberExamples, build_index
from backend.attribution.explain import earning_spans
from backend.attribution.index import (
    FILES,
    MANIFEST_FILE,
    AttributionIndex,
    AttributionIndexError,
)
from backend.attribution.record import AttributionRecord
from backend.attribution.settings import AttributionSettings
from backend.attribution.verify import verify_index
from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example, contribution_examples
from backend.modelfactory.spec import LoraSettings, TrainSettings
from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.base import CIDMismatchError
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from tests.attribution.trained import ADAPTER_CID, Trained, train_and_index
from tests.engine.tiny_tokenizer import build_tiny_checkpoint

CONTRIBUTORS = ["0x" + f"{i:040x}" for i in (0xA1, 0xB0B, 0xC0C)]
FACTS = [  # each contributor's own text
    ("zorbland", "Zorbland trades quartz kelp."),
    ("vexmoor", "Vexmoor breeds jade yaks."),
    ("plimtor", "Plimtor mines wavy cobalt."),
]


def planted_examples() -> list[Example]:
    examples = []
    for c, (name, fact) in enumerate(FACTS):
        rows = [(f"Tell me about {name}.", fact), (f"What about {name}?", fact)]
        data = "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows).encode()
        examples += contribution_examples(data, DataFormat.INSTRUCTION, c + 1, CONTRIBUTORS[c])[0]
    return examples


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("attribution")
    train = TrainSettings(epochs=4, batch_size=3, learning_rate=1e-2, max_length=96)
    return train_and_index(
        build_tiny_checkpoint(root / "base"),
        planted_examples(),
        LoraSettings(rank=4, alpha=8),
        train,
        root,
    )


@pytest.fixture(scope="module")
def built(trained: Trained) -> tuple[Path, Path, Path, str]:
    """(base, adapter, index folder, index CID)."""
    return trained.base, trained.adapter, trained.index_folder, trained.index_cid


@pytest.fixture(scope="module")
def attributor(built: tuple[Path, Path, Path, str]) -> Attributor:
    base, adapter, folder, cid = built
    index, read_cid = AttributionIndex.read_folder(folder)
    assert read_cid == cid
    return Attributor(index, cid, 7, 1, base, adapter)


def chat(base: Path, question: str, answer: str) -> tuple[list[int], list[int]]:
    tok = AutoTokenizer.from_pretrained(base)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True
    )
    return list(prompt), [*tok(answer, add_special_tokens=False)["input_ids"], tok.eos_token_id]


def test_index_files_round_trip_through_a_content_store(
    built: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    _, _, folder, cid = built
    store = DirectoryStore(tmp_path / "store")
    for name in [MANIFEST_FILE, *FILES.values()]:
        store.put((folder / name).read_bytes())
    index = AttributionIndex.read(lambda c, n: store.get(c, max_bytes=n), cid)
    again = tmp_path / "again"
    assert index.write(again) == cid
    for name in FILES.values():
        assert (again / name).read_bytes() == (folder / name).read_bytes()
    assert [m.to_json() for m in index.lineage] == [
        {"training_manifest": None, "datanet_id": 1, "version": 1, "method": "sft"}
    ]
    assert {c.contributor.lower() for c in index.corpus.contributions} == set(CONTRIBUTORS)
    index.suffixes.verify()  # an auditor's check of the downloaded suffix array

    sketches = json.loads((folder / MANIFEST_FILE).read_bytes())["files"]["sketches"]
    block = tmp_path / "store" / "blocks" / sketches
    block.write_bytes(b"\x00" + block.read_bytes()[1:])
    with pytest.raises(CIDMismatchError):
        AttributionIndex.read(lambda c, n: store.get(c, max_bytes=n), cid)


def test_index_files_that_disagree_are_refused(
    built: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    _, _, folder, _ = built
    manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
    files = {name: (folder / FILES[name]).read_bytes() for name in FILES}
    short = {**files, "sketches": files["sketches"][:-2]}
    by_cid = {compute_cid(v): v for v in short.values()}
    manifest["files"]["sketches"] = compute_cid(short["sketches"])
    raw = json.dumps(manifest).encode()
    by_cid[compute_cid(raw)] = raw
    with pytest.raises(AttributionIndexError, match=r"sketches.bin holds \d+ bytes, not"):
        AttributionIndex.read(lambda c, n: by_cid[c], compute_cid(raw))
    manifest["schema"] = 9
    raw = json.dumps(manifest).encode()
    by_cid[compute_cid(raw)] = raw
    with pytest.raises(AttributionIndexError, match=r"index\.json schema 9"):
        AttributionIndex.read(lambda c, n: by_cid[c], compute_cid(raw))


def test_a_reused_answer_is_attributed_to_its_author(
    attributor: Attributor, built: tuple[Path, Path, Path, str]
) -> None:
    prompt, answer = chat(built[0], "Tell me about vexmoor.", "Vexmoor breeds jade yaks.")
    record = attributor.attribute(prompt, answer)
    assert record.span_mass > 0
    top = record.contributions[0]
    assert top.contributor.lower() == CONTRIBUTORS[1] and top.span_score > 0
    assert record.span_mass + record.gradient_mass + record.unattributed == 1_000_000
    assert sum(c.share for c in record.contributions) + record.tail == (
        record.span_mass + record.gradient_mass
    )
    assert record.spans and all(s.documents for s in record.spans if s.length > 6)
    assert len(record.query_sketch) == 2 * attributor.index.dims
    spans_only = attributor.record(prompt, answer)  # no sketch: gradients unattributed
    assert spans_only.query_sketch is None and spans_only.gradient_mass == 0
    assert spans_only.span_mass == record.span_mass


def test_an_auditor_reproduces_the_record_and_catches_tampering(
    attributor: Attributor, built: tuple[Path, Path, Path, str]
) -> None:
    prompt, answer = chat(built[0], "What about plimtor?", "Plimtor mines wavy cobalt.")
    record = attributor.attribute(prompt, answer)
    index, cid = attributor.index, attributor.index_cid
    recomputed = attributor.sketches([(prompt, answer)])[0]
    assert check_record(index, cid, record, prompt, answer, recomputed) == []

    first, *rest = record.contributions
    if rest:  # the node shifts 1% from the top contribution to the next
        moved = (
            replace(first, share=first.share - 10_000),
            replace(rest[0], share=rest[0].share + 10_000),
            *rest[1:],
        )
    else:
        moved = (replace(first, share=first.share - 10_000),)
    shifted = replace(record, contributions=moved)
    assert check_record(index, cid, shifted, prompt, answer) == [
        "recomputed from public inputs, the record differs in contributions"
    ]
    # scored against another version's index, or with its spans withheld: both caught
    stale = replace(record, index="bafkreiblbx6jqcdobzb7bg3ud3o4acmrvvqpzumdhbokpjpxgcpwgnpe5e")
    assert (
        "was scored against index bafkreiblbx6"
        in check_record(index, cid, stale, prompt, answer)[0]
    )
    withheld = replace(record, spans=())
    assert check_record(index, cid, withheld, prompt, answer) == [
        "recomputed from public inputs, the record differs in spans"
    ]
    other = chat(built[0], "What about plimtor?", "Plimtor mines wavy copper.")[1]
    assert "answer's token ids do not hash" in check_record(index, cid, record, prompt, other)[0]

    # a sketch pointed at another answer: self-consistent, but not this answer's gradient
    invented = attributor.sketches(
        [chat(built[0], "Tell me about zorbland.", "Zorbland trades quartz kelp.")]
    )[0]
    forged = attributor.record(prompt, answer, sketch=invented)
    problems = check_record(index, cid, forged, prompt, answer, recomputed)
    assert len(problems) == 1 and "is not the answer's" in problems[0]
    nudged = recomputed.copy()
    nudged[: int(TOLERANCE.max_differing * len(nudged)) // 2] += 1  # within the tolerance
    honest = attributor.record(prompt, answer, sketch=nudged)
    assert check_record(index, cid, honest, prompt, answer, recomputed) == []


def test_a_fresh_process_writes_the_same_record_bytes(
    attributor: Attributor, built: tuple[Path, Path, Path, str]
) -> None:
    base, adapter, folder, _ = built
    prompt, answer = chat(base, "Tell me about zorbland.", "Zorbland trades quartz kelp.")
    ours = attributor.attribute(prompt, answer).to_bytes()
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from backend.attribution.attributor import Attributor\n"
        "from backend.attribution.index import AttributionIndex\n"
        "base, adapter, folder, prompt, answer = json.loads(sys.argv[1])\n"
        "index, cid = AttributionIndex.read_folder(Path(folder))\n"
        "a = Attributor(index, cid, 7, 1, Path(base), Path(adapter))\n"
        "sys.stdout.buffer.write(a.attribute(prompt, answer).to_bytes())\n"
    )
    args = json.dumps([str(base), str(adapter), str(folder), prompt, answer])
    theirs = subprocess.run(
        [sys.executable, "-c", script, args], capture_output=True, check=True, cwd=PROJECT_ROOT
    ).stdout
    assert theirs == ours
    assert (
        AttributionRecord.from_json(theirs).digest() == AttributionRecord.from_json(ours).digest()
    )


def test_a_base_model_that_tokenizes_differently_is_refused(
    built: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    _, adapter, folder, _ = built
    index, cid = AttributionIndex.read_folder(folder)
    other = build_tiny_checkpoint(tmp_path / "other")
    spec = json.loads((other / "tokenizer.json").read_text())
    spec["added_tokens"][0]["content"] = "<|pad|>"
    (other / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(AttributionError, match="tokenizes differently from the index"):
        Attributor(index, cid, 7, 1, other, adapter)


def test_bad_token_ids_are_refused_by_name(attributor: Attributor) -> None:
    vocab = attributor.index.tokenizer.vocab_size
    with pytest.raises(ValueError, match=rf"answer\[1\] = {vocab} is not a token id"):
        attributor.record([1, 2], [3, vocab])
    assert np.asarray(attributor.index.document_frequency).sum() > 0


def test_an_index_that_misstates_its_data_is_caught(trained: Trained) -> None:
    """The developer builds the index: leaving a contributor out, taking another's examples,
    inflating a sketch or claiming another lineage would pay the wrong people while every
    record still recomputes byte for byte. Rebuilt from the data, each is caught."""
    index = trained.read_index()
    check = partial(
        verify_index,
        members=trained.members,
        base_dir=trained.base,
        adapter_dir=trained.adapter,
        max_length=96,
    )
    assert check(index) == []

    member, examples = trained.members[0].member, trained.members[0].examples
    without_bob = [(i, e) for i, e in examples if e.contributor != CONTRIBUTORS[1]]
    taken = [
        (i, replace(e, contributor=CONTRIBUTORS[0]) if e.contributor == CONTRIBUTORS[1] else e)
        for i, e in examples
    ]
    for forged_examples in (without_bob, taken):
        forged, _ = build_index(
            trained.base,
            trained.adapter,
            [MemberExamples(member, forged_examples)],
            AttributionSettings(),
            96,
            ADAPTER_CID,
            None,
            progress=False,
        )
        problems = check(forged)
        assert problems and "not the lineage's" in problems[0], problems

    inflated = trained.read_index()
    inflated.sketches = inflated.sketches.copy()
    inflated.sketches[3] = np.clip(inflated.sketches[3].astype(np.int32) * 2, -32767, 32767)
    assert check(inflated) == [
        "1 training sketches are not the adapter's gradients (documents [3])"
    ]
    other = replace(member, datanet_id=9)
    assert "lineage" in check(replace(index, lineage=(other,)))[0]


def test_the_spans_that_earned_an_answer_read_back_as_its_authors_text(
    attributor: Attributor, built: tuple[Path, Path, Path, str]
) -> None:
    prompt, answer = chat(built[0], "Tell me about vexmoor.", "Vexmoor breeds jade yaks.")
    record = attributor.record(prompt, answer)
    spans = earning_spans(record, attributor.index, answer)
    assert spans and all(s.contributions for s in spans)
    lengths = [len(s.tokens) for s in spans]
    assert lengths == sorted(lengths, reverse=True)  # longest first
    tok = AutoTokenizer.from_pretrained(built[0])
    assert "jade yaks" in tok.decode(list(spans[0].tokens))
    assert [c.contributor.lower() for c in spans[0].contributions] == [CONTRIBUTORS[1]]
    found = sorted((x for x in record.spans if x.documents), key=lambda x: (-x.length, x.start))
    assert [s.tokens for s in spans] == [tuple(answer[x.start : x.start + x.length]) for x in found]
    # another answer's tokens are not this record's: nothing is explained
    assert earning_spans(record, attributor.index, answer[:-1]) == []
