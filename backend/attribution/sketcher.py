"""Gradient sketches of a model version: the base model with its LoRA adapter, its gradients
projected and normalized as the index's settings say.

Used at training time for every training example (:mod:`.build`) and at serving time for
every answer (:mod:`.attributor`), with the same code path: the same rows give the same
float sketch on the same machine and thread count; across machines, thread counts or
batchings a few coordinates move by an LSB (the auditor's tolerance, :mod:`.audit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from backend.attribution.gradients import LoraGradients, pair_differences, torch_threads
from backend.attribution.projection import SparseProjection
from backend.attribution.settings import SketchSettings
from backend.attribution.sketches import quantize_query, unit_rows
from backend.attribution.spans import informative_weights
from backend.modelfactory.lora_training import IGNORE, Row

Progress = Callable[[int], None]  # rows done since the last call


@dataclass(frozen=True)
class TokenInformation:
    """What weighs an answer token (the index's document frequencies)."""

    document_frequency: np.ndarray  # [vocab]
    documents: int

    def row_weights(self, row: Row) -> list[float]:
        """The weights of a row's labelled tokens; its context is everything before the
        first of them."""
        ids, labels = row
        targets = [label for label in labels[1:] if label != IGNORE]
        first = next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))
        weights = informative_weights(ids[:first], targets, self.document_frequency, self.documents)
        return [float(w) for w in weights]


class Sketcher:
    """Unit-normalized projected LoRA gradients of ``base_dir`` + ``adapter_dir``."""

    def __init__(
        self,
        base_dir: Path,
        adapter_dir: Path,
        settings: SketchSettings,
        pad_id: int,
        information: TokenInformation,
        device: str = "cpu",
    ) -> None:
        self.settings = settings
        self.pad_id = pad_id
        self.information = information if settings.loss == "informative" else None
        with torch_threads(settings.threads):
            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
            model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
        model.to(device).eval()
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
        self.gradients = LoraGradients(model, top_groups=settings.top_layers)
        self.projection = SparseProjection(
            self.gradients.group_sizes, settings.dims_per_group, settings.nonzeros, settings.seed
        )

    @property
    def dims(self) -> int:
        return self.projection.output_dims

    def unit_sketches(
        self,
        rows: Sequence[Row],
        pairs: bool = False,
        progress: Progress | None = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """[examples, dims] float64 unit sketches of ``rows`` (``pairs``: rows come as
        chosen, rejected, chosen, ... and each pair is one example), in batches of the
        settings' batch size, on the settings' thread count unless ``threads`` says else."""
        step = self.settings.batch_size * (2 if pairs else 1)
        out = []
        with torch_threads(threads or self.settings.threads):
            for start in range(0, len(rows), step):
                batch = rows[start : start + step]
                weights = None
                if self.information is not None:
                    weights = [self.information.row_weights(row) for row in batch]
                grads = self.gradients.per_example(batch, self.pad_id, weights)
                if pairs:
                    grads = pair_differences(grads)
                out.append(unit_rows(self.projection.project(grads)))
                if progress is not None:
                    progress(len(batch) // (2 if pairs else 1))
        return np.concatenate(out) if out else np.zeros((0, self.dims))

    def query_sketches(self, queries: Sequence[tuple[Sequence[int], Sequence[int]]]) -> np.ndarray:
        """[queries, dims] int16: for each ``(prompt ids, answer ids)``, the sketch of the
        gradient of the answer's mean token loss given the prompt."""
        rows = [query_row(prompt, answer) for prompt, answer in queries]
        return quantize_query(self.unit_sketches(rows), self.settings.query_scale_log2)


def query_row(prompt: Sequence[int], answer: Sequence[int]) -> Row:
    if len(answer) == 0:
        raise ValueError("an empty answer has no loss to take a gradient of")
    prompt, answer = [int(t) for t in prompt], [int(t) for t in answer]
    if not prompt:  # the first token is never predicted: one labelled token needs a context
        return answer, [IGNORE, *answer[1:]]
    return prompt + answer, [IGNORE] * len(prompt) + answer
