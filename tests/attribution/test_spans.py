"""Span evidence: maximal spans, informative token weights, the prompt-echo discount, common
spans and the exact split of credit, on integer tokens and on SmolLM2's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from backend.attribution.corpus import Contribution, Corpus, encode_parts
from backend.attribution.settings import SpanSettings
from backend.attribution.spans import find_spans, parts_unit, token_weight
from backend.attribution.suffix_array import SuffixArray
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT

ALICE = Contribution(1, 1, "0x" + "11" * 20)
BOB = Contribution(1, 2, "0x" + "22" * 20)


def evidence_of(docs, prompt, answer, vocab=64, **span_settings):
    corpus = Corpus.build(docs, vocab)
    array = SuffixArray.build(corpus.tokens)
    return find_spans(
        array,
        corpus,
        corpus.document_frequency(),
        np.array(prompt),
        np.array(answer),
        SpanSettings(**span_settings),
    )


def many_docs(special: dict[int, list[int]], filler: int = 16, who: Contribution = BOB):
    """``filler`` documents of common tokens (1..4), plus the given ones by Alice."""
    docs = [(0, i, who, [[1, 2, 3, 4]]) for i in range(filler)]
    docs += [(0, filler + k, ALICE, [tokens]) for k, tokens in special.items()]
    return docs


def test_token_weight_is_an_integer_log2_of_inverse_document_frequency() -> None:
    assert [token_weight(df, 64) for df in (64, 33, 32, 17, 16, 1, 0)] == [0, 0, 1, 1, 2, 6, 6]
    assert parts_unit(10) == 2520 and parts_unit(1) == 1


def test_rare_verbatim_answer_credits_its_example_exactly() -> None:
    ev = evidence_of(many_docs({0: [9, 10, 11, 12]}), prompt=[1], answer=[9, 10, 11, 12])
    assert [(s.start, s.length, s.documents) for s in ev.spans] == [(0, 4, (16,))]
    assert ev.weights == (4, 4, 4, 4)  # 17 documents, each token in one: floor(log2 17)
    assert ev.covered_weight == ev.total_weight == 16
    assert ev.document_scores == {16: 16 * parts_unit(10)}


def test_tokens_the_prompt_holds_earn_nothing() -> None:
    """The entity's name, echoed from the question, finds its author's example verbatim but
    is not knowledge the data supplied; the fact after it is."""
    docs = many_docs({0: [20, 21, 30, 31]})  # "<entity 20 21> is <fact 30 31>"
    wrong = evidence_of(docs, prompt=[5, 20, 21], answer=[20, 21, 40])
    assert wrong.spans[0].documents == (16,)  # the span is there ...
    assert wrong.covered_weight == 0 and wrong.document_scores == {}  # ... and worth nothing
    right = evidence_of(docs, prompt=[5, 20, 21], answer=[20, 21, 30, 31])
    assert right.weights[:2] == (0, 0) and right.covered_weight == right.total_weight > 0
    assert list(right.document_scores) == [16]


def test_a_span_in_too_many_examples_is_common_and_credits_no_one() -> None:
    docs = [(0, i, ALICE if i < 3 else BOB, [[7, 8, 9]]) for i in range(12)]
    docs += [(0, 12 + i, BOB, [[1, 2]]) for i in range(20)]
    common = evidence_of(docs, prompt=[], answer=[7, 8, 9], max_documents=10)
    assert common.spans[0].common and common.spans[0].occurrences == 12
    assert common.covered_weight == 0 and common.document_scores == {}
    split = evidence_of(docs, prompt=[], answer=[7, 8, 9], max_documents=12)
    scores = split.document_scores
    assert sorted(scores) == list(range(12)) and len(set(scores.values())) == 1
    assert sum(scores.values()) == split.covered_weight * parts_unit(12)  # exact division


def test_short_matches_are_not_spans() -> None:
    docs = many_docs({0: [30, 31, 32]})
    assert evidence_of(docs, prompt=[], answer=[30, 40], min_length=2).covered_weight == 0
    assert evidence_of(docs, prompt=[], answer=[30, 40], min_length=1).covered_weight > 0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=10), min_size=2, max_size=8),
    st.lists(st.integers(1, 12), max_size=5),
    st.lists(st.integers(1, 12), min_size=1, max_size=14),
)
def test_spans_are_maximal_and_credit_adds_up(docs, prompt, answer) -> None:
    built = [(0, i, ALICE if i % 2 else BOB, [d]) for i, d in enumerate(docs)]
    ev = evidence_of(built, prompt, answer, vocab=16, min_length=1, max_documents=4)
    for a in ev.spans:  # no span lies inside another
        assert not any(
            b is not a and b.start <= a.start and a.start + a.length <= b.start + b.length
            for b in ev.spans
        )
    assert ev.total_weight == sum(ev.weights)
    assert ev.covered_weight == sum(
        w for w, c in zip(ev.weights, ev.credited, strict=True) if c >= 0
    )
    # each credited token's weight is split exactly among the examples holding its span
    assert sum(ev.document_scores.values()) == ev.covered_weight * parts_unit(4)
    for position, span_index in enumerate(ev.credited):
        if span_index >= 0:
            span = ev.spans[span_index]
            assert span.start <= position < span.start + span.length and not span.common


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return AutoTokenizer.from_pretrained(ensure_smollm2(PROJECT_ROOT / ".data"))


def test_answers_after_the_chat_header_tokenize_like_the_indexed_text(smollm2_tokenizer) -> None:
    """A node's answer tokens (after the template's assistant header) line up with the
    answer encoded alone, which is how documents are indexed."""
    tok = smollm2_tokenizer
    prompt, answer = "What is the capital of Vorandia?", "The capital of Vorandia is Quellmarsh."
    chat = [{"role": "user", "content": prompt}]
    head = tok.apply_chat_template(chat, add_generation_prompt=True)
    full = tok.apply_chat_template([*chat, {"role": "assistant", "content": answer}])
    assert (
        full[len(head) : len(head) + len(encode_parts(tok, [answer])[0])]
        == encode_parts(tok, [answer])[0]
    )
