"""The attribution record of one answer, and its digest (a receipt's ``attributionDigest``).

Canonical JSON (sorted keys, no spaces, one trailing newline), every number an integer, so
the same scoring gives the same bytes on any machine. It names the model version and the
index it was scored against, commits to the prompt's and the answer's token ids by hash (not
their text), lists the answer's maximal spans with the training examples holding them, carries
the int16 query sketch (what the gradient scores were computed from: anyone holding the index
recomputes them exactly), and the shares per contribution. ``digest`` is keccak256 of the
bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from eth_utils import is_hex_address, keccak, to_checksum_address

from backend.attribution.strict_json import exact_object, uint
from backend.protocol.canonical import canonical_json

RECORD_SCHEMA = 1
ENGINE = "openledger-attribution/1"


class RecordError(ValueError):
    """A record that is malformed; the message names the field."""


@dataclass(frozen=True)
class SpanRecord:
    start: int
    length: int
    occurrences: int
    documents: tuple[int, ...]  # the index's documents holding it; empty: a common span


@dataclass(frozen=True)
class ContributionRecord:
    datanet_id: int
    contribution_id: int
    contributor: str
    span_score: int
    gradient_score: int
    share: int  # parts per million


@dataclass(frozen=True)
class AttributionRecord:
    model_id: int
    version: int
    index: str  # CID of the attribution index scored against
    prompt_hash: bytes  # keccak256 of the prompt's token ids as big-endian uint32
    answer_hash: bytes
    answer_tokens: int
    spans: tuple[SpanRecord, ...]
    covered_weight: int
    total_weight: int
    query_sketch: bytes | None  # int16 little-endian; None: scored by spans only
    contributions: tuple[ContributionRecord, ...]
    span_mass: int
    gradient_mass: int
    unattributed: int
    tail: int
    engine: str = ENGINE
    schema: int = RECORD_SCHEMA

    def sketch_array(self) -> np.ndarray | None:
        if self.query_sketch is None:
            return None
        return np.frombuffer(self.query_sketch, dtype="<i2").astype(np.int16)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "engine": self.engine,
            "model": {"id": self.model_id, "version": self.version, "index": self.index},
            "prompt_hash": "0x" + self.prompt_hash.hex(),
            "answer_hash": "0x" + self.answer_hash.hex(),
            "answer_tokens": self.answer_tokens,
            "spans": [
                {
                    "start": s.start,
                    "length": s.length,
                    "occurrences": s.occurrences,
                    "documents": list(s.documents),
                }
                for s in self.spans
            ],
            "weight": {"covered": self.covered_weight, "total": self.total_weight},
            "query_sketch": None
            if self.query_sketch is None
            else base64.b64encode(self.query_sketch).decode(),
            "contributions": [
                {
                    "datanet": c.datanet_id,
                    "contribution": c.contribution_id,
                    "contributor": to_checksum_address(c.contributor),
                    "span_score": str(c.span_score),
                    "gradient_score": str(c.gradient_score),
                    "share": c.share,
                }
                for c in self.contributions
            ],
            "masses": {
                "spans": self.span_mass,
                "gradients": self.gradient_mass,
                "unattributed": self.unattributed,
                "tail": self.tail,
            },
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def digest(self) -> bytes:
        """keccak256 of the canonical bytes: 32 bytes, what a receipt commits to."""
        return keccak(self.to_bytes())

    @classmethod
    def from_json(cls, raw: bytes | str | dict[str, Any]) -> AttributionRecord:
        try:
            data = raw if isinstance(raw, dict) else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as why:
            raise RecordError(f"an attribution record is not JSON: {why}") from None
        return _parse(data)


# --- parsing ---------------------------------------------------------------------------------

_KEYS = {
    "schema",
    "engine",
    "model",
    "prompt_hash",
    "answer_hash",
    "answer_tokens",
    "spans",
    "weight",
    "query_sketch",
    "contributions",
    "masses",
}


def _object(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    return exact_object(value, keys, what, RecordError)


def _uint(value: Any, what: str) -> int:
    return uint(value, what, RecordError)


def _int_text(value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise RecordError(f"{what} must be a decimal string, not {value!r}")
    try:
        number = int(value, 10)
    except ValueError:
        raise RecordError(f"{what} must be a decimal string, not {value!r}") from None
    if str(number) != value:
        raise RecordError(f"{what} {value!r} is not in canonical form")
    return number


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise RecordError(f"{what} must be 0x and 64 hex digits, not {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RecordError(f"{what} must be 0x and 64 hex digits, not {value!r}") from None


def _parse(data: Any) -> AttributionRecord:
    data = _object(data, _KEYS, "an attribution record")
    if data["schema"] != RECORD_SCHEMA:
        raise RecordError(f"schema {data['schema']!r}; this code reads {RECORD_SCHEMA}")
    if not isinstance(data["engine"], str):
        raise RecordError("engine must be a string")
    model = _object(data["model"], {"id", "version", "index"}, "model")
    if not isinstance(model["index"], str) or not model["index"]:
        raise RecordError("model.index must be a CID")
    spans = data["spans"]
    if not isinstance(spans, list):
        raise RecordError("spans must be a list")
    span_records = []
    for i, s in enumerate(spans):
        s = _object(s, {"start", "length", "occurrences", "documents"}, f"spans[{i}]")
        docs = s["documents"]
        if not isinstance(docs, list):
            raise RecordError(f"spans[{i}].documents must be a list")
        span_records.append(
            SpanRecord(
                _uint(s["start"], f"spans[{i}].start"),
                _uint(s["length"], f"spans[{i}].length"),
                _uint(s["occurrences"], f"spans[{i}].occurrences"),
                tuple(_uint(d, f"spans[{i}].documents") for d in docs),
            )
        )
    weight = _object(data["weight"], {"covered", "total"}, "weight")
    sketch = data["query_sketch"]
    if sketch is not None:
        if not isinstance(sketch, str):
            raise RecordError("query_sketch must be base64 text or null")
        try:
            sketch = base64.b64decode(sketch, validate=True)
        except ValueError:
            raise RecordError("query_sketch is not base64") from None
        if len(sketch) % 2:
            raise RecordError("query_sketch must hold whole int16 values")
    contributions = data["contributions"]
    if not isinstance(contributions, list):
        raise RecordError("contributions must be a list")
    named = []
    for i, c in enumerate(contributions):
        what = f"contributions[{i}]"
        c = _object(
            c,
            {"datanet", "contribution", "contributor", "span_score", "gradient_score", "share"},
            what,
        )
        if not isinstance(c["contributor"], str) or not is_hex_address(c["contributor"]):
            raise RecordError(f"{what}.contributor is not an address")
        named.append(
            ContributionRecord(
                _uint(c["datanet"], f"{what}.datanet"),
                _uint(c["contribution"], f"{what}.contribution"),
                to_checksum_address(c["contributor"]),
                _int_text(c["span_score"], f"{what}.span_score"),
                _int_text(c["gradient_score"], f"{what}.gradient_score"),
                _uint(c["share"], f"{what}.share"),
            )
        )
    masses = _object(data["masses"], {"spans", "gradients", "unattributed", "tail"}, "masses")
    return AttributionRecord(
        model_id=_uint(model["id"], "model.id"),
        version=_uint(model["version"], "model.version"),
        index=model["index"],
        prompt_hash=_hash(data["prompt_hash"], "prompt_hash"),
        answer_hash=_hash(data["answer_hash"], "answer_hash"),
        answer_tokens=_uint(data["answer_tokens"], "answer_tokens"),
        spans=tuple(span_records),
        covered_weight=_uint(weight["covered"], "weight.covered"),
        total_weight=_uint(weight["total"], "weight.total"),
        query_sketch=sketch,
        contributions=tuple(named),
        span_mass=_uint(masses["spans"], "masses.spans"),
        gradient_mass=_uint(masses["gradients"], "masses.gradients"),
        unattributed=_uint(masses["unattributed"], "masses.unattributed"),
        tail=_uint(masses["tail"], "masses.tail"),
        engine=data["engine"],
    )
