"""Continuous batching: requests on different adapters join and leave a running batch.

One thread owns the model. Each iteration it

1. admits waiting requests (FIFO, up to ``max_batch`` running and ``max_prefill_tokens`` of
   prompt per prefill), acquiring each one's adapter slot from the pool — a request whose
   adapter cannot get a slot yet waits while later ones may pass; a refused adapter fails only
   its own request;
2. prefills the admitted prompts in one forward (left-padded, each row on its own slot) and
   appends their KV rows to the running batch's cache;
3. runs one decode step for every running row in one forward (per-row adapter slots, the
   batched multi-LoRA kernels), samples each row with its own parameters, streams the new
   text, and retires rows that hit a stop token, a stop sequence or ``max_tokens`` (their
   adapter is released and their KV row removed).

Callers get a :class:`RequestHandle` (``requests.py``), which streams :class:`TextDelta`
events and ends with a :class:`Completion`, from threads (iterate / ``result``) or asyncio
(``stream`` / ``aresult``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from inference_node.engine.adapters import AdapterError
from inference_node.engine.detokenize import IncrementalText
from inference_node.engine.kv_cache import BatchKVCache
from inference_node.engine.lora import NO_ADAPTER
from inference_node.engine.model import MultiLoraModel
from inference_node.engine.pool import AdapterPool, PoolExhaustedError
from inference_node.engine.requests import (
    Completion,
    FinishReason,
    GenerationError,
    RequestHandle,
    TextDelta,
)
from inference_node.engine.sampling import SamplingParams, select_tokens
from inference_node.engine.static_decode import StaticDecoder
from inference_node.engine.threads import engine_torch_threads

log = logging.getLogger(__name__)
T = TypeVar("T")

TRIM_MIN_COLUMNS = 16  # trim the cache's common left padding once it is this wide ...
TRIM_FRACTION = 4  # ... and at least 1/4 of the cache


class Tokenizer(Protocol):
    eos_token_id: int | None

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class SchedulerStats:
    running: int
    waiting: int
    steps: int  # decode steps run
    prefills: int  # prefill forwards run
    prompt_tokens: int
    generated_tokens: int
    kv_cache_bytes: int


@dataclass
class _Row:
    handle: RequestHandle
    slot: int
    text: IncrementalText
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    generated: int = 0
    pending: int = 0  # the last sampled token, fed in the next decode step
    released: bool = False  # its adapter slot was given back


class Scheduler:
    """Runs the continuous-batching loop of one :class:`MultiLoraModel` in a thread."""

    def __init__(
        self,
        model: MultiLoraModel,
        tokenizer: Tokenizer,
        pool: AdapterPool | None = None,
        *,
        max_batch: int = 32,
        max_prefill_tokens: int = 4_096,
        stop_token_ids: Iterable[int] = (),
        max_model_len: int | None = None,
        torch_threads: int | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        """``torch_threads``: the loop thread's torch threads (default: every core, see
        ``threads.py``; the main thread of a serving process should stay serial);
        ``cuda_graphs``: on CUDA, decode steps replay CUDA graphs (``static_decode.py``)."""
        if max_batch <= 0 or max_prefill_tokens <= 0:
            raise ValueError(f"max_batch={max_batch}, max_prefill_tokens={max_prefill_tokens}")
        if pool is not None and pool.model is not model:
            raise ValueError("the adapter pool serves another model")
        self.model, self.tokenizer, self.pool = model, tokenizer, pool
        self.max_batch, self.max_prefill_tokens = max_batch, max_prefill_tokens
        config = model.model.config
        self.vocab_size = int(config.vocab_size)
        self.max_model_len = max_model_len or int(config.max_position_embeddings)
        stops = set(stop_token_ids)
        if tokenizer.eos_token_id is not None:
            stops.add(int(tokenizer.eos_token_id))
        self.stop_token_ids = frozenset(stops)
        self.device = next(model.parameters()).device
        self._waiting: deque[RequestHandle] = deque()
        self._wake = threading.Condition()
        self._rows: list[_Row] = []
        self._cache = BatchKVCache(config, max_batch)
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [rows, length]
        self._ids = itertools.count()
        self._counts = dict.fromkeys(("steps", "prefills", "prompt_tokens", "generated"), 0)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.torch_threads = torch_threads or engine_torch_threads()
        self.cuda_graphs = cuda_graphs
        self._static: StaticDecoder | None = None  # made at the first CUDA decode step
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()  # see call()

    # ------------------------------------------------------------------ public

    def start(self) -> Scheduler:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stops the loop; unfinished requests fail with reason ``shutdown``."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        while self._calls:
            self._calls.popleft()[1].set_exception(RuntimeError("the engine shut down"))
        for handle in [*self._waiting, *(row.handle for row in self._rows)]:
            handle._push(GenerationError("shutdown", "the engine shut down"))
        self._waiting.clear()
        with torch.inference_mode():  # the mask was made under inference mode
            self._release_rows(range(len(self._rows)))

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Runs ``fn`` on the engine's thread, between two steps, and returns its result (or
        raises its exception here). The process's multi-threaded torch work belongs on that
        thread (``threads.py``: a second thread running parallel ops makes every small op of
        the engine wait for a sleeping worker): calibrations, attribution sketches, benchmark
        baselines. Calls run one per loop iteration, so a queue of them interleaves with
        decode steps instead of stalling them."""
        if threading.current_thread() is self._thread:
            return fn()
        future: Future[T] = Future()
        with self._wake:
            if self._stopping or self._thread is None:
                raise RuntimeError("the engine is not running")
            self._calls.append((fn, future))
            self._wake.notify_all()
        return future.result(timeout)

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams | None = None,
        adapter: str | None = None,
        request_id: str | None = None,
    ) -> RequestHandle:
        """Queues a request; raises ValueError / :class:`AdapterError` for bad input."""
        params = params or SamplingParams()
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        bad = [t for t in prompt_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside the vocabulary [0, {self.vocab_size})")
        total = len(prompt_ids) + params.max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens + max_tokens {params.max_tokens} = {total} "
                f"exceeds the model's context of {self.max_model_len} tokens"
            )
        if adapter is not None:
            if self.pool is None:
                raise AdapterError(f"adapter {adapter} requested from an engine without a pool")
            if not self.pool.is_registered(adapter):
                raise AdapterError(f"adapter {adapter} is not registered on this node")
        handle = RequestHandle(
            request_id or f"req-{next(self._ids)}", list(prompt_ids), adapter, params
        )
        with self._wake:
            if self._stopping or self._thread is None:
                raise RuntimeError("the engine is not running")
            self._waiting.append(handle)
            self._wake.notify_all()
        return handle

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            running=len(self._rows),
            waiting=len(self._waiting),
            steps=self._counts["steps"],
            prefills=self._counts["prefills"],
            prompt_tokens=self._counts["prompt_tokens"],
            generated_tokens=self._counts["generated"],
            kv_cache_bytes=self._cache.nbytes(),
        )

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        torch.set_num_threads(self.torch_threads)  # per thread (OpenMP): this one does the work
        while True:
            with self._wake:
                self._wake.wait_for(
                    lambda: self._stopping or self._waiting or self._rows or self._calls
                )
                if self._stopping:
                    return
                call = self._calls.popleft() if self._calls else None
            if call is not None:
                self._run_call(*call)
            if not (self._waiting or self._rows):
                continue
            try:
                with torch.inference_mode():
                    self._step()
            except Exception as exc:  # never let one bad step kill the node
                log.exception(
                    "engine step failed; failing the %d running requests", len(self._rows)
                )
                self._fail_all(GenerationError("engine", f"engine error: {exc}"))

    @staticmethod
    def _run_call(fn: Callable[[], Any], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # the caller gets it
            future.set_exception(exc)

    def _step(self) -> None:
        self._drop_cancelled()
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
        if self._rows:
            self._decode()
        elif not admitted and self._waiting:
            time.sleep(0.005)  # every waiting adapter lacks a slot: let others finish

    def _drop_cancelled(self) -> None:
        with self._wake:
            for handle in [h for h in self._waiting if h.cancelled]:
                self._waiting.remove(handle)
                handle._push(self._completion_of(handle, [], 0, "", "cancelled"))
        gone = [i for i, row in enumerate(self._rows) if row.handle.cancelled]
        for i in gone:
            row = self._rows[i]
            row.handle._push(
                self._completion_of(
                    row.handle, row.token_ids, row.generated, row.text.text, "cancelled"
                )
            )
        self._release_rows(gone)

    def _admit(self) -> list[tuple[RequestHandle, int]]:
        free = self.max_batch - len(self._rows)
        budget = self.max_prefill_tokens
        admitted: list[tuple[RequestHandle, int]] = []
        with self._wake:
            candidates = list(self._waiting)
        for handle in candidates:
            if free == 0 or (admitted and len(handle.prompt_ids) > budget):
                break
            slot = NO_ADAPTER
            if handle.adapter is not None:
                assert self.pool is not None
                try:
                    slot = self.pool.acquire(handle.adapter)
                except PoolExhaustedError:
                    continue  # waits for a slot; requests whose adapters are loaded may pass
                except (AdapterError, KeyError) as exc:
                    self._dequeue(handle)
                    handle._push(GenerationError("adapter", str(exc)))
                    continue
            self._dequeue(handle)
            admitted.append((handle, slot))
            free -= 1
            budget -= len(handle.prompt_ids)
        return admitted

    def _dequeue(self, handle: RequestHandle) -> None:
        with self._wake:
            self._waiting.remove(handle)

    def _prefill(self, admitted: list[tuple[RequestHandle, int]]) -> None:
        width = max(len(h.prompt_ids) for h, _ in admitted)
        ids = torch.zeros(len(admitted), width, dtype=torch.long)  # [new, width], left-padded
        mask = torch.zeros(len(admitted), width, dtype=torch.long)  # [new, width]
        for i, (handle, _) in enumerate(admitted):
            ids[i, width - len(handle.prompt_ids) :] = torch.tensor(handle.prompt_ids)
            mask[i, width - len(handle.prompt_ids) :] = 1
        slots = torch.tensor([slot for _, slot in admitted])  # [new]
        cache = BatchKVCache(self.model.model.config, len(admitted))
        try:
            logits = self.model(
                ids.to(self.device), mask.to(self.device), slots, cache=cache, logits_to_keep=1
            )[:, -1]  # [new, vocab]
        except Exception as exc:  # fails the newcomers only; the running batch is untouched
            log.exception("prefill of %d requests failed", len(admitted))
            for handle, slot in admitted:
                if slot != NO_ADAPTER and self.pool is not None and handle.adapter is not None:
                    self.pool.release(handle.adapter)
                handle._push(GenerationError("engine", f"prefill failed: {exc}"))
            return
        rows = [
            _Row(h, slot, IncrementalText(self.tokenizer, h.params.stop), h.params.generator())
            for h, slot in admitted
        ]
        self._counts["prefills"] += 1
        self._counts["prompt_tokens"] += int(mask.sum())
        start = len(self._rows)
        self._cache.append_rows(cache)
        length = self._cache.length
        merged = torch.zeros(start + len(rows), length, dtype=torch.long, device=self.device)
        merged[:start, length - self._mask.shape[1] :] = self._mask
        merged[start:, length - width :] = mask.to(self.device)
        self._mask = merged  # [rows, length]
        self._rows.extend(rows)
        self._advance(range(start, start + len(rows)), logits)

    def _decode(self) -> None:
        rows = self._rows
        ids = torch.tensor([[row.pending] for row in rows], device=self.device)  # [rows, 1]
        ones = self._mask.new_ones(len(rows), 1)
        self._mask = torch.cat([self._mask, ones], dim=-1)  # [rows, length + 1]
        slots = torch.tensor([row.slot for row in rows])  # [rows]
        static = self.device.type == "cuda" and self.cuda_graphs
        logits = self._static_decode(ids[:, 0], slots) if static else None
        if logits is None:
            logits = self.model(ids, self._mask, slots, cache=self._cache, logits_to_keep=1)[:, -1]
        self._counts["steps"] += 1
        self._advance(range(len(rows)), logits)

    def _static_decode(self, ids: torch.Tensor, slots: torch.Tensor) -> torch.Tensor | None:
        """The decode step on static shapes, replayed from CUDA graphs: logits ``[rows, vocab]``
        of ``ids [rows]``; writes the cache's next column and advances it, as the model does.
        None (and the model's own step from then on) for a model it does not support."""
        if self._static is None or self._static.cache is not self._cache:  # new after a failure
            try:
                self._static = StaticDecoder(self.model, self._cache)
            except ValueError as exc:
                log.warning("no CUDA graphs for the decode step: %s", exc)
                self.cuda_graphs = False
                return None
        return self._static.decode(ids, self._mask, slots)

    def _advance(self, indices: range, logits: torch.Tensor) -> None:
        """Samples the next token of rows ``indices`` from ``logits: [len(indices), vocab]``."""
        rows = [self._rows[i] for i in indices]
        tokens = select_tokens(logits, [r.handle.params for r in rows], [r.generator for r in rows])
        finished = [
            i for i, row, token in zip(indices, rows, tokens, strict=True) if self._emit(row, token)
        ]
        self._release_rows(finished)
        self._trim()

    def _emit(self, row: _Row, token: int) -> bool:
        """Records ``token`` for ``row`` and streams its text; True when the row is finished."""
        row.generated += 1
        self._counts["generated"] += 1
        handle = row.handle
        if token in self.stop_token_ids:
            self._finish(row, "stop")
            return True
        row.token_ids.append(token)
        row.pending = token
        piece = row.text.add(token)
        if piece:
            handle._push(TextDelta(piece, (token,)))
        if row.text.stopped:
            self._finish(row, "stop")
            return True
        if row.generated >= handle.params.max_tokens:
            self._finish(row, "length")
            return True
        return False

    def _finish(self, row: _Row, reason: FinishReason) -> None:
        rest = row.text.flush()
        if rest:
            row.handle._push(TextDelta(rest, ()))
        row.handle._push(
            self._completion_of(row.handle, row.token_ids, row.generated, row.text.text, reason)
        )

    @staticmethod
    def _completion_of(
        handle: RequestHandle, token_ids: list[int], generated: int, text: str, reason: FinishReason
    ) -> Completion:
        return Completion(
            request_id=handle.request_id,
            text=text,
            token_ids=tuple(token_ids),
            finish_reason=reason,
            prompt_tokens=len(handle.prompt_ids),
            completion_tokens=generated,
        )

    def _release_rows(self, indices: Iterable[int]) -> None:
        """Removes rows (their KV and mask rows) and releases their adapters."""
        for i in sorted(set(indices), reverse=True):  # the last row moves into each hole
            row = self._rows[i]
            if row.slot != NO_ADAPTER and not row.released and row.handle.adapter is not None:
                assert self.pool is not None
                row.released = True
                self.pool.release(row.handle.adapter)
            last = len(self._rows) - 1
            if self._cache.rows > i:
                self._cache.remove_row(i)
            self._mask[i] = self._mask[last]
            self._rows[i] = self._rows[last]
            self._rows.pop()
            self._mask = self._mask[:last]
        if not self._rows:
            self._mask = self._mask.new_zeros(0, 0)

    def _trim(self) -> None:
        if not self._rows:
            return
        used = self._mask.any(dim=0)  # [length]
        leading = int(used.to(torch.int8).argmax()) if bool(used.any()) else used.shape[0]
        if leading >= TRIM_MIN_COLUMNS and leading * TRIM_FRACTION >= self._mask.shape[1]:
            self._cache.trim_left(leading)
            self._mask = self._mask[:, leading:]

    def _fail_all(self, error: GenerationError) -> None:
        for row in self._rows:
            row.handle._push(error)
        self._release_rows(range(len(self._rows)))
        self._cache = BatchKVCache(self.model.model.config, self.max_batch)
        self._mask = self._mask.new_zeros(0, 0)
