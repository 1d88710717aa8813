"""Building a model version's attribution index at the end of its ModelFactory job.

Every training example of the lineage becomes a document (its tokens, for spans) and a
sketch (its gradient with respect to the trained adapter, for gradients). A DPO version's
lineage is its parent's lineage plus its own preference pairs; the parent's examples are
sketched again against the new adapter, since influence is measured on the model that
answers. Rows are encoded exactly as training encoded them: SFT examples by the chat
template with the loss on the answer, DPO pairs as chosen minus rejected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from eth_utils import to_checksum_address
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from backend.attribution.corpus import Contribution, Corpus, encode_parts, example_parts
from backend.attribution.index import (
    AttributionIndex,
    LineageMember,
    TokenizerRef,
    tokenizer_sha256,
)
from backend.attribution.settings import AttributionSettings
from backend.attribution.sketcher import Sketcher, TokenInformation
from backend.attribution.sketches import precondition, quantize_training
from backend.attribution.suffix_array import SuffixArray
from backend.modelfactory.dataset import Example
from backend.modelfactory.dpo import DPOError, encode_chat
from backend.modelfactory.lora_training import IGNORE, Row, pad_token_id
from backend.modelfactory.sft import EncodingError, encode_example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberExamples:
    """The training examples of one lineage member, each with its index in that member's
    training manifest."""

    member: LineageMember
    examples: Sequence[tuple[int, Example]]


@dataclass(frozen=True)
class BuildStats:
    documents: int
    tokens: int
    spans_seconds: float
    sketch_seconds: float
    unit_sketches: np.ndarray | None = None  # [documents, dims] before preconditioning


def training_rows(
    tokenizer: PreTrainedTokenizerBase, method: str, example: Example, max_length: int
) -> list[Row] | None:
    """The rows an example trained as (None: it has no labelled token within max_length)."""
    try:
        if method == "dpo":
            if example.prompt is None or example.chosen is None or example.rejected is None:
                return None
            rows = [
                encode_chat(tokenizer, example.prompt, answer, max_length)
                for answer in (example.chosen, example.rejected)
            ]
        else:
            rows = [encode_example(tokenizer, example, max_length)]
    except (EncodingError, DPOError):
        return None
    if any(all(label == IGNORE for label in labels[1:]) for _, labels in rows):
        return None
    return rows


def load_tokenizer(base_dir: Path) -> tuple[PreTrainedTokenizerBase, int]:
    """The base model's tokenizer and the vocabulary size token ids stay below."""
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    vocab = max(int(AutoConfig.from_pretrained(base_dir).vocab_size), len(tokenizer))
    return tokenizer, vocab


def build_corpus(
    tokenizer: PreTrainedTokenizerBase, vocab: int, members: Sequence[MemberExamples]
) -> Corpus:
    """One document per example of every member, in order (deterministic: an auditor
    rebuilds it from the lineage's data and compares it with an index's)."""
    docs = []
    for m, member in enumerate(members):
        for example_index, example in member.examples:
            contribution = Contribution(
                member.member.datanet_id,
                example.contribution_id,
                to_checksum_address(example.contributor),
            )
            parts = encode_parts(tokenizer, example_parts(example))
            docs.append((m, example_index, contribution, parts))
    return Corpus.build(docs, vocab)


def unit_training_sketches(
    sketcher: Sketcher,
    tokenizer: PreTrainedTokenizerBase,
    members: Sequence[MemberExamples],
    max_length: int,
    threads: int,
    progress: bool,
) -> np.ndarray:
    """[documents, dims] the unit sketch of every member's examples, rows encoded as they
    trained (an example without a labelled token keeps a zero row)."""
    total = sum(len(m.examples) for m in members)
    unit = np.zeros((total, sketcher.dims), dtype=np.float64)
    with tqdm(total=total, desc="attribution sketches", unit="ex", disable=not progress) as bar:
        offset = 0
        for member in members:
            pairs = member.member.method == "dpo"
            encoded = [
                training_rows(tokenizer, member.member.method, ex, max_length)
                for _, ex in member.examples
            ]
            usable = [i for i, rows in enumerate(encoded) if rows is not None]
            bar.update(len(encoded) - len(usable))
            rows = [row for i in usable for row in encoded[i]]  # type: ignore[union-attr]
            if usable:
                sketched = sketcher.unit_sketches(rows, pairs, bar.update, threads)
                unit[offset + np.array(usable)] = sketched
            offset += len(encoded)
    return unit


def build_index(
    base_dir: Path,
    adapter_dir: Path,
    members: Sequence[MemberExamples],
    settings: AttributionSettings,
    max_length: int,
    adapter_cid: str,
    base_model_cid: str | None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = None,
    keep_unit: bool = False,
) -> tuple[AttributionIndex, BuildStats]:
    """The index of the adapter in ``adapter_dir`` over ``members``' examples, in order.

    Training sketches are computed on ``threads`` torch threads (default: as many as torch
    uses now): they are committed in the index, so the job may use the whole machine; a
    recomputation elsewhere lands within the auditor's tolerance. ``keep_unit`` returns the
    unit sketches before preconditioning in the stats (benchmarks compare preconditioners)."""
    threads = threads or torch.get_num_threads()
    tokenizer, vocab = load_tokenizer(base_dir)
    started = time.perf_counter()
    corpus = build_corpus(tokenizer, vocab, members)
    suffixes = SuffixArray.build(corpus.tokens)
    frequency = corpus.document_frequency()
    spans_seconds = time.perf_counter() - started
    log.info(
        "attribution: %d documents, %d tokens indexed in %.2f s",
        len(corpus),
        len(corpus.tokens),
        spans_seconds,
    )

    started = time.perf_counter()
    information = TokenInformation(frequency, len(corpus))
    sketcher = Sketcher(
        base_dir, adapter_dir, settings.sketches, pad_token_id(tokenizer), information, device
    )
    unit = unit_training_sketches(sketcher, tokenizer, members, max_length, threads, progress)
    psi = precondition(unit, settings.sketches.preconditioner, settings.sketches.ridge)
    sketches, scale_log2 = quantize_training(psi)
    sketch_seconds = time.perf_counter() - started
    log.info(
        "attribution: %d training sketches of %d dims in %.1f s",
        len(corpus),
        sketcher.dims,
        sketch_seconds,
    )
    index = AttributionIndex(
        settings=settings,
        lineage=tuple(m.member for m in members),
        adapter=adapter_cid,
        base_model=base_model_cid,
        tokenizer=TokenizerRef(vocab, tokenizer_sha256(base_dir)),
        corpus=corpus,
        suffixes=suffixes,
        document_frequency=frequency,
        sketches=sketches,
        sketch_groups=tuple(sketcher.gradients.group_names),
        group_sizes=tuple(sketcher.gradients.group_sizes),
        training_scale_log2=scale_log2,
    )
    stats = BuildStats(
        len(corpus), len(corpus.tokens), spans_seconds, sketch_seconds, unit if keep_unit else None
    )
    return index, stats
