"""Per-example gradients of a PEFT LoRA model's loss with respect to its adapter, for a whole
batch in one forward and backward pass.

For a LoRA projection ``y += B(A(x)) * s`` (``A``: [r, in], ``B``: [out, r]), with ``x`` the
layer's input [batch, seq, in], ``h = A x`` [batch, seq, r] and ``g`` the gradient of the loss
at ``B``'s output [batch, seq, out], example ``b``'s gradients are sums over its own tokens:

    dL_b/dB = sum_t g[b, t]^T h[b, t]          [out, r]
    dL_b/dA = sum_t (g[b, t] B)^T x[b, t]      [r, in]

Hooks keep ``x``, ``h`` and ``g``; the batch's loss is the sum of every example's mean
token loss, so each example's slice of ``g`` is its own. Parameters are grouped by
transformer layer (the projection's blocks), each group's coordinates in a fixed order: the
layer's LoRA modules by name, ``A`` then ``B``, row-major.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from backend.modelfactory.lora_training import IGNORE, Row, collate
from backend.modelfactory.sft import token_losses

_LAYER = re.compile(r"\.layers\.(\d+)\.")


class GradientError(RuntimeError):
    """A model or batch whose LoRA gradients cannot be taken; the message says why."""


@dataclass(frozen=True)
class LoraModule:
    name: str
    layer: LoraLayer
    adapter: str

    @property
    def a(self) -> torch.nn.Linear:
        return self.layer.lora_A[self.adapter]

    @property
    def b(self) -> torch.nn.Linear:
        return self.layer.lora_B[self.adapter]

    @property
    def size(self) -> int:
        return self.a.weight.numel() + self.b.weight.numel()


def _group_key(name: str) -> tuple[int, str]:
    found = _LAYER.search(name)
    return (int(found.group(1)), "") if found else (-1, name)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Runs with ``threads`` torch threads (float results depend on it), then restores."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LoraGradients:
    """Per-example LoRA gradients of ``model`` (a PEFT model in eval mode, LoRA dropout off)."""

    def __init__(self, model: PeftModel, adapter: str = "default", top_groups: int = 0) -> None:
        """``top_groups`` > 0 keeps only the last that many groups (the top transformer
        layers): the backward pass then stops below them, and the layers under them run
        without building a graph."""
        modules = [
            LoraModule(name, module, adapter)
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer) and adapter in module.lora_A
        ]
        if not modules:
            raise GradientError(f"the model has no LoRA modules of adapter {adapter!r}")
        modules.sort(key=lambda m: (_group_key(m.name), m.name))
        groups: dict[tuple[int, str], list[LoraModule]] = {}
        for module in modules:
            groups.setdefault(_group_key(module.name), []).append(module)
        keys = list(groups)[-top_groups:] if top_groups else list(groups)
        for module in modules:  # only the kept groups' weights take part in the backward pass
            kept = _group_key(module.name) in keys
            module.a.weight.requires_grad_(kept)
            module.b.weight.requires_grad_(kept)
        self.model = model
        self.groups = [groups[k] for k in keys]
        self.group_names = [f"layer {key[0]}" if key[0] >= 0 else key[1] for key in keys]
        self.group_sizes = [sum(m.size for m in group) for group in self.groups]

    def per_example(
        self,
        rows: Sequence[Row],
        pad_id: int,
        token_weights: Sequence[Sequence[float]] | None = None,
    ) -> list[np.ndarray]:
        """One float32 array [rows, group size] per group: each row's gradient of its loss,
        the mean over its labelled tokens, or with ``token_weights`` (per row, one weight per
        labelled token in order) their weighted mean."""
        device = next(self.model.parameters()).device
        input_ids, attention_mask, labels = (t.to(device) for t in collate(rows, pad_id))
        scored = labels[:, 1:] != IGNORE  # [rows, seq - 1]
        counts = scored.sum(dim=1)  # [rows]
        if bool((counts == 0).any()):
            raise GradientError("a row has no labelled token to take a loss on")
        if token_weights is None:
            per_token = (1.0 / counts.float()).repeat_interleave(counts)  # [labelled tokens]
        else:
            per_token = _normalized_weights(token_weights, counts.tolist()).to(device)
        saved: dict[str, dict[str, torch.Tensor]] = {}
        handles = []
        for group in self.groups:
            for module in group:
                handles += self._hooks(module, saved)
        try:
            self.model.eval()
            losses = token_losses(self.model, input_ids, attention_mask, labels, False)
            loss = (losses * per_token).sum()
            params = [p for group in self.groups for m in group for p in (m.a.weight, m.b.weight)]
            torch.autograd.grad(loss, params)
        finally:
            for handle in handles:
                handle.remove()
        result = []
        for group in self.groups:
            parts = []
            for module in group:
                x, h, g = (saved[module.name][k] for k in ("x", "h", "g"))
                grad_b = torch.einsum("bto,btr->bor", g, h)  # [rows, out, r]
                grad_h = g @ module.b.weight  # [rows, seq, r]
                grad_a = torch.einsum("btr,bti->bri", grad_h, x)  # [rows, r, in]
                parts += [grad_a.flatten(1), grad_b.flatten(1)]
            result.append(torch.cat(parts, dim=1).detach().float().cpu().numpy())
        return result

    @staticmethod
    def _hooks(module: LoraModule, saved: dict[str, dict[str, torch.Tensor]]) -> list:
        store = saved.setdefault(module.name, {})

        def keep_input(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            store["x"] = args[0].detach()

        def keep_hidden(_: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor):
            store["h"] = args[0].detach()

            def keep_grad(grad: torch.Tensor) -> None:
                store["g"] = grad.detach()

            out.register_hook(keep_grad)

        return [
            module.a.register_forward_pre_hook(keep_input),
            module.b.register_forward_hook(keep_hidden),
        ]


def _normalized_weights(weights: Sequence[Sequence[float]], counts: list[int]) -> torch.Tensor:
    """Each row's weights scaled to sum to one, concatenated [labelled tokens] (a row whose
    weights are all zero falls back to the plain mean)."""
    if len(weights) != len(counts):
        raise GradientError(f"token weights for {len(weights)} rows, the batch has {len(counts)}")
    parts = []
    for row, (w, n) in enumerate(zip(weights, counts, strict=True)):
        if len(w) != n:
            raise GradientError(f"row {row}: {len(w)} token weights for {n} labelled tokens")
        tensor = torch.tensor(w, dtype=torch.float32)
        total = float(tensor.sum())
        parts.append(tensor / total if total > 0 else torch.full((n,), 1.0 / n))
    return torch.cat(parts)


def pair_differences(grads: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Rows in (chosen, rejected) pairs -> one gradient per pair, chosen minus rejected: the
    direction a DPO step moves the adapter in (up to the step's positive factor)."""
    return [g[0::2] - g[1::2] for g in grads]
