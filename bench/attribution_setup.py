"""The planted-facts Datanet of bench/attribution.py and bench/attribution_counterfactual.py:
its contributors' examples, the adapter trained on them, its attribution index, the chat
prompts and answers of the probes, and the two benchmarks' options."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from common import default_out
from planted_facts import Fact, contributor_files

from backend.attribution.build import BuildStats, MemberExamples, build_index, training_rows
from backend.attribution.index import AttributionIndex, LineageMember
from backend.attribution.settings import AttributionSettings
from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example, contribution_examples
from backend.modelfactory.lora_training import Row
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import LoraSettings, TrainSettings
from backend.protocol.deployments import PROJECT_ROOT

CONTRIBUTORS, FACTS_EACH = 12, 4
LORA = LoraSettings(rank=8, alpha=16.0)
TRAIN = TrainSettings(epochs=8, batch_size=8, learning_rate=2e-3, max_length=128, seed=0)
log = logging.getLogger("bench.attribution")


def address(contributor: int) -> str:
    return "0x" + f"{contributor + 1:040x}"


def planted_examples(facts: list[Fact]) -> list[Example]:
    """The contributors' files as a job sees them: contribution id = contributor + 1, the
    file's CID, and every row's line and byte range."""
    examples = []
    for c, data in enumerate(contributor_files(facts, CONTRIBUTORS)):
        examples += contribution_examples(data, DataFormat.INSTRUCTION, c + 1, address(c))[0]
    return examples


def train(base: Path, examples: list[Example], train_settings: TrainSettings, work: Path) -> Path:
    """The planted adapter, reused when the same data and settings trained it before."""
    key = hashlib.sha256(
        json.dumps([[e.content() for e in examples], str(train_settings), str(LORA)]).encode()
    ).hexdigest()[:16]
    adapter = work / f"adapter-{key}"
    if (adapter / "adapter_config.json").is_file():
        log.info("reusing the adapter trained before in %s", adapter)
        return adapter
    started = time.perf_counter()
    train_sft(base, examples, LORA, train_settings, adapter, progress=True)
    log.info("trained in %.0f s", time.perf_counter() - started)
    return adapter


def chat_prompt(tokenizer: Any, question: str) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True
        )
    )


def answer_ids(tokenizer: Any, text: str) -> list[int]:
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def planted_index(
    base: Path, adapter: Path, examples: list[Example], folder: Path, **options: Any
) -> tuple[AttributionIndex, BuildStats, str]:
    """The adapter's index over ``examples`` as a job builds it (one SFT lineage member),
    written to ``folder``; its build statistics and CID. ``options``: ``build_index``'s."""
    member = MemberExamples(LineageMember(None, 1, 1, "sft"), list(enumerate(examples)))
    index, stats = build_index(
        base, adapter, [member], AttributionSettings(), TRAIN.max_length, "planted", None,
        **options,
    )  # fmt: skip
    return index, stats, index.write(folder)


def planted_rows(tokenizer: Any, examples: list[Example]) -> list[Row]:
    """The training rows of ``examples``, as the index sketched them."""
    return [r for e in examples for r in training_rows(tokenizer, "sft", e, TRAIN.max_length) or []]


def bench_args(doc: str, quick_help: str, name: str) -> tuple[argparse.Namespace, Path]:
    """The attribution benchmarks' options (``--out``, ``--work``, ``--quick``), logging set up,
    and where the results go (bench/results/NAME.json; a temporary file for ``--quick``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--work", type=Path, default=PROJECT_ROOT / ".data" / "bench" / "attribution"
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return args, args.out or default_out(name, args.quick)
