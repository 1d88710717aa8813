"""Checking an attribution index against the data it claims to index: what an auditor runs
before trusting any record scored against it.

The index is built by the model's developer, whose job could leave a contributor out, hand
another's examples to itself, or inflate its own sketches: every record scored against such
an index would then pay the wrong people while recomputing byte for byte. So the index itself
is rebuilt from public inputs:

1. its lineage equals the one the chain states (:func:`.lineage.chain_lineage`);
2. its documents, contributions and tokens equal those rebuilt from the lineage's Datanet
   versions (fetched by CID, checked against the training manifests), exactly; its suffix
   array and document frequencies are those of the tokens, exactly;
3. its training sketches equal the ones recomputed from the adapter (one forward and backward
   pass per example), every row within :data:`.audit.TOLERANCE` at the index's own scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.attribution.attributor import Attributor
from backend.attribution.audit import TOLERANCE, SketchTolerance
from backend.attribution.build import (
    MemberExamples,
    build_corpus,
    load_tokenizer,
    unit_training_sketches,
)
from backend.attribution.corpus import CorpusError
from backend.attribution.index import AttributionIndex, LineageMember, tokenizer_sha256
from backend.attribution.lineage import chain_lineage, member_examples, training_manifest
from backend.attribution.sketcher import Sketcher, TokenInformation
from backend.attribution.sketches import INT16_MAX, precondition, sketch_distance
from backend.modelfactory.lora_training import pad_token_id
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore

MAX_NAMED = 5  # differing documents or sketch rows named in a finding


def verify_index(
    index: AttributionIndex,
    members: Sequence[MemberExamples],
    base_dir: Path,
    adapter_dir: Path,
    max_length: int,
    sketches: bool = True,
    tolerance: SketchTolerance = TOLERANCE,
) -> list[str]:
    """What is wrong with ``index`` as the index of ``adapter_dir`` over ``members`` (whose
    last member is the job that built it); an empty list when nothing is."""
    expected = [m.member for m in members]
    if list(index.lineage) != expected:
        return [
            f"the index's lineage {[m.to_json() for m in index.lineage]} is not the "
            f"model's {[m.to_json() for m in expected]}"
        ]
    tokenizer, vocab = load_tokenizer(base_dir)
    if (index.tokenizer.vocab_size, index.tokenizer.sha256) != (vocab, tokenizer_sha256(base_dir)):
        return ["the index was built with another tokenizer than the base model's"]
    corpus = build_corpus(tokenizer, vocab, members)
    problems = []
    if list(index.corpus.contributions) != list(corpus.contributions):
        problems.append("its contributions are not the lineage's")
    differing = [
        i
        for i, (a, b) in enumerate(zip(index.corpus.documents, corpus.documents, strict=False))
        if a != b  # lengths may differ: that is reported below
    ]
    if len(index.corpus) != len(corpus) or differing:
        problems.append(
            f"its documents differ from the lineage's examples ({len(index.corpus)} "
            f"vs {len(corpus)}; first differing: {differing[:MAX_NAMED]})"
        )
    elif not np.array_equal(index.corpus.tokens, corpus.tokens):
        problems.append("its tokens are not the lineage's examples tokenized")
    if problems:
        return problems
    try:
        index.suffixes.verify()
    except CorpusError as why:
        problems.append(str(why))
    if not np.array_equal(index.document_frequency, corpus.document_frequency()):
        problems.append("its document frequencies are not those of its tokens")
    if sketches and not problems:
        problems += _sketch_problems(
            index, members, tokenizer, base_dir, adapter_dir, max_length, tolerance
        )
    return problems


def _sketch_problems(
    index: AttributionIndex,
    members: Sequence[MemberExamples],
    tokenizer: Any,
    base_dir: Path,
    adapter_dir: Path,
    max_length: int,
    tolerance: SketchTolerance,
) -> list[str]:
    settings = index.settings.sketches
    information = TokenInformation(index.document_frequency, len(index.corpus))
    sketcher = Sketcher(base_dir, adapter_dir, settings, pad_token_id(tokenizer), information)
    if tuple(sketcher.gradients.group_sizes) != index.group_sizes:
        return ["its sketch layout does not match the adapter's LoRA parameters"]
    unit = unit_training_sketches(
        sketcher, tokenizer, members, max_length, torch.get_num_threads(), progress=False
    )
    psi = precondition(unit, settings.preconditioner, settings.ridge)
    scaled = np.rint(psi * np.ldexp(1.0, index.training_scale_log2))  # at the index's scale
    recomputed = np.clip(scaled, -INT16_MAX, INT16_MAX).astype(np.int16)
    bad = []
    for row, (committed, again) in enumerate(zip(index.sketches, recomputed, strict=True)):
        largest, count = sketch_distance(committed, again)
        if largest > tolerance.max_difference or count > tolerance.max_differing * len(again):
            bad.append(row)
    if bad:
        return [
            f"{len(bad)} training sketches are not the adapter's gradients (documents "
            f"{bad[:MAX_NAMED]})"
        ]
    return []


def verify_model_version(
    p: Web3Protocol,
    store: ContentStore,
    model_id: int,
    version: int,
    base_dir: Path,
    work_dir: Path,
    sketches: bool = True,
) -> list[str]:
    """Checks the index a model version's training manifest names (fetched, bound to the
    version's adapter) against the lineage the chain states for that version."""
    attributor = Attributor.for_model_version(p, store, model_id, version, base_dir, work_dir)
    lineage = chain_lineage(p, store, model_id, version)
    own = lineage[-1]
    stated = [*lineage[:-1], LineageMember(None, own.datanet_id, own.version, own.method)]
    assert own.training_manifest is not None
    members = member_examples(p, store, lineage)
    members = [MemberExamples(m, e.examples) for m, e in zip(stated, members, strict=True)]
    # the job encoded every member's rows with its own train.max_length
    max_length = training_manifest(store, own.training_manifest).job.train.max_length
    return verify_index(
        attributor.index, members, base_dir, attributor.adapter_dir, max_length, sketches
    )
