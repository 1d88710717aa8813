"""The decode step on static shapes, captured in CUDA graphs per batch-size bucket (vLLM style).

A decode step of a small model on a GPU is bound by Python dispatch and kernel launches, not by
the GPU: a 135M Llama at 32 rows launches ~20 kernels per layer, ~4 more per LoRA projection.
A CUDA graph replays all of a step's launches at once, but only for fixed shapes and fixed
memory. So the step here reads every input from tensors this class owns and fills before each
run, for a bucket of ``B`` rows (1, 2, 4, ... up to the cache's ``max_rows``):

- ``ids [B]``, ``positions [B]``, ``indices [B]`` (adapter slot, -1 = none) and
  ``mask [B, capacity]`` (bool, the key columns each row attends to), ``column [1]`` (where
  the new keys are written). Rows past the batch's are dummies: token 0, position 0, no
  adapter, attending only to their own new key; they write into the cache's rows past its
  live ones (free rows whose contents nobody reads) and their logits are dropped.
- every decoder layer is run here, on the Hugging Face modules themselves (the RMSNorms, the
  rotary embedding, the MLP, and the projections, i.e. LoRA and ``BaseLinear``), with the
  keys and values written into :class:`BatchKVCache`'s buffers at ``column`` (``index_copy_``)
  and attention over the whole capacity with the mask (``scaled_dot_product_attention``, GQA
  as ``[B, kv_heads, groups, head_dim]`` queries over the kv heads: no copy of the cache).
- LoRA runs a kernel that needs no per-batch Python decisions (``fused``: Triton on CUDA /
  the C++ op on a CPU, or ``gather``), reading ``indices`` in place, at per-projection ranks
  fixed per graph: a graph captured at ranks ``r`` serves any batch whose ranks are ``<= r``
  (rows of a slot past its rank are zeros); a batch needing more is captured again.

A graph holds the addresses of the cache buffers, so graphs are dropped and captured again
when the buffers change (capacity doubling, a new cache). All graphs share one memory pool:
they never run at once, and every tensor that outlives a capture (the logits) stays referenced.
On a CPU, or when capture is off or has failed once, the same static code runs eagerly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from inference_node.engine.kv_cache import BatchKVCache
from inference_node.engine.lora import NO_ADAPTER, Kernel, LoraBatch, LoraContext
from inference_node.engine.model import MultiLoraModel

log = logging.getLogger(__name__)

WARMUP_RUNS = 2  # eager runs on a side stream before a capture (cuBLAS/Triton set-up)
SUPPORTED_MODEL_TYPES = frozenset({"llama"})


def default_buckets(max_rows: int) -> tuple[int, ...]:
    """Powers of two below ``max_rows``, then ``max_rows`` itself."""
    buckets, size = [], 1
    while size < max_rows:
        buckets.append(size)
        size *= 2
    return (*buckets, max_rows)


def reserve_cache(cache: BatchKVCache, length: int) -> None:
    """Grows every layer's buffers to hold ``length`` columns, as ``update`` does before a
    write (the static step writes into the buffers itself, so it must reserve first)."""
    for layer in cache.buffered:
        if length > layer.capacity:  # a view refresh per layer costs more than a step's checks
            layer._reserve(length)
            layer._refresh()


class ReplayMismatchError(RuntimeError):
    """A CUDA graph's replay disagreed with the eager step it was captured from."""


def check_replay(replayed: torch.Tensor, eager: torch.Tensor) -> None:
    """Raises :class:`ReplayMismatchError` unless ``replayed`` logits ``[rows, vocab]`` agree
    with ``eager`` ones within the dtype's rounding (relative to the logits' scale): then no
    row whose top two logits are more than twice that apart can pick another greedy token."""
    half = replayed.dtype in (torch.float16, torch.bfloat16)
    tolerance = (2e-2 if half else 1e-4) * max(1.0, float(eager.float().abs().max()))
    gap = (replayed.float() - eager.float()).abs().max()
    if not gap <= tolerance:  # NaN fails too
        raise ReplayMismatchError(
            f"graph replay differs from the eager step by {float(gap):.3g} (tolerance "
            f"{tolerance:.3g})"
        )


