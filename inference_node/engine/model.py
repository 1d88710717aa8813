"""A Hugging Face Llama-family causal LM serving many LoRA adapters in one batched forward.

The target projections of every decoder layer are replaced by ``BatchedLoraLinear``; an
adapter pool of ``slots`` preallocated buffers is filled with ``load_adapter`` and emptied
with ``evict``. Each forward routes every token to its slot (``-1`` = base model only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, Cache, DynamicCache, PreTrainedModel

from inference_node.engine.adapters import (
    ATTENTION_PROJECTIONS,
    LLAMA_PROJECTIONS,
    AdapterError,
    BaseModelSpec,
    LoraAdapter,
)
from inference_node.engine.base_linear import BaseMeasured, calibrate_base_matmul, wrap_base_linears
from inference_node.engine.kernel_choice import Measured, calibrate
from inference_node.engine.lora import NO_ADAPTER, BatchedLoraLinear, Kernel, LoraBatch, LoraContext


class MultiLoraModel(nn.Module):
    """A causal LM with ``slots`` LoRA adapter slots applied per token."""

    def __init__(
        self,
        model: PreTrainedModel,
        slots: int,
        max_rank: int,
        target_modules: tuple[str, ...] = LLAMA_PROJECTIONS,
        kernel: Kernel = "auto",
    ) -> None:
        super().__init__()
        unknown = sorted(set(target_modules) - set(LLAMA_PROJECTIONS))
        if unknown:
            raise ValueError(f"unknown target modules {unknown}, supported: {LLAMA_PROJECTIONS}")
        if slots <= 0 or max_rank <= 0:
            raise ValueError(f"slots={slots} and max_rank={max_rank} must be positive")
        self.model = model.eval()
        self.spec = BaseModelSpec.from_model(model)
        self.max_rank = max_rank
        self.target_modules = frozenset(target_modules)
        self.context = LoraContext()
        self.lora_layers: dict[tuple[int, str], BatchedLoraLinear] = {}
        # per projection, every layer's slots in one buffer: [layers, slots + 1, max_rank, dim],
        # so that loading or evicting an adapter is a few copies per projection, not per layer
        self.stacked: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        weight = model.model.layers[0].self_attn.q_proj.weight
        layers = model.model.layers
        for name in target_modules:
            in_features, out_features = self.spec.projections[name]
            stack_a = torch.zeros(
                len(layers),
                slots + 1,
                max_rank,
                in_features,
                dtype=weight.dtype,
                device=weight.device,
            )
            stack_b = torch.zeros(
                len(layers),
                slots + 1,
                max_rank,
                out_features,
                dtype=weight.dtype,
                device=weight.device,
            )
            self.stacked[name] = (stack_a, stack_b)
            for index, layer in enumerate(layers):
                parent = layer.self_attn if name in ATTENTION_PROJECTIONS else layer.mlp
                wrapped = BatchedLoraLinear(
                    getattr(parent, name),
                    slots,
                    max_rank,
                    self.context,
                    kernel=kernel,
                    buffers=(stack_a[index], stack_b[index]),
                    module=name,
                )
                setattr(parent, name, wrapped)
                self.lora_layers[(index, name)] = wrapped
        self.slot_adapters: list[str | None] = [None] * slots
        self.slot_ranks: list[int] = [0] * slots  # rank of the adapter in each slot
        # per projection: the rank of each slot's adapter there (0: it does not target it)
        self.module_slot_ranks = {name: [0] * slots for name in self.stacked}
        # every projection and the LM head, oneDNN-prepacked on a CPU if that measures faster
        self.base_linears = wrap_base_linears(self.model)
        self.base_matmul: BaseMeasured | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        slots: int,
        max_rank: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **kwargs: object,
    ) -> MultiLoraModel:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
        return cls(model, slots, max_rank, **kwargs)  # type: ignore[arg-type]

    @property
    def slots(self) -> int:
        return len(self.slot_adapters)

    def set_kernel(self, kernel: Kernel) -> None:
        for layer in self.lora_layers.values():
            layer.kernel = kernel

    def calibrate_kernels(self, rows: int) -> list[Measured]:
        """Measures which kernel ``auto`` runs in each regime, on this machine, for decode
        batches of ``rows`` (the engine's batch size), on the shape of the first wrapped
        projection (the widest of the attention ones for Llama)."""
        name = next(n for n in LLAMA_PROJECTIONS if n in self.target_modules)
        in_features, out_features = self.spec.projections[name]
        weight = self.stacked[name][0]
        return calibrate(
            self.context, in_features, out_features, rows, weight.dtype, weight.device,
            num_layers=self.spec.num_layers,
        )  # fmt: skip

    def calibrate_base_matmul(self, rows: int) -> BaseMeasured | None:
        """Measures whether the base projections run faster oneDNN-prepacked (CPU) for
        batches of ``rows`` tokens and keeps the faster path; None off a CPU."""
        # the embedding matrix stays whole (a tied LM head multiplies by it too)
        keep = frozenset(id(p) for p in self.model.get_input_embeddings().parameters())
        self.base_matmul = calibrate_base_matmul(self.base_linears, rows, keep=keep)
        return self.base_matmul

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} out of range [0, {self.slots})")

    def load_adapter(self, slot: int, adapter: LoraAdapter) -> None:
        """Copy ``adapter`` into ``slot`` in place, replacing whatever was there."""
        self._check_slot(slot)
        if adapter.rank > self.max_rank:
            raise AdapterError(
                f"adapter {adapter.name}: rank {adapter.rank} exceeds the max {self.max_rank}"
            )
        missing = sorted(adapter.target_modules - self.target_modules)
        if missing:
            raise AdapterError(
                f"adapter {adapter.name}: targets {missing}, which this engine does not wrap "
                f"(wrapped: {sorted(self.target_modules)})"
            )
        rank = adapter.rank
        for module, (stack_a, stack_b) in self.stacked.items():
            weights = adapter.modules.get(module)
            every_layer = weights is not None and len(weights.layers) == stack_a.shape[0]
            # an adapter on every layer overwrites ranks [0, rank) of all of them: clear above
            self._clear_module(slot, module, keep=rank if every_layer else 0)
            if weights is None:
                continue
            if every_layer:
                stack_a[:, slot, :rank].copy_(weights.a)
                stack_b[:, slot, :rank].copy_(weights.b_t)
            else:
                index = torch.tensor(weights.layers, device=stack_a.device)
                stack_a[index, slot, :rank] = weights.a.to(stack_a.device, stack_a.dtype)
                stack_b[index, slot, :rank] = weights.b_t.to(stack_b.device, stack_b.dtype)
            for layer in weights.layers:
                self.lora_layers[(layer, module)].ranks[slot] = rank
            self.module_slot_ranks[module][slot] = rank
        self.slot_adapters[slot] = adapter.name
        self.slot_ranks[slot] = rank

    def _clear_module(self, slot: int, module: str, keep: int) -> None:
        """Zeroes ``slot``'s ranks from ``keep`` up to the largest in use, in every layer."""
        layers = [self.lora_layers[(i, module)] for i in range(self.spec.num_layers)]
        stale = max(layer.ranks[slot] for layer in layers)
        if stale > keep:
            stack_a, stack_b = self.stacked[module]
            stack_a[:, slot, keep:stale].zero_()
            stack_b[:, slot, keep:stale].zero_()
        for layer in layers:
            layer.ranks[slot] = min(layer.ranks[slot], keep)
        ranks = self.module_slot_ranks[module]
        ranks[slot] = min(ranks[slot], keep)

    def evict(self, slot: int) -> None:
        self._check_slot(slot)
        for module in self.stacked:
            self._clear_module(slot, module, keep=0)
        self.slot_adapters[slot] = None
        self.slot_ranks[slot] = 0

    def _token_slots(self, slots: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        slots = slots.to(torch.long).cpu()
        if slots.dim() == 1:
            slots = slots[:, None].expand(shape)  # [batch, seq]
        if slots.shape != shape:
            raise ValueError(f"slot indices of shape {tuple(slots.shape)}, input {tuple(shape)}")
        for slot in torch.unique(slots).tolist():
            if slot == NO_ADAPTER:
                continue
            self._check_slot(slot)
            if self.slot_adapters[slot] is None:
                raise ValueError(f"slot {slot} holds no adapter")
        return slots

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        slots: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits ``[batch, seq, vocab]`` of a padded batch (left or right padding).

        ``attention_mask`` covers the cached tokens and the new ones, ``[batch, past + seq]``;
        ``slots`` is ``[batch]`` (one adapter per row) or ``[batch, seq]`` (per token).
        ``logits_to_keep=n`` computes the logits of the last ``n`` positions only (prefill
        needs one: the LM head over a 49k vocabulary costs more than a decoder layer).
        """
        token_slots = self._token_slots(slots, input_ids.shape)  # [batch, seq]
        if position_ids is None:
            positions = attention_mask.to(torch.long).cumsum(-1) - 1  # [batch, past + seq]
            position_ids = positions.clamp(min=0)[:, -input_ids.shape[1] :]  # [batch, seq]
        self.context.batch = LoraBatch.from_indices(
            token_slots.to(input_ids.device), self.slot_ranks, self.module_slot_ranks
        )
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=cache is not None,
                logits_to_keep=logits_to_keep,
            )
        finally:
            self.context.batch = None
        return out.logits  # [batch, seq, vocab]

    @torch.inference_mode()
    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        slots: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Greedy tokens ``[batch, max_new_tokens]``, each row on its own slot, with a KV cache.

        Right-padded or ragged rows are compacted to left padding first; a row that emits
        ``eos_token_id`` keeps emitting it.
        """
        order = torch.argsort(attention_mask.to(torch.int8), dim=-1, stable=True)  # [batch, seq]
        input_ids = input_ids.gather(-1, order)
        mask = attention_mask.gather(-1, order).to(torch.long)  # [batch, seq], pads first
        cache = DynamicCache(config=self.model.config)
        logits = self.forward(input_ids, mask, slots, cache=cache)  # [batch, seq, vocab]
        batch = input_ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)  # [batch]
        tokens: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            next_token = logits[:, -1].argmax(-1)  # [batch]
            if eos_token_id is not None:
                next_token = torch.where(done, eos_token_id, next_token)
                done |= next_token == eos_token_id
            tokens.append(next_token)
            if step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)  # [batch, past + 1]
            logits = self.forward(next_token[:, None], mask, slots, cache=cache)
        return torch.stack(tokens, dim=-1)  # [batch, max_new_tokens]
