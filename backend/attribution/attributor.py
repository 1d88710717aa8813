"""Scoring answers of one model version: what the node runs for every paid answer.

:meth:`Attributor.for_model_version` finds everything from the chain and the content store:
the version's adapter and training manifest (ModelRegistry), the attribution index the
manifest names, checked to be an index of that very adapter. Spans need only the index (fast,
on the request path); gradients load the base model with the adapter on first use (a
background worker's job: :meth:`Attributor.attribute_many` batches them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from backend.attribution.index import AttributionIndex, tokenizer_sha256
from backend.attribution.lineage import MAX_TRAINING_MANIFEST_BYTES
from backend.attribution.record import AttributionRecord
from backend.attribution.scoring import make_record, span_evidence
from backend.attribution.sketcher import Sketcher, TokenInformation
from backend.attribution.spans import SpanEvidence
from backend.modelfactory.chain import model_version
from backend.modelfactory.lora_training import pad_token_id
from backend.modelfactory.provenance import ProvenanceError, TrainingManifest
from backend.models.adapter_archive import unpack_adapter
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore, ContentStoreError

log = logging.getLogger(__name__)

Query = tuple[Sequence[int], Sequence[int]]  # (prompt token ids, answer token ids)


class AttributionError(RuntimeError):
    """A model version that cannot be attributed as asked; the message says why."""


class Attributor:
    def __init__(
        self,
        index: AttributionIndex,
        index_cid: str,
        model_id: int,
        version: int,
        base_dir: Path,
        adapter_dir: Path,
        device: str = "cpu",
    ) -> None:
        found = tokenizer_sha256(base_dir)
        if found != index.tokenizer.sha256:
            raise AttributionError(
                f"the base model in {base_dir} tokenizes differently from the index "
                f"{index_cid} (tokenizer.json sha256 {found}, index {index.tokenizer.sha256})"
            )
        self.index = index
        self.index_cid = index_cid
        self.model_id = model_id
        self.version = version
        self.base_dir = Path(base_dir)
        self.adapter_dir = Path(adapter_dir)
        self.device = device

    @classmethod
    def for_model_version(
        cls,
        p: Web3Protocol,
        store: ContentStore,
        model_id: int,
        version: int,
        base_dir: Path,
        work_dir: Path,
        device: str = "cpu",
    ) -> Attributor:
        """``p``: the protocol the version is read from; ``work_dir``: where the adapter is
        unpacked."""
        held = model_version(p, model_id, version)
        adapter_cid, manifest_cid = held.adapter_cid, held.training_manifest_cid
        if not adapter_cid:
            raise AttributionError(f"model {model_id} has no version {version}")
        try:
            manifest = TrainingManifest.from_json(
                store.get(manifest_cid, max_bytes=MAX_TRAINING_MANIFEST_BYTES)
            )
        except (ContentStoreError, ProvenanceError) as why:
            raise AttributionError(
                f"model {model_id} version {version}: training manifest {manifest_cid}: {why}"
            ) from None
        if manifest.attribution is None:
            raise AttributionError(
                f"model {model_id} version {version} was trained without an attribution index "
                f"(training manifest {manifest_cid})"
            )
        index = AttributionIndex.read(lambda c, n: store.get(c, max_bytes=n), manifest.attribution)
        if index.adapter != adapter_cid:
            raise AttributionError(
                f"the attribution index {manifest.attribution} is of adapter {index.adapter}, "
                f"model {model_id} version {version} serves {adapter_cid}"
            )
        adapter_dir = Path(work_dir) / "adapters" / adapter_cid
        if not (adapter_dir / "adapter_config.json").is_file():
            adapter_dir.mkdir(parents=True, exist_ok=True)
            for name, content in unpack_adapter(store.get(adapter_cid)).items():
                (adapter_dir / name).write_bytes(content)
        log.info(
            "attribution of model %d version %d: index %s (%d examples, %d contributions)",
            model_id,
            version,
            manifest.attribution,
            len(index.corpus),
            len(index.corpus.contributions),
        )
        return cls(index, manifest.attribution, model_id, version, base_dir, adapter_dir, device)

    @cached_property
    def sketcher(self) -> Sketcher:
        """The model, loaded on first use (spans alone never need it)."""
        tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
        information = TokenInformation(self.index.document_frequency, len(self.index.corpus))
        sketcher = Sketcher(
            self.base_dir,
            self.adapter_dir,
            self.index.settings.sketches,
            pad_token_id(tokenizer),
            information,
            self.device,
        )
        if tuple(sketcher.gradients.group_sizes) != self.index.group_sizes:
            raise AttributionError(
                f"the adapter's LoRA parameter groups {sketcher.gradients.group_sizes} differ "
                f"from the index's {list(self.index.group_sizes)}"
            )
        return sketcher

    def spans(self, prompt: Sequence[int], answer: Sequence[int]) -> SpanEvidence:
        return span_evidence(self.index, prompt, answer)

    def sketches(self, queries: Sequence[Query]) -> np.ndarray:
        """[queries, dims] int16 query sketches, computed in batches."""
        return self.sketcher.query_sketches(queries)

    def record(
        self,
        prompt: Sequence[int],
        answer: Sequence[int],
        evidence: SpanEvidence | None = None,
        sketch: np.ndarray | None = None,
    ) -> AttributionRecord:
        """The record from span evidence and a sketch computed before (either recomputed
        when None; ``sketch`` None means spans only)."""
        evidence = self.spans(prompt, answer) if evidence is None else evidence
        return make_record(
            self.index,
            self.index_cid,
            self.model_id,
            self.version,
            prompt,
            answer,
            evidence,
            sketch,
        )

    def attribute(self, prompt: Sequence[int], answer: Sequence[int]) -> AttributionRecord:
        """Spans and gradients of one answer."""
        return self.attribute_many([(prompt, answer)])[0]

    def attribute_many(self, queries: Sequence[Query]) -> list[AttributionRecord]:
        sketches = self.sketches(queries)
        return [self.record(p, a, sketch=s) for (p, a), s in zip(queries, sketches, strict=True)]
