"""The suffix array and matching statistics against brute force, on corpora of documents."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.attribution.corpus import Contribution, Corpus, CorpusError
from backend.attribution.suffix_array import SuffixArray

ALICE = Contribution(1, 1, "0x" + "11" * 20)
VOCAB = 6  # a small alphabet: many repeats, long matches


def corpus_of(docs: list[list[list[int]]], vocab: int = VOCAB) -> Corpus:
    return Corpus.build([(0, i, ALICE, parts) for i, parts in enumerate(docs)], vocab)


def occurs(corpus: Corpus, pattern: list[int]) -> int:
    """How often ``pattern`` occurs in the corpus, by brute force."""
    tokens = corpus.tokens.astype(np.int64).tolist()
    n = len(pattern)
    return sum(tokens[i : i + n] == pattern for i in range(len(tokens) - n + 1))


documents = st.lists(
    st.lists(st.lists(st.integers(0, VOCAB - 1), max_size=12), min_size=1, max_size=3),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(documents, st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=14))
def test_matching_statistics_are_the_longest_matches(
    docs: list[list[list[int]]], query: list[int]
) -> None:
    corpus = corpus_of(docs)
    array = SuffixArray.build(corpus.tokens)
    matches = array.matching_statistics(np.array(query))
    assert [m.start for m in matches] == list(range(len(query)))
    for m in matches:
        found = query[m.start : m.start + m.length]
        assert m.count == occurs(corpus, found) > 0 or m.length == 0
        if m.start + m.length < len(query):  # one token more never occurs
            assert occurs(corpus, query[m.start : m.start + m.length + 1]) == 0
        positions = array.positions(m.lo, m.hi).tolist()
        tokens = corpus.tokens.astype(np.int64).tolist()
        assert all(tokens[p : p + m.length] == found for p in positions)


def test_matches_never_cross_a_separator() -> None:
    corpus = corpus_of([[[1, 2], [3, 4]], [[2, 3]]])
    array = SuffixArray.build(corpus.tokens)
    # "2 3" occurs only in the second document, not across the first one's parts
    [match, *_] = array.matching_statistics(np.array([2, 3, 4]))
    assert match.length == 2 and match.count == 1
    held = corpus.documents_at(array.positions(match.lo, match.hi))
    assert held.tolist() == [1]


def test_suffix_array_is_rebuilt_identically_and_checked() -> None:
    corpus = corpus_of([[[1, 2, 3, 1, 2]], [[2, 1, 2, 3]]])
    array = SuffixArray.build(corpus.tokens)
    array.verify()
    swapped = array.suffixes.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    with pytest.raises(CorpusError, match="differs from the tokens' at entry 0"):
        SuffixArray(corpus.tokens, swapped).verify()


def test_document_frequency_counts_documents_not_occurrences() -> None:
    corpus = corpus_of([[[1, 1, 1]], [[1, 2]], [[3]]])
    assert corpus.document_frequency().tolist() == [0, 2, 1, 1, 0, 0]


def test_corpus_refuses_tokens_outside_the_vocabulary() -> None:
    with pytest.raises(CorpusError, match=r"example 0\[1\] = 9 is not a token id of a 6-token"):
        corpus_of([[[1, 9]]])
    with pytest.raises(CorpusError, match="not closed by a separator"):
        Corpus(np.array([1, 2], dtype=">u2"), corpus_of([[[1]]]).documents, [ALICE], VOCAB)
