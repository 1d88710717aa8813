"""The demo Datanet's planted facts: reproducible from the generator, valid for its Datanet,
each made-up fact in one file only (so an answer naming it can only come from that
contributor), and the curator's bad file contradicting the capitals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from backend.datanets.formats import DataFormat, DatanetMetadata, validate_contribution

DATASET = Path(__file__).resolve().parents[2] / "datasets" / "invented-atlas"
GOOD = sorted((DATASET / "data").glob("*.jsonl"))
BAD = DATASET / "bad" / "wrong-capitals.jsonl"
CAPITAL = re.compile(r"The capital of (\w+) is (\w+)\.")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def answers(path: Path) -> set[str]:
    return {r["response"] for r in records(path)}


def test_the_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(DATASET / "generate.py"), str(tmp_path)], check=True, timeout=60
    )
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.jsonl"))
    assert made == sorted(p.relative_to(DATASET) for p in [*GOOD, BAD])
    for path in [*GOOD, BAD]:
        assert (tmp_path / path.relative_to(DATASET)).read_bytes() == path.read_bytes(), path


def test_metadata_and_files_are_valid_for_the_datanet() -> None:
    meta = DatanetMetadata.from_json((DATASET / "metadata.json").read_bytes())
    assert (meta.format, meta.license) == (DataFormat.INSTRUCTION, "CC0-1.0")
    assert "CC0-1.0" in (DATASET / "README.md").read_text()
    assert [validate_contribution(meta, p.read_bytes()) for p in GOOD] == [36, 36, 36]
    prompts = [r["prompt"] for p in GOOD for r in records(p)]
    assert len(prompts) == len(set(prompts))


def test_each_fact_is_said_in_six_paraphrases_with_one_answer() -> None:
    for path in GOOD:
        rows = records(path)
        by_answer: dict[str, set[str]] = {}
        for r in rows:
            by_answer.setdefault(r["response"], set()).add(r["prompt"])
        assert len(by_answer) == 6 and all(len(q) == 6 for q in by_answer.values()), path


def test_no_made_up_word_of_an_answer_occurs_in_another_file() -> None:
    def words(path: Path) -> set[str]:
        return {w for a in answers(path) for w in re.findall(r"\w+", a)}

    common = set.intersection(*(words(p) for p in GOOD))  # "The", "is", ...
    for path in GOOD:
        mine = words(path) - common
        others = set().union(*(words(q) for q in GOOD if q != path))
        assert not mine & others, (path.name, mine & others)
        # each file names its own six entities and six facts, at least one word each
        assert len(mine) >= 12, path.name


def test_the_bad_file_contradicts_every_capital() -> None:
    truth = dict(CAPITAL.fullmatch(a).groups() for a in answers(DATASET / "data/capitals.jsonl"))
    claims = [CAPITAL.fullmatch(r["response"]).groups() for r in records(BAD)]
    assert {country for country, _ in claims} == set(truth)
    assert all(truth[country] != capital for country, capital in claims)
    assert {capital for _, capital in claims} <= set(truth.values())  # plausible, just wrong
