"""A suffix array over token arrays, and the longest match of every suffix of a query.

The array lists the start of every suffix of the corpus in lexicographic token order
(built by ``pydivsufsort``; an auditor can rebuild it, or check it with any other suffix
sorter: it is unique). Tokens are kept big-endian, so comparing byte strings compares token
sequences, and a pattern's suffixes form one interval found by two binary searches.

:meth:`SuffixArray.matching_statistics` gives, for each start ``i`` of a query, the longest
``k`` such that ``query[i:i + k]`` occurs in the corpus, with its interval; it reuses that
``query[i + 1 : i + k]`` occurs too (the matching-statistics recurrence), so a query of ``L``
tokens costs O(L) interval searches of O(log n) comparisons each.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np
import pydivsufsort

from backend.attribution.corpus import CorpusError


@dataclass(frozen=True)
class Match:
    """``query[start:start + length]`` occurs at the suffixes ``array[lo:hi]``."""

    start: int
    length: int
    lo: int
    hi: int

    @property
    def count(self) -> int:
        return self.hi - self.lo


class SuffixArray:
    def __init__(self, tokens: np.ndarray, suffixes: np.ndarray) -> None:
        if tokens.dtype.str[0] not in (">", "|"):
            raise CorpusError("tokens must be big-endian")
        if suffixes.shape != tokens.shape:
            raise CorpusError(f"{len(suffixes)} suffixes for {len(tokens)} tokens")
        self.tokens = tokens
        self.suffixes = suffixes  # [tokens] suffix starts, int32 or int64
        self._width = tokens.dtype.itemsize
        self._bytes = tokens.tobytes()
        # bisect probes entries one at a time: a memoryview hands out plain ints, fast
        native = suffixes.dtype.newbyteorder("=")
        self._list = memoryview(np.ascontiguousarray(suffixes, dtype=native))

    @classmethod
    def build(cls, tokens: np.ndarray) -> SuffixArray:
        native = np.ascontiguousarray(tokens.astype(tokens.dtype.newbyteorder("=")))
        suffixes = pydivsufsort.divsufsort(native) if len(native) else np.zeros(0, np.int32)
        return cls(tokens, np.asarray(suffixes))

    def _key(self, length: int):
        data, width = self._bytes, self._width
        span = length * width
        return lambda start: data[start * width : start * width + span]

    def pattern_bytes(self, pattern: np.ndarray) -> bytes:
        return np.asarray(pattern, dtype=self.tokens.dtype).tobytes()

    def interval(self, pattern: np.ndarray, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        """The suffixes in [lo, hi) that start with ``pattern`` (an interval, maybe empty)."""
        hi = len(self._list) if hi is None else hi
        if len(pattern) == 0:
            return lo, hi
        needle = self.pattern_bytes(pattern)
        key = self._key(len(pattern))
        first = bisect_left(self._list, needle, lo, hi, key=key)
        return first, bisect_right(self._list, needle, first, hi, key=key)

    def matching_statistics(self, query: np.ndarray) -> list[Match]:
        """For every start of ``query``, its longest match in the corpus."""
        matches: list[Match] = []
        length = 0
        for start in range(len(query)):
            length = max(length - 1, 0)
            lo, hi = self.interval(query[start : start + length])
            while start + length < len(query):
                new_lo, new_hi = self.interval(query[start : start + length + 1], lo, hi)
                if new_lo == new_hi:
                    break
                lo, hi, length = new_lo, new_hi, length + 1
            matches.append(Match(start, length, lo, hi))
        return matches

    def positions(self, lo: int, hi: int) -> np.ndarray:
        return np.asarray(self.suffixes[lo:hi], dtype=np.int64)

    def verify(self) -> None:
        """Raises :class:`CorpusError` unless this is the suffix array of the tokens (it is
        unique, so rebuilding it is the check): what an auditor runs on a downloaded index."""
        rebuilt = SuffixArray.build(self.tokens).suffixes
        if not np.array_equal(rebuilt.astype(np.int64), self.suffixes.astype(np.int64)):
            first = int(np.flatnonzero(rebuilt.astype(np.int64) != self.suffixes)[0])
            raise CorpusError(f"the suffix array differs from the tokens' at entry {first}")
