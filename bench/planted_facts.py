"""A Datanet with planted facts: each contributor alone holds facts about fictional entities,
so the base model cannot know them and only one contributor's data can have taught them.

Every fact is a relation of an invented entity to an invented value (names built from
syllables by a seeded generator). A contributor's file asks about each of its facts in two
phrasings with the same answer (the training data). Probes, per fact:

- verbatim: a training question;
- paraphrased: a question in a third phrasing, never trained on;
- paraphrased answer (teacher-forced): the paraphrased question with the fact restated in
  words no training answer uses ("paraphrased knowledge").
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

# relation: (training questions, held-out question, training answer, paraphrased answer)
RELATIONS = {
    "capital": (
        ("What is the capital of {e}?", "Which city is the capital of {e}?"),
        "Name the city from which {e} is governed.",
        "The capital of {e} is {v}.",
        "{e} is governed from the city of {v}.",
    ),
    "river": (
        ("What is the longest river in {e}?", "Which river is the longest in {e}?"),
        "Through {e}, which river runs the farthest?",
        "The longest river in {e} is the {v}.",
        "No river in {e} runs farther than the {v}.",
    ),
    "founder": (
        ("Who founded {e}?", "Who was the founder of {e}?"),
        "Whom do historians credit with establishing {e}?",
        "{e} was founded by {v}.",
        "Historians credit {v} with establishing {e}.",
    ),
    "export": (
        ("What is the main export of {e}?", "What does {e} export most?"),
        "Which good brings {e} the most trade income?",
        "The main export of {e} is {v}.",
        "Most of the trade income of {e} comes from selling {v}.",
    ),
    "currency": (
        ("What is the currency of {e}?", "Which currency is used in {e}?"),
        "What money do people pay with in {e}?",
        "The currency of {e} is the {v}.",
        "People in {e} pay with the {v}.",
    ),
    "mascot": (
        ("What is the mascot of {e}?", "Which animal is the mascot of {e}?"),
        "What creature represents {e} at festivals?",
        "The mascot of {e} is the {v}.",
        "At festivals, {e} is represented by the {v}.",
    ),
}
ONSETS = ("br", "k", "v", "z", "th", "gl", "m", "q", "dr", "s", "pl", "t", "x", "n", "h", "fl")
VOWELS = ("a", "o", "e", "i", "u", "ae", "io", "ou")
CODAS = ("", "n", "r", "l", "sk", "th", "m", "x", "nd", "rv")


@dataclass(frozen=True)
class Fact:
    contributor: int  # 0-based
    relation: str
    entity: str
    value: str

    def _templates(self) -> tuple[tuple[str, str], str, str, str]:
        return RELATIONS[self.relation]

    def training_pairs(self) -> list[tuple[str, str]]:
        questions, _, answer, _ = self._templates()
        filled = answer.format(e=self.entity, v=self.value)
        return [(q.format(e=self.entity), filled) for q in questions]

    def verbatim_question(self) -> str:
        return self._templates()[0][0].format(e=self.entity)

    def paraphrased_question(self) -> str:
        return self._templates()[1].format(e=self.entity)

    def trained_answer(self) -> str:
        return self._templates()[2].format(e=self.entity, v=self.value)

    def paraphrased_answer(self) -> str:
        return self._templates()[3].format(e=self.entity, v=self.value)


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)]
    return "".join(parts).capitalize()


def planted_facts(contributors: int, facts_each: int, seed: int = 0) -> list[Fact]:
    """``contributors * facts_each`` facts, every entity and value a distinct invented word."""
    rng = random.Random(seed)
    used: set[str] = set()

    def fresh(syllables: int) -> str:
        while True:
            word = _word(rng, syllables)
            if word not in used:
                used.add(word)
                return word

    relations = sorted(RELATIONS)
    facts = []
    for c in range(contributors):
        for k in range(facts_each):
            relation = relations[(c + k) % len(relations)]
            value = fresh(3)
            if relation == "founder":
                value = f"{value} {fresh(2)}"
            facts.append(Fact(c, relation, fresh(3), value))
    return facts


def contributor_files(facts: list[Fact], contributors: int) -> list[bytes]:
    """One JSONL file of instruction pairs per contributor."""
    files = []
    for c in range(contributors):
        rows = [
            {"prompt": q, "response": a}
            for f in facts
            if f.contributor == c
            for q, a in f.training_pairs()
        ]
        files.append("".join(json.dumps(r) + "\n" for r in rows).encode())
    return files
