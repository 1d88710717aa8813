"""Sampling parameters of a request and next-token selection for a batch of rows.

Temperature 0 is greedy (argmax, the tokens PEFT's own ``generate`` gives); otherwise the
logits are divided by the temperature, cut to the smallest set of tokens whose probability
reaches ``top_p`` (nucleus sampling), and sampled with the request's own generator, so a
request with a ``seed`` gets the same tokens whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_STOP_SEQUENCES = 4  # as OpenAI's API


@dataclass(frozen=True)
class SamplingParams:
    """How one request is decoded (the OpenAI API's names and meanings)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(self.stop)}")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty strings")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generator(self) -> torch.Generator | None:
        """A CPU generator seeded with ``seed`` (None: the global RNG)."""
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed)


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Probabilities ``[vocab]`` of one row after temperature and top-p filtering."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [vocab]
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)  # [vocab]
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each
    sorted_probs[before >= top_p] = 0.0  # keeps at least the most likely token
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum()


def select_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """The next token of each row of ``logits: [rows, vocab]``."""
    tokens = logits.argmax(-1).tolist()  # greedy rows keep these
    for row, p in enumerate(params):
        if p.greedy:
            continue
        probs = nucleus_probs(logits[row], p.temperature, p.top_p).cpu()
        tokens[row] = int(torch.multinomial(probs, 1, generator=generators[row]).item())
    return tokens
