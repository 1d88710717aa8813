"""The adapter pool: registered adapters by CID, a CPU tier bounded in bytes, device slots.

Four tiers: vLLM's two LRU tiers (CPU, device) plus a disk cache, behind a free registry:

- registry: name -> CID, free (thousands of adapters cost a dict entry each);
- disk: unpacked adapter folders in ``cache_dir``, fetched verified from the content store,
  LRU, bounded by ``disk_capacity_bytes`` when set (found again after a restart); written by
  a background thread after the adapter is served from memory (``flush`` waits for it);
- CPU: validated :class:`LoraAdapter` objects, LRU, bounded by ``cpu_capacity_bytes``;
- device: the model's preallocated slots, LRU over slots that are neither pinned nor in use.

``acquire`` returns a slot holding the adapter and marks it in use until ``release``;
``pin`` keeps an adapter in its slot until ``unpin``. A bad adapter is refused with its
reason, remembered by CID, and never disturbs the slots of the others. All methods take one
lock; on-evict callbacks run under it and must not block.

One file, although over 400 lines: the tiers share that lock, the counters and the path of
an adapter from the store down to a slot (a miss in one tier is a read from the next), so
split into classes they would need a shared lock and reach into each other's state.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.storage.base import ContentStore
from backend.storage.cid import CID, InvalidCIDError
from inference_node.engine.adapters import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterError,
    LoraAdapter,
    load_adapter,
    parse_adapter,
)
from inference_node.engine.model import MultiLoraModel
from inference_node.engine.packaging import (
    MAX_WEIGHTS_BYTES,
    adapter_cache_path,
    cache_adapter_files,
    fetch_adapter_files,
)

log = logging.getLogger(__name__)

Tier = Literal["device", "cpu"]
EvictCallback = Callable[[str, Tier], None]


class PoolExhaustedError(RuntimeError):
    """Every device slot is pinned or in use: no slot can take another adapter now."""


@dataclass(frozen=True)
class PoolStats:
    """Counters since the pool was built, and what is resident now."""

    hits: int  # acquires served by a device slot
    cpu_hits: int  # device misses served by the CPU tier
    misses: int  # acquires not served by a device slot
    fetches: int  # archives read from the content store
    loads: int  # adapters validated from disk into the CPU tier
    device_evictions: int
    cpu_evictions: int
    refusals: int
    disk_evictions: int
    registered: int
    cpu_adapters: int
    cpu_bytes: int  # bytes of tensors in the CPU tier
    device_adapters: int
    device_bytes: int  # bytes of the adapter tensors copied into slots
    disk_adapters: int
    disk_bytes: int  # bytes of unpacked adapters in the disk cache


@dataclass
class _Slot:
    name: str
    num_bytes: int
    pins: int = 0
    users: int = 0

    @property
    def held(self) -> bool:
        return self.pins > 0 or self.users > 0


class AdapterPool:
    """LRU pool of LoRA adapters over the slots of one :class:`MultiLoraModel`."""

    def __init__(
        self,
        model: MultiLoraModel,
        store: ContentStore,
        cache_dir: str | Path,
        cpu_capacity_bytes: int,
        max_weights_bytes: int = MAX_WEIGHTS_BYTES,
        disk_capacity_bytes: int | None = None,
    ) -> None:
        if cpu_capacity_bytes < 0:
            raise ValueError(f"cpu_capacity_bytes={cpu_capacity_bytes} must be >= 0")
        if disk_capacity_bytes is not None and disk_capacity_bytes < 0:
            raise ValueError(f"disk_capacity_bytes={disk_capacity_bytes} must be >= 0")
        self.disk_capacity_bytes = disk_capacity_bytes
        self.model = model
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.cpu_capacity_bytes = cpu_capacity_bytes
        self.max_weights_bytes = max_weights_bytes
        first = next(iter(model.lora_layers.values()))
        self.dtype = first.lora_a.dtype
        self._lock = threading.RLock()
        self._registry: dict[str, str] = {}  # name -> CID
        self._refused: dict[str, str] = {}  # CID -> reason
        self._cpu: OrderedDict[str, LoraAdapter] = OrderedDict()  # LRU first
        self._cpu_bytes = 0
        self._slots: list[_Slot | None] = [None] * model.slots
        self._device: OrderedDict[str, int] = OrderedDict()  # name -> slot, LRU first
        self._callbacks: list[EvictCallback] = []
        self._disk = self._scan_disk()  # CID -> bytes of its unpacked folder, LRU first
        self._pending_disk: dict[str, dict[str, bytes]] = {}  # CID -> files being written
        self._disk_writer = ThreadPoolExecutor(1, thread_name_prefix="adapter-disk-cache")
        self._counts = dict.fromkeys(
            (
                "hits",
                "cpu_hits",
                "misses",
                "fetches",
                "loads",
                "device_evictions",
                "cpu_evictions",
                "refusals",
                "disk_evictions",
            ),
            0,
        )
        for slot in range(model.slots):
            if model.slot_adapters[slot] is not None:
                model.evict(slot)

    # registry

    def register(self, name: str, cid: str) -> None:
        """Makes ``name`` (a model id or model version) servable from ``cid``; loads nothing."""
        try:
            cid = str(CID.parse(cid))
        except InvalidCIDError as exc:
            raise AdapterError(f"adapter {name}: {exc}") from exc
        with self._lock:
            previous = self._registry.get(name)
            if previous == cid:
                return
            if previous is not None:
                self._drop(name)
            self._registry[name] = cid

    def unregister(self, name: str) -> None:
        """Forgets ``name`` and frees its CPU entry and slot; refused while it is held."""
        with self._lock:
            self._cid(name)
            self._drop(name)
            del self._registry[name]

    def _drop(self, name: str) -> None:
        slot = self._device.get(name)
        if slot is not None:
            state = self._slots[slot]
            if state is not None and state.held:
                raise RuntimeError(f"adapter {name} is pinned or in use in slot {slot}")
            self._evict_slot(slot)
        self._evict_cpu(name)

    def _cid(self, name: str) -> str:
        cid = self._registry.get(name)
        if cid is None:
            raise KeyError(f"adapter {name!r} is not registered")
        return cid

    def is_registered(self, name: str) -> bool:
        with self._lock:
            return name in self._registry

    def registered(self) -> dict[str, str]:
        with self._lock:
            return dict(self._registry)

    def refused(self) -> dict[str, str]:
        """Reasons of the registered adapters that were refused, by name."""
        with self._lock:
            return {
                name: self._refused[cid]
                for name, cid in self._registry.items()
                if cid in self._refused
            }

    def add_evict_callback(self, callback: EvictCallback) -> None:
        """Calls ``callback(name, tier)`` whenever an adapter leaves the device or CPU tier."""
        with self._lock:
            self._callbacks.append(callback)

    # serving

    def acquire(self, name: str) -> int:
        """The slot holding ``name``, loading it if needed; in use until :meth:`release`."""
        with self._lock:
            slot, state = self._loaded(name)
            state.users += 1
            return slot

    def release(self, name: str) -> None:
        with self._lock:
            state = self._held_state(name)
            if state.users == 0:
                raise RuntimeError(f"adapter {name} released more often than acquired")
            state.users -= 1

    def pin(self, name: str) -> int:
        """Loads ``name`` into a slot and keeps it there until :meth:`unpin`."""
        with self._lock:
            slot, state = self._loaded(name)
            state.pins += 1
            return slot

    def unpin(self, name: str) -> None:
        with self._lock:
            state = self._held_state(name)
            if state.pins == 0:
                raise RuntimeError(f"adapter {name} is not pinned")
            state.pins -= 1

    def slot_of(self, name: str) -> int | None:
        with self._lock:
            return self._device.get(name)

    def stats(self) -> PoolStats:
        with self._lock:
            states = [state for state in self._slots if state is not None]
            return PoolStats(
                **self._counts,
                registered=len(self._registry),
                cpu_adapters=len(self._cpu),
                cpu_bytes=self._cpu_bytes,
                device_adapters=len(states),
                device_bytes=sum(state.num_bytes for state in states),
                disk_adapters=len(self._disk),
                disk_bytes=sum(self._disk.values()),
            )

    def _loaded(self, name: str) -> tuple[int, _Slot]:
        """The slot holding ``name`` (loaded if needed) and its state."""
        slot = self._ensure_slot(name)
        state = self._slots[slot]
        assert state is not None
        return slot, state

    def _held_state(self, name: str) -> _Slot:
        slot = self._device.get(name)
        state = None if slot is None else self._slots[slot]
        if state is None:
            raise RuntimeError(f"adapter {name!r} holds no slot")
        return state

    def _ensure_slot(self, name: str) -> int:
        cid = self._cid(name)
        slot = self._device.get(name)
        if slot is not None:
            self._counts["hits"] += 1
            self._device.move_to_end(name)
            return slot
        self._counts["misses"] += 1
        reason = self._refused.get(cid)
        if reason is not None:
            raise AdapterError(f"adapter {name} ({cid}) was refused: {reason}")
        adapter = self._cpu_adapter(name, cid)
        slot = self._free_slot(name)
        try:
            self.model.load_adapter(slot, adapter)
        except AdapterError as exc:
            self.model.evict(slot)
            if self._cpu.pop(name, None) is not None:
                self._cpu_bytes -= adapter.num_bytes
            self._refuse(name, cid, str(exc))
            raise
        self._slots[slot] = _Slot(name, adapter.num_bytes)
        self._device[name] = slot
        log.info("adapter %s loaded into slot %d", name, slot)
        return slot

    def _cpu_adapter(self, name: str, cid: str) -> LoraAdapter:
        adapter = self._cpu.get(name)
        if adapter is not None:
            self._counts["cpu_hits"] += 1
            self._cpu.move_to_end(name)
            return adapter
        try:
            adapter = self._read_adapter(name, cid)
            unwrapped = sorted(adapter.target_modules - self.model.target_modules)
            if unwrapped:
                raise AdapterError(
                    f"adapter {name}: targets {unwrapped}, which this engine does not wrap "
                    f"(wrapped: {sorted(self.model.target_modules)})"
                )
        except AdapterError as exc:
            self._refuse(name, cid, str(exc))
            raise
        self._counts["loads"] += 1
        self._admit_cpu(name, adapter)
        return adapter

    def _read_adapter(self, name: str, cid: str) -> LoraAdapter:
        """From the disk cache, or fetched from the store and parsed in memory.

        The cold path does no disk round trip before serving: the files are written to the
        disk cache in the background, and read from memory until they are there.
        """
        spec, max_rank = self.model.spec, self.model.max_rank
        files = self._pending_disk.get(cid)
        if files is None:
            folder = adapter_cache_path(self.cache_dir, cid)
            if folder.is_dir():
                self._touch_disk(cid, folder)
                return load_adapter(folder, spec, max_rank, self.dtype, name=name)
            self._counts["fetches"] += 1
            files = fetch_adapter_files(self.store, cid, self.max_weights_bytes)
        adapter = parse_adapter(
            files[CONFIG_FILE], files[WEIGHTS_FILE], spec, max_rank, self.dtype, name, cid
        )
        if cid not in self._pending_disk:  # only adapters that validated are cached
            self._pending_disk[cid] = files
            self._disk_writer.submit(self._write_disk_cache, cid, files)
        return adapter

    def _write_disk_cache(self, cid: str, files: dict[str, bytes]) -> None:
        folder: Path | None = None
        try:
            folder = cache_adapter_files(self.cache_dir, cid, files)
        except OSError as exc:  # a full disk costs a later re-fetch, never a request
            log.warning("adapter %s not written to the disk cache: %s", cid, exc)
        finally:
            with self._lock:
                del self._pending_disk[cid]
                if folder is not None:
                    self._touch_disk(cid, folder)

    def flush(self) -> None:
        """Waits until every adapter fetched so far is in the disk cache."""
        self._disk_writer.submit(lambda: None).result()

    def close(self) -> None:
        """Finishes the pending disk cache writes and stops the writer thread."""
        self._disk_writer.shutdown(wait=True)

    def _scan_disk(self) -> OrderedDict[str, int]:
        """The disk cache left by earlier runs, least recently used (oldest mtime) first."""
        found = []
        if self.cache_dir.is_dir():
            for folder in self.cache_dir.iterdir():
                if folder.is_dir() and not folder.name.startswith("."):
                    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                    found.append((folder.stat().st_mtime, folder.name, size))
        return OrderedDict((cid, size) for _, cid, size in sorted(found))

    def _touch_disk(self, cid: str, folder: Path) -> None:
        """Marks ``cid`` used and keeps the disk cache within ``disk_capacity_bytes``."""
        if cid not in self._disk:
            self._disk[cid] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        self._disk.move_to_end(cid)
        if self.disk_capacity_bytes is None:
            return
        while len(self._disk) > 1 and sum(self._disk.values()) > self.disk_capacity_bytes:
            oldest = next(iter(self._disk))
            del self._disk[oldest]
            shutil.rmtree(self.cache_dir / oldest, ignore_errors=True)
            self._counts["disk_evictions"] += 1
            log.debug("adapter %s removed from the disk cache", oldest)

    def _refuse(self, name: str, cid: str, reason: str) -> None:
        self._refused[cid] = reason
        self._counts["refusals"] += 1
        log.warning("adapter %s (%s) refused: %s", name, cid, reason)

    def _admit_cpu(self, name: str, adapter: LoraAdapter) -> None:
        size = adapter.num_bytes
        if size > self.cpu_capacity_bytes:
            return
        while self._cpu and self._cpu_bytes + size > self.cpu_capacity_bytes:
            self._evict_cpu(next(iter(self._cpu)))
        self._cpu[name] = adapter
        self._cpu_bytes += size

    def _evict_cpu(self, name: str) -> None:
        adapter = self._cpu.pop(name, None)
        if adapter is None:
            return
        self._cpu_bytes -= adapter.num_bytes
        self._counts["cpu_evictions"] += 1
        self._notify(name, "cpu")

    def _free_slot(self, name: str) -> int:
        for slot, state in enumerate(self._slots):
            if state is None:
                return slot
        for slot in self._device.values():
            state = self._slots[slot]
            if state is not None and not state.held:
                self._evict_slot(slot, clear=False)  # the next load overwrites every layer
                return slot
        raise PoolExhaustedError(
            f"cannot load adapter {name}: all {len(self._slots)} slots are pinned or in use "
            f"({', '.join(self._device)})"
        )

    def _evict_slot(self, slot: int, clear: bool = True) -> None:
        state = self._slots[slot]
        if state is None:
            return
        if clear:
            self.model.evict(slot)
        else:
            self.model.slot_adapters[slot] = None
        self._slots[slot] = None
        del self._device[state.name]
        self._counts["device_evictions"] += 1
        log.debug("adapter %s evicted from slot %d", state.name, slot)
        self._notify(state.name, "device")

    def _notify(self, name: str, tier: Tier) -> None:
        for callback in self._callbacks:
            callback(name, tier)
