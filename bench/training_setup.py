"""What bench/training.py's measurements share (and bench/prefix_sharing.py uses): the data,
the training settings, the plan's fields, and the preference pairs made from the data."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example
from backend.modelfactory.spec import LoraSettings
from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.unixfs import compute_cid

DATA_DIR = PROJECT_ROOT / "datasets" / "unit-conversions"
LORA = LoraSettings(
    rank=8, alpha=16.0, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
)
SEED = 0
EVAL_FRACTION = 0.1
MAX_LENGTH = 160  # tokens; the longest unit-conversion chat is ~125, so nothing is cut
SFT_LEARNING_RATE = 2e-3
DPO_LEARNING_RATE = 1e-3
BETA = 0.1


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to run."""

    sft_steps: int  # steps of the quality run
    batch_size: int  # examples per SFT step (both trainers)
    eval_limit: int | None  # held-out examples scored (None: all)
    samples: int  # greedy generations shown
    new_tokens: int  # per generation
    throughput_steps: int  # steps of each timed throughput run
    throughput_runs: int  # timed runs of each trainer (the median is reported)
    trl_warmup_steps: int  # untimed trl run first (its one-time costs are not the loop's)
    dpo_train_pairs: int
    dpo_steps: int
    dpo_batch_size: int  # pairs per DPO step
    dpo_eval_limit: int | None  # held-out pairs scored (None: all)


# ---------------------------------------------------------------------------- data


def load_examples(folder: Path) -> list[Example]:
    """The approved instruction pairs under ``folder`` (every ``*.jsonl`` outside ``bad/``, in
    path order) as examples with provenance: contribution id = the file's rank (from 1), CID of
    its bytes, contributor = its path in the repository, the row's 1-based line and byte range."""
    files = sorted(
        path for path in folder.rglob("*.jsonl") if "bad" not in path.relative_to(folder).parts[:-1]
    )
    examples: list[Example] = []
    for contribution_id, path in enumerate(files, start=1):
        data = path.read_bytes()
        origin = {
            "contribution_id": contribution_id,
            "cid": compute_cid(data),
            "contributor": str(path.relative_to(PROJECT_ROOT)),
        }
        start = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            end = start + len(raw)
            if raw.strip():
                record = json.loads(raw)
                prompt, response = record.get("prompt"), record.get("response")
                if not isinstance(prompt, str) or not isinstance(response, str):
                    raise ValueError(f"{path}:{number}: prompt and response must be strings")
                where = {"line": number, "byte_start": start, "byte_end": end}
                examples.append(
                    Example(
                        **origin,
                        **where,
                        kind=DataFormat.INSTRUCTION.value,
                        prompt=prompt,
                        response=response,
                    )
                )
            start = end + 1
    if not examples:
        raise ValueError(f"no instruction pairs under {folder} (outside bad/)")
    return examples


# "316.9 yards is exactly 289.77336 metres (1 yard = ...)": the result and its unit
RESULT = re.compile(r" is (?:exactly|about) (-?\d+(?:\.\d+)?) (.+?) \(")
UNITS = {  # every unit the dataset converts, by quantity (plural, then singular)
    "length": [("inches", "inch"), ("centimetres", "centimetre"), ("feet", "foot"),
               ("metres", "metre"), ("yards", "yard"), ("miles", "mile"),
               ("kilometres", "kilometre")],
    "mass": [("ounces", "ounce"), ("grams", "gram"), ("pounds", "pound"),
             ("kilograms", "kilogram"), ("stone", "stone")],
    "volume": [("US gallons", "US gallon"), ("litres", "litre"), ("US quarts", "US quart"),
               ("US fluid ounces", "US fluid ounce"), ("millilitres", "millilitre")],
    "temperature": [("degrees Celsius", "degree Celsius"),
                    ("degrees Fahrenheit", "degree Fahrenheit"), ("kelvins", "kelvin")],
}  # fmt: skip
ERRORS = ("result x 10", "result / 10", "wrong unit")


def _other_unit(unit: str, source: str) -> str:
    """The next unit of the same quantity (cyclically) that is neither ``unit`` nor the one
    converted from; plural as the dataset writes results."""
    for group in UNITS.values():
        names = [u for pair in group for u in pair]
        if unit in names:
            plurals = [plural for plural, _ in group]
            at = next(i for i, pair in enumerate(group) if unit in pair)
            for step in range(1, len(plurals)):
                other = plurals[(at + step) % len(plurals)]
                if other not in (group[at][0], source) and not source.endswith(" " + other):
                    return other
    raise ValueError(f"no other unit for {unit!r}")


def corrupt(response: str, error: str) -> str:
    """``response`` with one error: the result's decimal point moved one place either way (a
    rounded result keeps its 4 decimal places, so only the value is wrong), or the result in
    another unit of the same quantity."""
    match = RESULT.search(response)
    if match is None:
        raise ValueError(f"no result found in {response!r}")
    value, unit = match.group(1), match.group(2)
    if error in ("result x 10", "result / 10"):  # the decimal point moved one place
        shifted = Decimal(value).scaleb(1 if error == "result x 10" else -1)
        if " is about " in response:  # keep the 4 places the answer says it is rounded to
            shifted = shifted.quantize(Decimal(value))
        wrong = f"{shifted:f}"
        start, end = match.span(1)
    elif error == "wrong unit":
        source = response[: match.start()]  # "316.9 yards"
        wrong = _other_unit(unit, source)
        start, end = match.span(2)
    else:
        raise ValueError(f"unknown error kind {error!r}; choose among {list(ERRORS)}")
    return response[:start] + wrong + response[end:]


def preference_examples(examples: Sequence[Example]) -> list[tuple[Example, str]]:
    """Each instruction row as a preference pair (same provenance, so the hash split puts it on
    the same side) and the kind of error its rejected answer has (alternating by row)."""
    made = []
    for index, example in enumerate(examples):
        assert example.response is not None and example.prompt is not None
        error = ERRORS[index % len(ERRORS)]
        rejected = corrupt(example.response, error)
        pair = replace(
            example,
            kind=DataFormat.PREFERENCE.value,
            response=None,
            chosen=example.response,
            rejected=rejected,
        )
        made.append((pair, error))
    return made


def spread(examples: Sequence[Example], count: int | None) -> list[Example]:
    """``count`` examples spread over every file: the lowest content hashes (all when None)."""
    if count is None:
        return list(examples)
    return sorted(examples, key=lambda e: e.content_sha256)[:count]
