"""Serving engine: one base model, many LoRA adapters in one batched forward."""

from inference_node.engine.adapters import AdapterError, BaseModelSpec, LoraAdapter, load_adapter
from inference_node.engine.lora import BatchedLoraLinear, LoraBatch, LoraContext
from inference_node.engine.model import MultiLoraModel

__all__ = [
    "AdapterError",
    "BaseModelSpec",
    "BatchedLoraLinear",
    "LoraAdapter",
    "LoraBatch",
    "LoraContext",
    "MultiLoraModel",
    "load_adapter",
]