def advance_cache(cache: BatchKVCache, columns: int = 1) -> None:
    """Counts ``columns`` more columns as written in every layer, as ``update`` does after its
    copy: the static step wrote them into the buffers, the cache's views must now show them."""
    for layer in cache.buffered:
        if layer.length + columns > layer.capacity:
            raise ValueError(
                f"cannot advance the cache by {columns} past its capacity {layer.capacity} "
                f"(length {layer.length})"
            )
        layer.length += columns
        layer._refresh()


@dataclass
class _Inputs:
    """The static inputs, sized for the largest bucket; a bucket reads the first ``B`` rows."""

    ids: torch.Tensor  # [max_bucket] long, the token each row feeds
    positions: torch.Tensor  # [max_bucket] long, its rotary position
    indices: torch.Tensor  # [max_bucket] long, its adapter slot (-1: none)
    mask: torch.Tensor  # [max_bucket, capacity] bool, the key columns each row attends to
    column: torch.Tensor  # [1] long, the cache column the new keys and values go to


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor  # [bucket, vocab], written by every replay
    ranks: tuple[int, ...]  # per projection (``StaticDecoder.modules``), the ranks captured


class StaticDecoder:
    """Decode steps of ``model`` over ``cache`` on static shapes; CUDA graphs on a GPU.

    One per (model, cache); not thread-safe (the engine thread owns both).
    """

    def __init__(
        self,
        model: MultiLoraModel,
        cache: BatchKVCache,
        buckets: Sequence[int] | None = None,
        capture: bool | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        """``buckets``: the batch sizes graphs are captured for (default: powers of two up to
        the cache's ``max_rows``); ``capture``: use CUDA graphs (default: on CUDA only);
        ``kernel``: LoRA's, ``fused`` or ``gather`` (default: the model's decode choice if it
        is one of them, else ``gather``; ``segments`` routes by Python lists, not capturable)."""
        config = model.model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"static decode supports {sorted(SUPPORTED_MODEL_TYPES)} models, "
                f"not {config.model_type!r}"
            )
        if len(cache.buffered) != model.spec.num_layers:
            raise ValueError(
                f"a cache of {len(cache.buffered)} layers for a model of {model.spec.num_layers}"
            )
        sizes = sorted(set(buckets if buckets is not None else default_buckets(cache.max_rows)))
        if not sizes or sizes[0] <= 0 or sizes[-1] > cache.max_rows:
            raise ValueError(
                f"buckets {list(buckets or [])} must be positive and at most the cache's "
                f"max_rows {cache.max_rows}"
            )
        self.model, self.cache, self.buckets = model, cache, tuple(sizes)
        self.device = next(model.parameters()).device
        if capture and self.device.type != "cuda":
            raise ValueError(f"CUDA graph capture asked for a model on {self.device}")
        self.capture = self.device.type == "cuda" if capture is None else capture
        self.modules = tuple(model.stacked)  # the wrapped projections, in a fixed order
        # LoRA's kernel and scratch buffers for static steps, apart from the model's own: a
        # graph holds the scratch's address, which the model's prefill must not regrow
        self._context = LoraContext()
        if kernel is None:
            decode = model.context.choice["decode"]
            kernel = decode if decode in ("fused", "gather") else "gather"
        if kernel not in ("fused", "gather"):
            raise ValueError(f"static decode runs the fused or gather LoRA kernel, not {kernel!r}")
        self.kernel: Kernel = kernel
        self._context.choice = {"decode": kernel, "prefill": kernel}
        self._inputs: _Inputs | None = None
        self._buffers: tuple[int, ...] = ()  # the cache buffers' capacity and addresses
        self._graphs: dict[int, _Graph] = {}  # bucket -> its graph on the current buffers
        self._pool: tuple[int, int] | None = None
        self.captures = 0  # graphs captured so far (every bucket, capacity and rank raise)

    # ------------------------------------------------------------------ public

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket of at least ``rows`` rows."""
        for bucket in self.buckets:
            if bucket >= rows:
                return bucket
        raise ValueError(f"{rows} rows exceed the largest decode bucket {self.buckets[-1]}")

    @torch.inference_mode()
    def decode(self, ids: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """One decode step as the model's ``forward`` with the cache takes it: ``ids [rows]``,
        ``mask [rows, length + 1]`` (the cache's columns and the new one), ``slots [rows]``.
        Writes column ``length`` and advances the cache; returns logits ``[rows, vocab]``."""
        column = self.cache.length
        positions = mask.to(torch.long).sum(-1) - 1  # [rows], as the model's cumsum gives
        logits = self.step(ids, positions, mask, slots, column)
        advance_cache(self.cache)
        return logits

    @torch.inference_mode()
    def step(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        slots: torch.Tensor,
        column: int,
    ) -> torch.Tensor:
        """Logits ``[rows, vocab]`` of one token per cache row: ``ids``, ``positions`` and
        ``slots`` are ``[rows]``, ``mask`` is ``[rows, column + 1]`` (nonzero: attend) over the
        cache's columns up to the new one. Writes the new keys and values at ``column`` (the
        cache's ``length`` is not moved: :func:`advance_cache`)."""
        rows = self._check(ids, positions, mask, slots, column)
        bucket = self.bucket_for(rows)
        slot_list = [int(s) for s in slots.tolist()]
        ranks = self._ranks(slot_list)
        reserve_cache(self.cache, column + 1)
        self._sync_buffers()
        self._load(bucket, ids, positions, mask, slots, column)
        if self.capture:
            graph = self._graph(bucket, ranks)
            if graph is not None:
                graph.graph.replay()
                return graph.logits[:rows].clone()  # the graph rewrites its output next step
        with self._routing(self._batch(bucket, ranks)):
            return self._forward(bucket)[:rows]

    # ------------------------------------------------------------------ inputs

    def _check(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        slots: torch.Tensor,
        column: int,
    ) -> int:
        rows = self.cache.rows
        if self.cache.buffered[0]._k is None:
            raise ValueError("the cache holds no prefilled rows yet")
        for name, tensor in (("ids", ids), ("positions", positions), ("slots", slots)):
            if tuple(tensor.shape) != (rows,):
                raise ValueError(
                    f"{name} of shape {tuple(tensor.shape)}, expected ({rows},): one per cache row"
                )
        if tuple(mask.shape) != (rows, column + 1):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)}, expected {(rows, column + 1)} "
                f"(cache rows, columns up to the write column {column})"
            )
        if column < 0:
            raise ValueError(f"write column {column} is negative")
        return rows

    def _ranks(self, slots: list[int]) -> tuple[int, ...]:
        """Per projection, the largest rank among the batch's adapters (0: none targets it)."""
        used = set(slots) - {NO_ADAPTER}
        for slot in used:
            if not 0 <= slot < self.model.slots or self.model.slot_adapters[slot] is None:
                raise ValueError(f"slot {slot} holds no adapter (slots: {self.model.slots})")
        ranks = self.model.module_slot_ranks
        return tuple(max((ranks[m][s] for s in used), default=0) for m in self.modules)

    def _sync_buffers(self) -> None:
        """Drops the graphs and the mask when the cache's buffers moved (growth, a reset)."""
        layers = self.cache.buffered
        current = (layers[0].capacity, *(b.data_ptr() for x in layers for b in (x._k, x._v)))  # type: ignore[union-attr]
        if current == self._buffers and self._inputs is not None:
            return
        self._graphs.clear()
        self._buffers = current
        largest, capacity, dev = self.buckets[-1], layers[0].capacity, self.device
        old = self._inputs
        if old is None:
            self._inputs = _Inputs(
                ids=torch.zeros(largest, dtype=torch.long, device=dev),
                positions=torch.zeros(largest, dtype=torch.long, device=dev),
                indices=torch.full((largest,), NO_ADAPTER, dtype=torch.long, device=dev),
                mask=torch.zeros(largest, capacity, dtype=torch.bool, device=dev),
                column=torch.zeros(1, dtype=torch.long, device=dev),
            )
        elif old.mask.shape[1] != capacity:
            old.mask = torch.zeros(largest, capacity, dtype=torch.bool, device=dev)

    def _load(
        self,
        bucket: int,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        slots: torch.Tensor,
        column: int,
    ) -> None:
        """Copies the batch into the static inputs; rows ``rows..bucket`` become dummies."""
        inputs = self._inputs
        assert inputs is not None
        rows = ids.shape[0]
        inputs.ids[:rows].copy_(ids, non_blocking=True)
        inputs.ids[rows:bucket].zero_()
        inputs.positions[:rows].copy_(positions, non_blocking=True)
        inputs.positions[rows:bucket].zero_()
        inputs.indices[:rows].copy_(slots, non_blocking=True)
        inputs.indices[rows:bucket].fill_(NO_ADAPTER)
        inputs.mask[:bucket].zero_()
        inputs.mask[:rows, : column + 1].copy_(mask != 0, non_blocking=True)
        inputs.mask[:bucket, column] = True  # each row sees its new key: no all-masked row
        inputs.column.fill_(column)

    def _batch(self, bucket: int, ranks: tuple[int, ...]) -> LoraBatch:
        """The LoRA routing of a static step: the static ``indices`` read in place, ranks fixed.
        Its one segment only says "adapters present": the kernels chosen (``fused`` or
        ``gather``, see ``_routing``) route by ``indices``, never by segments."""
        assert self._inputs is not None
        return LoraBatch(
            indices=self._inputs.indices[:bucket],
            segments=[(0, bucket, 0)] if any(ranks) else [],
            max_rank=max(ranks, default=0),
            module_ranks=dict(zip(self.modules, ranks, strict=True)),
        )

    @contextlib.contextmanager
    def _routing(self, batch: LoraBatch) -> Iterator[None]:
        """Points every LoRA layer at this decoder's context (its kernel choice, its scratch
        buffers and ``batch``) for one static forward; the model's own routing after."""
        layers = list(self.model.lora_layers.values())
        saved = [(layer.context, layer.kernel) for layer in layers]
        self._context.batch = batch
        try:
            for layer in layers:
                layer.context, layer.kernel = self._context, "auto"
            yield
        finally:
            for layer, (context, kernel) in zip(layers, saved, strict=True):
                layer.context, layer.kernel = context, kernel
            self._context.batch = None

    # ------------------------------------------------------------------ the forward

    def _forward(self, bucket: int) -> torch.Tensor:
        """Logits ``[bucket, vocab]`` of the static inputs' first ``bucket`` rows."""
        inputs = self._inputs
        assert inputs is not None
        causal_lm = self.model.model
        decoder = causal_lm.model
        hidden = decoder.embed_tokens(inputs.ids[:bucket, None])  # [B, 1, hidden]
        cos, sin = decoder.rotary_emb(hidden, inputs.positions[:bucket, None])  # [B, 1, head_dim]
        # additive, once per step: 0 where a row attends, -inf elsewhere; [B, 1, 1, capacity]
        bias = torch.zeros(inputs.mask[:bucket].shape, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill_(~inputs.mask[:bucket], float("-inf"))[:, None, None, :]
        for layer, kv in zip(decoder.layers, self.cache.buffered, strict=True):
            assert kv._k is not None and kv._v is not None
            residual = hidden
            attended = self._attention(
                layer.self_attn, layer.input_layernorm(hidden), cos, sin, bias,
                kv._k[:bucket], kv._v[:bucket], inputs.column,
            )  # fmt: skip
            hidden = residual + attended
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = decoder.norm(hidden)
        return causal_lm.lm_head(hidden)[:, 0]  # [B, vocab]

    @staticmethod
    def _attention(
        attn: torch.nn.Module,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        column: torch.Tensor,
    ) -> torch.Tensor:
        """One layer's attention for ``x [B, 1, hidden]`` over the cache rows ``keys``/``values``
        ``[B, kv_heads, capacity, head_dim]``, after writing the new ones at ``column``."""
        batch, head_dim = x.shape[0], attn.head_dim
        kv_heads = keys.shape[1]
        q = attn.q_proj(x).view(batch, 1, -1, head_dim).transpose(1, 2)  # [B, heads, 1, hd]
        k = attn.k_proj(x).view(batch, 1, -1, head_dim).transpose(1, 2)  # [B, kv_heads, 1, hd]
        v = attn.v_proj(x).view(batch, 1, -1, head_dim).transpose(1, 2)  # [B, kv_heads, 1, hd]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys.index_copy_(2, column, k)
        values.index_copy_(2, column, v)
        heads = q.shape[1]
        # query head h reads kv head h // groups (HF's repeat_kv): the groups of one kv head
        # become its queries, [B, kv_heads, groups, hd], and the cache is read once, not copied
        q = q.reshape(batch, kv_heads, heads // kv_heads, head_dim)
        out = functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=bias, scale=attn.scaling
        )  # [B, kv_heads, groups, hd]
        return attn.o_proj(out.reshape(batch, 1, heads * head_dim))  # [B, 1, hidden]

    # ------------------------------------------------------------------ CUDA graphs

    def _graph(self, bucket: int, ranks: tuple[int, ...]) -> _Graph | None:
        """The bucket's graph, captured now if it has none or one at lower ranks; None (and
        eager from then on) if capture fails."""
        graph = self._graphs.get(bucket)
        if graph is not None and all(n <= c for n, c in zip(ranks, graph.ranks, strict=True)):
            return graph
        if graph is not None:  # keep serving the ranks it had, and the new ones
            ranks = tuple(max(n, c) for n, c in zip(ranks, graph.ranks, strict=True))
            del self._graphs[bucket]
        try:
            graph = self._capture(bucket, ranks)
        except Exception as exc:  # cannot be captured, or replays wrong: serve eagerly
            log.log(
                logging.ERROR if isinstance(exc, ReplayMismatchError) else logging.WARNING,
                "CUDA graph capture of the decode step failed (bucket %d): %s; decoding "
                "eagerly from now on",
                bucket,
                exc,
                exc_info=not isinstance(exc, ReplayMismatchError),
            )
            self.capture = False
            self._graphs.clear()
            return None
        self._graphs[bucket] = graph
        return graph

    def _capture(self, bucket: int, ranks: tuple[int, ...]) -> _Graph:
        """Warms up on a side stream, then captures; the inputs loaded for this step are in the
        static tensors already, so the warm-up writes exactly the keys the step writes."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        self._reserve_scratch()
        batch = self._batch(bucket, ranks)
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side), self._routing(batch):
            for _ in range(WARMUP_RUNS):
                self._forward(bucket)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with (
            self._routing(batch),
            torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"),
        ):
            logits = self._forward(bucket)
        # a captured graph is trusted only once its replay gives the eager step's logits (the
        # inputs are the same, and so are the keys both write): a wrong graph serves nothing
        graph.replay()
        with self._routing(batch):
            eager = self._forward(bucket)
        check_replay(logits, eager)
        self.captures += 1
        log.info("captured the decode step: bucket %d, ranks %s", bucket, ranks)
        return _Graph(graph, logits, ranks)

    def _reserve_scratch(self) -> None:
        """Sizes the ``gather`` kernel's scratch for the largest bucket at the max rank once:
        a graph keeps the scratch's address, so it must never be reallocated."""
        weight = next(iter(self.model.stacked.values()))[0]
        widest = max(max(dims) for dims in self.model.spec.projections.values())
        size = self.buckets[-1] * self.model.max_rank * widest
        for name in ("a", "b"):
            self._context.scratch(name, (size,), weight.dtype, weight.device)
