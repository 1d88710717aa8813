"""The training tokens attribution indexes: one document per training example, each example
traced to its contribution.

A document is the example's content as the tokenizer encodes each part on its own (a prompt,
an answer, a chat turn, a text chunk), every part followed by the separator token (the largest
value of the token type, never a real token): a span never runs across two parts or two
examples. The chat template's own tokens are left out, since every example shares them. An
answer the node generates after the template's assistant header tokenizes the same way as the
answer encoded alone, so spans line up token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from eth_utils import keccak
from transformers import PreTrainedTokenizerBase

from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example

U16_LIMIT = 0xFFFF  # vocabularies below this are stored in 2 bytes, 0xFFFF the separator


class CorpusError(ValueError):
    """Token data that cannot be indexed or queried; the message says which and why."""


def token_dtype(vocab_size: int) -> np.dtype:
    """Big-endian unsigned (so byte order is token order), 2 bytes when the vocabulary fits."""
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise CorpusError(f"vocab_size must be a positive integer, not {vocab_size!r}")
    return np.dtype(">u2") if vocab_size < U16_LIMIT else np.dtype(">u4")


def separator(dtype: np.dtype) -> int:
    return int(np.iinfo(dtype).max)


def token_ids(ids: Sequence[int] | np.ndarray, vocab_size: int, what: str) -> np.ndarray:
    """``ids`` as an int64 array, each checked to be a token of the vocabulary."""
    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise CorpusError(f"{what} must be a flat sequence of integer token ids")
    array = array.astype(np.int64)
    bad = np.flatnonzero((array < 0) | (array >= vocab_size))
    if bad.size:
        raise CorpusError(
            f"{what}[{int(bad[0])}] = {int(array[bad[0]])} is not a token id of a "
            f"{vocab_size}-token vocabulary"
        )
    return array


def tokens_hash(ids: Sequence[int] | np.ndarray) -> bytes:
    """keccak256 of the ids as big-endian uint32s: what records commit to instead of text."""
    return keccak(np.asarray(ids, dtype=">u4").tobytes())


def example_parts(example: Example) -> list[str]:
    """The texts an example contributes, in order (a preference pair's chosen answer, not its
    rejected one: the model learned to move away from that)."""
    kind = example.kind
    if kind == DataFormat.TEXT.value:
        parts = [example.text]
    elif kind == DataFormat.CHAT.value:
        parts = [content for _, content in example.messages or ()]
    elif kind == DataFormat.INSTRUCTION.value:
        parts = [example.prompt, example.response]
    elif kind == DataFormat.PREFERENCE.value:
        parts = [example.prompt, example.chosen]
    else:
        raise CorpusError(f"an example of unknown kind {kind!r}")
    return [p for p in parts if p]


def encode_parts(tokenizer: PreTrainedTokenizerBase, parts: Sequence[str]) -> list[list[int]]:
    return [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in parts]


@dataclass(frozen=True, order=True)
class Contribution:
    """A Datanet contribution, the unit attribution pays."""

    datanet_id: int
    contribution_id: int
    contributor: str  # checksummed address

    def key(self) -> list[int | str]:
        return [self.datanet_id, self.contribution_id, self.contributor]


@dataclass(frozen=True)
class Document:
    """Training example ``example`` of lineage member ``member``, from contribution
    ``contribution`` (an index into the corpus' contributions), at tokens [start, end)."""

    member: int
    example: int
    contribution: int
    start: int
    end: int  # exclusive; the separator that closes the last part is not included


class Corpus:
    """Every document's tokens in one array, separators between parts."""

    def __init__(
        self,
        tokens: np.ndarray,
        documents: Sequence[Document],
        contributions: Sequence[Contribution],
        vocab_size: int,
    ) -> None:
        self.dtype = token_dtype(vocab_size)
        self.tokens = np.ascontiguousarray(tokens, dtype=self.dtype)  # [total tokens]
        self.documents = tuple(documents)
        self.contributions = tuple(contributions)
        self.vocab_size = vocab_size
        self.separator = separator(self.dtype)
        self._starts = np.array([d.start for d in self.documents], dtype=np.int64)  # [docs]
        self._check()

    def _check(self) -> None:
        previous_end = 0
        for i, doc in enumerate(self.documents):
            if not 0 <= doc.contribution < len(self.contributions):
                raise CorpusError(f"document {i} names contribution {doc.contribution}")
            if doc.start != previous_end or doc.end < doc.start:
                raise CorpusError(f"document {i} does not follow the one before it")
            if doc.end >= len(self.tokens) or self.tokens[doc.end] != self.separator:
                raise CorpusError(f"document {i} is not closed by a separator")
            previous_end = doc.end + 1
        if previous_end != len(self.tokens):
            raise CorpusError("tokens after the last document")
        real = self.tokens[self.tokens != self.separator]
        if real.size and int(real.max()) >= self.vocab_size:
            raise CorpusError(f"token {int(real.max())} is outside the vocabulary")

    @classmethod
    def build(
        cls,
        docs: Sequence[tuple[int, int, Contribution, Sequence[Sequence[int]]]],
        vocab_size: int,
    ) -> Corpus:
        """From ``(member, example, contribution, token parts)`` per document, in order."""
        dtype = token_dtype(vocab_size)
        sep = separator(dtype)
        index: dict[Contribution, int] = {}
        contributions: list[Contribution] = []
        chunks: list[np.ndarray] = []
        documents: list[Document] = []
        offset = 0
        for member, example, contribution, parts in docs:
            if contribution not in index:
                index[contribution] = len(contributions)
                contributions.append(contribution)
            pieces: list[int] = []
            for part in parts:
                pieces.extend(token_ids(part, vocab_size, f"example {example}").tolist())
                pieces.append(sep)
            if not pieces:
                pieces = [sep]  # an empty document still holds its place
            array = np.array(pieces, dtype=np.int64)
            documents.append(
                Document(member, example, index[contribution], offset, offset + len(array) - 1)
            )
            chunks.append(array)
            offset += len(array)
        tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        return cls(tokens.astype(dtype), documents, contributions, vocab_size)

    def __len__(self) -> int:
        return len(self.documents)

    def documents_at(self, positions: np.ndarray) -> np.ndarray:
        """The document holding each token position [positions] -> [positions]."""
        return np.searchsorted(self._starts, positions, side="right") - 1

    def document_frequency(self) -> np.ndarray:
        """[vocab] uint32: in how many documents each token occurs."""
        counts = np.zeros(self.vocab_size, dtype=np.int64)
        for doc in self.documents:
            present = np.unique(self.tokens[doc.start : doc.end])
            present = present[present != self.separator].astype(np.int64)
            counts[present] += 1
        return counts.astype(np.uint32)
