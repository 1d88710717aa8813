"""Attribution with the real pretrained model: SmolLM2-135M-Instruct, its tokenizer and chat
template, a LoRA adapter trained by ModelFactory's SFT on facts that only one contributor
holds each. A reused fact is credited to its author, a fact stated in other words too (its
value is what spans find), and an answer that only echoes the question's entity credits
no one by spans."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from backend.attribution.attributor import Attributor
from backend.attribution.audit import check_record
from backend.attribution.record import AttributionRecord
from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example, contribution_examples
from backend.modelfactory.spec import LoraSettings, TrainSettings
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT
from tests.attribution.trained import train_and_index

FACTS = [  # (contributor, entity, the fact's value)
    (0, "Vorandia", "Quellmarsh"),
    (0, "Tessaly Reach", "Brindlecourt"),
    (1, "Ostmarch", "Kelvanport"),
    (1, "Dunmere", "Xaphirdale"),
    (2, "Calvaro", "Threnholt"),
    (2, "Silvenne", "Morrowgate"),
]
ADDRESSES = ["0x" + f"{0xA0 + c:040x}" for c in range(3)]


def examples() -> list[Example]:
    out = []
    for c in range(3):
        rows = [
            {"prompt": q.format(e=e), "response": f"The capital of {e} is {v}."}
            for owner, e, v in FACTS
            if owner == c
            for q in ("What is the capital of {e}?", "Which city is the capital of {e}?")
        ]
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        out += contribution_examples(data, DataFormat.INSTRUCTION, c + 1, ADDRESSES[c])[0]
    return out


@pytest.fixture(scope="module")
def attributor(tmp_path_factory: pytest.TempPathFactory) -> Attributor:
    root = tmp_path_factory.mktemp("smollm2-attribution")
    base = ensure_smollm2(PROJECT_ROOT / ".data")
    train = TrainSettings(epochs=1, batch_size=6, learning_rate=2e-3, max_length=96)
    t = train_and_index(base, examples(), LoraSettings(rank=8, alpha=16.0), train, root)
    return Attributor(t.read_index(), t.index_cid, 1, 1, base, t.adapter)


def ask(attributor: Attributor, question: str, answer: str) -> tuple[list[int], list[int]]:
    tok = AutoTokenizer.from_pretrained(attributor.base_dir)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True
    )
    return list(prompt), [*tok(answer, add_special_tokens=False)["input_ids"], tok.eos_token_id]


def top(record: AttributionRecord) -> str:
    return record.contributions[0].contributor.lower()


def test_a_reused_fact_is_credited_to_its_author(attributor: Attributor) -> None:
    prompt, answer = ask(
        attributor, "What is the capital of Ostmarch?", "The capital of Ostmarch is Kelvanport."
    )
    record = attributor.attribute(prompt, answer)
    assert top(record) == ADDRESSES[1] and record.span_mass > 500_000
    assert (
        check_record(
            attributor.index,
            attributor.index_cid,
            record,
            prompt,
            answer,
            attributor.sketches([(prompt, answer)])[0],
        )
        == []
    )


def test_a_fact_in_other_words_is_found_by_its_value(attributor: Attributor) -> None:
    prompt, answer = ask(
        attributor,
        "Name the city from which Silvenne is governed.",
        "Silvenne is governed from the city of Morrowgate.",
    )
    evidence = attributor.spans(prompt, answer)
    assert evidence.covered_weight > 0
    owners = {
        attributor.index.corpus.contributions[
            attributor.index.corpus.documents[d].contribution
        ].contributor.lower()
        for d in evidence.document_scores
    }
    assert owners == {ADDRESSES[2]}


def test_echoing_the_question_without_the_fact_earns_no_span_credit(
    attributor: Attributor,
) -> None:
    """'The capital of Dunmere is' is verbatim in contributor 1's data, but the question gave
    the entity and the template is everyone's: a wrong value credits no one by spans."""
    prompt, answer = ask(
        attributor, "What is the capital of Dunmere?", "The capital of Dunmere is Paris."
    )
    evidence = attributor.spans(prompt, answer)
    assert any(s.length >= 4 for s in evidence.spans)  # the echo is found verbatim ...
    assert evidence.document_scores == {}  # ... and is worth nothing
    record = attributor.record(prompt, answer, evidence)
    assert record.span_mass == 0 and record.unattributed == 1_000_000
