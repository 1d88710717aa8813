"""Job specs: every field checked up front with a message naming it; JSON round trip; the
JSON schema the API shows."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from backend.modelfactory.spec import (
    MAX_ID,
    MAX_RANK,
    MAX_STEPS,
    JobSpec,
    JobSpecError,
    LoraSettings,
    TrainSettings,
)


def test_json_round_trip_keeps_every_setting() -> None:
    spec = JobSpec(
        3, 2, "dpo", "/models/base", LoraSettings(16, 32.0, 0.05, ("v_proj", "q_proj")),
        TrainSettings(2, 4, 1e-4, 128, 7, 0.2, 10, 0.5, "cuda"), model_id=5,
    )  # fmt: skip
    again = JobSpec.from_json(spec.to_json())
    assert again == spec
    assert again.lora.target_modules == ("q_proj", "v_proj")  # sorted, deduplicated
    assert JobSpec.from_json({"datanet_id": 1, "version": 1}) == JobSpec(1, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"datanet_id": 0, "version": 1}, "datanet_id must be a positive integer, not 0"),
        ({"datanet_id": 1, "version": True}, "version must be a positive integer, not True"),
        ({"datanet_id": 1, "version": 1, "method": "ppo"}, "method must be one of"),
        ({"datanet_id": 1, "version": 1, "method": "dpo"}, "method 'dpo' needs model_id"),
        ({"datanet_id": 1, "version": 1, "base_model": ""}, "base_model must be"),
        ({"datanet_id": 1, "version": 1, "epochs": 2}, "unknown job spec field(s) ['epochs']"),
        ({"datanet_id": 1, "version": 1, "lora": {"rank": 512}}, "lora.rank must be at most 256"),
        ({"datanet_id": 1, "version": 1, "lora": {"r": 8}}, "['lora.r']"),
        ({"datanet_id": 1, "version": 1, "lora": {"alpha": float("nan")}}, "lora.alpha"),
        ({"datanet_id": 1, "version": 1, "lora": {"dropout": 1.0}}, "lora.dropout must be in"),
        ({"datanet_id": 1, "version": 1, "lora": {"target_modules": []}}, "non-empty list"),
        ({"datanet_id": 1, "version": 1, "lora": {"target_modules": ["q_proj", 3]}}, "names"),
        ({"datanet_id": 1, "version": 1, "lora": {"target_modules": ["embed"]}}, "['embed']"),
        ({"datanet_id": 1, "version": 1, "train": {"learning_rate": 0}}, "train.learning_rate"),
        ({"datanet_id": 1, "version": 1, "train": {"seed": 2**63}}, "train.seed must be"),
        ({"datanet_id": 1, "version": 1, "train": {"seed": -1}}, "train.seed must be"),
        ({"datanet_id": 1, "version": 1, "train": {"eval_fraction": 0.9}}, "eval_fraction"),
        ({"datanet_id": 1, "version": 1, "train": {"max_steps": 0}}, "train.max_steps"),
        ({"datanet_id": 1, "version": 1, "train": {"batch_size": "8"}}, "train.batch_size"),
        ({"datanet_id": 1, "version": 1, "train": {"device": "tpu"}}, "train.device must be"),
        ({"datanet_id": 1, "version": 1, "train": {"device": None}}, "train.device must be"),
        ({"version": 1}, "job spec:"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        JobSpec.from_json(data)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_json_numbers_keep_their_form_and_integral_floats_are_integers() -> None:
    spec = JobSpec.from_json({"datanet_id": 1.0, "version": 2, "lora": {"alpha": 16}})
    assert (spec.datanet_id, spec.version) == (1, 2) and type(spec.datanet_id) is int
    assert b'"alpha":16,' in spec.to_json_bytes()  # as written: a manifest keeps its bytes
    with pytest.raises(JobSpecError, match=r"train\.batch_size must be a positive integer"):
        JobSpec.from_json({"datanet_id": 1, "version": 1, "train": {"batch_size": 8.5}})


def test_every_problem_is_named_and_constructors_refuse_like_json() -> None:
    with pytest.raises(JobSpecError) as caught:
        JobSpec.from_json({"datanet_id": 0, "version": 1, "lora": {"rank": 300}, "x": 1})
    assert [field for field, _ in caught.value.problems] == ["", "datanet_id", "lora.rank"]
    assert str(caught.value).startswith("unknown job spec field(s) ['x']")
    with pytest.raises(JobSpecError, match=r"^lora\.dropout must be in \[0.0, 0.9\], not 1.5$"):
        LoraSettings(8, 16.0, 1.5)
    with pytest.raises(JobSpecError, match=r"^train\.seed must be an integer in"):
        TrainSettings(seed=-1)
    assert LoraSettings(target_modules=["v_proj", "q_proj", "v_proj"]).target_modules == (
        "q_proj",
        "v_proj",
    )


def test_the_json_schema_states_the_bounds() -> None:
    schema = TypeAdapter(JobSpec).json_schema()
    lora, train = (schema["$defs"][k]["properties"] for k in ("LoraSettings", "TrainSettings"))
    assert (lora["rank"]["minimum"], lora["rank"]["maximum"]) == (1, MAX_RANK)
    assert train["learning_rate"]["exclusiveMinimum"] == 0
    assert train["max_steps"]["anyOf"][0]["maximum"] == MAX_STEPS
    assert schema["properties"]["model_id"]["anyOf"][0]["maximum"] == MAX_ID
    assert schema["additionalProperties"] is False
