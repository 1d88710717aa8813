"""Serving engine: one base model, many LoRA adapters in one batched forward, continuously
batched requests with streaming."""

from inference_node.engine.adapters import (
    AdapterError,
    BaseModelSpec,
    LoraAdapter,
    ModuleWeights,
    load_adapter,
    parse_adapter,
)
from inference_node.engine.kv_cache import BatchKVCache
from inference_node.engine.lora import BatchedLoraLinear, LoraBatch, LoraContext
from inference_node.engine.model import MultiLoraModel
from inference_node.engine.pool import AdapterPool, PoolExhaustedError, PoolStats
from inference_node.engine.sampling import SamplingParams
from inference_node.engine.scheduler import (
    Completion,
    GenerationError,
    RequestHandle,
    Scheduler,
    SchedulerStats,
    TextDelta,
)

__all__ = [
    "AdapterError",
    "AdapterPool",
    "BaseModelSpec",
    "BatchKVCache",
    "BatchedLoraLinear",
    "Completion",
    "GenerationError",
    "LoraAdapter",
    "LoraBatch",
    "LoraContext",
    "ModuleWeights",
    "MultiLoraModel",
    "PoolExhaustedError",
    "PoolStats",
    "RequestHandle",
    "SamplingParams",
    "Scheduler",
    "SchedulerStats",
    "TextDelta",
    "load_adapter",
    "parse_adapter",
]
