"""Every setting that changes an attribution result, committed in the index manifest.

Two parties who score the same answer against the same index must reach the same record: so
nothing that moves a score is left to a default of the scoring machine. The settings are
written into the index's manifest at build time and read back from it by every scorer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Preconditioner = Literal["trak", "none"]
PRECONDITIONERS: tuple[Preconditioner, ...] = ("trak", "none")
LossWeighting = Literal["informative", "mean"]
LOSS_WEIGHTINGS: tuple[LossWeighting, ...] = ("informative", "mean")
MAX_DOCUMENTS_CAP = 24  # lcm(1..24) still fits comfortably in an int64 span score


class SettingsError(ValueError):
    """An attribution setting out of its range; the message names it and the value."""


def _int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SettingsError(f"{name} must be an integer in [{low}, {high}], not {value!r}")


@dataclass(frozen=True)
class SpanSettings:
    """How answer spans are matched against the training tokens."""

    min_length: int = 2  # tokens: shorter matches are not spans
    max_documents: int = 10  # a span in more training examples is common: no one is credited

    def __post_init__(self) -> None:
        _int("spans.min_length", self.min_length, 1, 1024)
        _int("spans.max_documents", self.max_documents, 1, MAX_DOCUMENTS_CAP)


@dataclass(frozen=True)
class SketchSettings:
    """How gradients become int16 sketches."""

    # Only the LoRA gradients of the top layers are sketched (0: every layer): measured on
    # the planted facts (bench/attribution.py), the top 8 of SmolLM2's 30 layers at 512
    # dimensions each attribute paraphrases far better than all 30 at 128 (the projection
    # was the bottleneck), and the backward pass stops 8 layers down.
    top_layers: int = 8
    dims_per_group: int = 512  # projected dimensions per layer
    nonzeros: int = 4  # output coordinates each gradient coordinate is added to
    seed: int = 0  # of the projection
    # "informative": an example's loss weighs each answer token as spans do (its
    # informativeness, 0 for tokens its prompt holds); "mean": every answer token alike
    loss: LossWeighting = "informative"
    preconditioner: Preconditioner = "trak"
    ridge: float = 1.0  # TRAK's damping, as a multiple of the mean eigenvalue of Phi^T Phi
    query_scale_log2: int = 14  # a unit query sketch is stored as round(q * 2^14)
    threads: int = 2  # torch threads for query gradients (results may move by an LSB with it)
    batch_size: int = 8  # examples per forward/backward when sketching training data

    def __post_init__(self) -> None:
        _int("sketches.dims_per_group", self.dims_per_group, 1, 4096)
        _int("sketches.top_layers", self.top_layers, 0, 4096)
        _int("sketches.nonzeros", self.nonzeros, 1, 64)
        _int("sketches.seed", self.seed, 0, 2**63 - 1)
        if self.loss not in LOSS_WEIGHTINGS:
            raise SettingsError(
                f"sketches.loss must be one of {list(LOSS_WEIGHTINGS)}, not {self.loss!r}"
            )
        if self.preconditioner not in PRECONDITIONERS:
            raise SettingsError(
                f"sketches.preconditioner must be one of {list(PRECONDITIONERS)}, "
                f"not {self.preconditioner!r}"
            )
        ridge = self.ridge
        if not isinstance(ridge, int | float) or isinstance(ridge, bool) or not 0 < ridge <= 1e6:
            raise SettingsError(f"sketches.ridge must be a number in (0, 1e6], not {ridge!r}")
        _int("sketches.query_scale_log2", self.query_scale_log2, 4, 14)
        _int("sketches.threads", self.threads, 1, 256)
        _int("sketches.batch_size", self.batch_size, 1, 1024)


@dataclass(frozen=True)
class AttributionSettings:
    spans: SpanSettings = SpanSettings()
    sketches: SketchSettings = SketchSettings()
    top_contributions: int = 32  # contributions named in a record; the rest is its tail

    def __post_init__(self) -> None:
        _int("top_contributions", self.top_contributions, 1, 10_000)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> AttributionSettings:
        if not isinstance(data, dict):
            raise SettingsError("attribution settings must be a JSON object")
        _known("", data, cls)
        spans, sketches = data.get("spans", {}), data.get("sketches", {})
        if not isinstance(spans, dict) or not isinstance(sketches, dict):
            raise SettingsError("spans and sketches must be JSON objects")
        _known("spans.", spans, SpanSettings)
        _known("sketches.", sketches, SketchSettings)
        rest = {k: v for k, v in data.items() if k not in ("spans", "sketches")}
        return cls(SpanSettings(**spans), SketchSettings(**sketches), **rest)


def _known(prefix: str, data: dict[str, Any], kind: type) -> None:
    unknown = sorted(set(data) - {f.name for f in fields(kind)})
    if unknown:
        raise SettingsError(f"unknown attribution setting(s) {[prefix + u for u in unknown]}")
