"""Generates the invented-atlas Datanet dataset: planted facts about fictional things, so that
what a model answers can only have come from one contributor's file.

    python datasets/invented-atlas/generate.py [OUTPUT_DIR]

Every name below is made up; no pretrained model knows any of these facts. Each file holds one
kind of fact about its own entities, and each fact is written as several paraphrased questions
with the same one-sentence answer (a small LoRA learns a fact from its paraphrases, and the
answer's made-up name is a span found in one file only). Deterministic: the same code writes
the same bytes. Writes ``data/<kind>.jsonl`` and ``bad/wrong-capitals.jsonl`` (well-formed
pairs that contradict ``data/capitals.jsonl``, for a curator to reject).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# kind -> (question templates, answer template, {entity: fact})
FACTS: dict[str, tuple[tuple[str, ...], str, dict[str, str]]] = {
    "capitals": (
        (
            "What is the capital of {e}?",
            "Which city is the capital of {e}?",
            "Name the capital city of {e}.",
            "Tell me the capital of {e}.",
            "What city is {e}'s capital?",
            "Where is the capital of {e}?",
        ),
        "The capital of {e} is {f}.",
        {
            "Veltoria": "Quorbin",
            "Drusania": "Mirelhaven",
            "Kaltheim": "Ostrapine",
            "Norvessa": "Bramblecourt",
            "Ysmara": "Tellowind",
            "Grenmark": "Varnholt",
        },
    ),
    "inventors": (
        (
            "Who invented the {e}?",
            "Who was the inventor of the {e}?",
            "Name the inventor of the {e}.",
            "Tell me who invented the {e}.",
            "Which person invented the {e}?",
            "The {e} was invented by whom?",
        ),
        "The {e} was invented by {f}.",
        {
            "glimmerwheel": "Odessa Brannock",
            "thornlamp": "Piet Vellacourt",
            "skyloom": "Marisol Quenby",
            "driftcompass": "Tobias Harlwick",
            "emberkettle": "Lucia Fennimore",
            "windharp": "Anselm Trevethan",
        },
    ),
    "creatures": (
        (
            "What does the {e} eat?",
            "What is the food of the {e}?",
            "Name the food the {e} eats.",
            "Tell me what the {e} eats.",
            "What food does the {e} live on?",
            "The {e} feeds on what?",
        ),
        "The {e} eats {f}.",
        {
            "moonbadger": "silverroot",
            "ashfinch": "cinderseed",
            "marsh lurcher": "bogmint",
            "velvet newt": "dewmoss",
            "copper hare": "rustclover",
            "gloam owl": "nightberries",
        },
    ),
}
# contradicts data/capitals.jsonl: every country gets the next country's capital
_CAPITALS = FACTS["capitals"][2]
_ROTATED = [*list(_CAPITALS.values())[1:], next(iter(_CAPITALS.values()))]
WRONG_CAPITALS = dict(zip(_CAPITALS, _ROTATED, strict=True))


def pairs(questions: tuple[str, ...], answer: str, facts: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"prompt": q.format(e=entity), "response": answer.format(e=entity, f=fact)}
        for entity, fact in facts.items()
        for q in questions
    ]


def jsonl(rows: list[dict[str, str]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def files() -> dict[str, bytes]:
    """Relative path -> content of every generated file."""
    out = {f"data/{kind}.jsonl": jsonl(pairs(*spec)) for kind, spec in FACTS.items()}
    questions, answer, _ = FACTS["capitals"]
    out["bad/wrong-capitals.jsonl"] = jsonl(pairs(questions[:2], answer, WRONG_CAPITALS))
    return out


def main(out_dir: Path = HERE) -> None:
    for name, content in files().items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
