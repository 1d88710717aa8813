"""Adapters by CID: deterministic packing, verified fetch, and the two-tier LRU adapter pool."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from backend.models.adapter_archive import canonical_config
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from inference_node.engine import AdapterError, MultiLoraModel, load_adapter
from inference_node.engine import pool as pool_module
from inference_node.engine.adapters import CONFIG_FILE, WEIGHTS_FILE
from inference_node.engine.packaging import fetch_adapter, pack_adapter, put_adapter
from inference_node.engine.pool import AdapterPool, PoolExhaustedError
from tests.engine.conftest import MAX_RANK, VOCAB, load_base, peft_reference

ATOL = 1e-4
NAMES = ("attn_qv_r4", "all_r8", "mlp_r2_rslora", "ko_r16")
BIG = 1 << 30  # bytes


class CountingStore(DirectoryStore):
    """A directory store that counts verified reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0

    def iter_verified(self, cid: str) -> Iterator[bytes]:
        self.reads += 1
        return super().iter_verified(cid)

    def get(self, cid: str, max_bytes: int | None = None) -> bytes:
        self.reads += 1
        return super().get(cid, max_bytes)


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


@pytest.fixture
def cids(store: CountingStore, adapter_folders: dict[str, Path]) -> dict[str, str]:
    return {name: put_adapter(store, adapter_folders[name]) for name in NAMES}


@pytest.fixture
def sizes(base_folder: Path, adapter_folders: dict[str, Path]) -> dict[str, int]:
    model = MultiLoraModel(load_base(base_folder), slots=1, max_rank=MAX_RANK)
    return {
        name: load_adapter(adapter_folders[name], model.spec, MAX_RANK).num_bytes for name in NAMES
    }


@pytest.fixture
def make_pool(
    base_folder: Path, store: CountingStore, cids: dict[str, str], tmp_path: Path
) -> Callable[..., AdapterPool]:
    def make(slots: int = 2, cpu_capacity_bytes: int = BIG, **kwargs: object) -> AdapterPool:
        model = MultiLoraModel(load_base(base_folder), slots=slots, max_rank=MAX_RANK, **kwargs)  # type: ignore[arg-type]
        pool = AdapterPool(model, store, tmp_path / "cache", cpu_capacity_bytes)
        for name, cid in cids.items():
            pool.register(name, cid)
        return pool

    return make


def use(pool: AdapterPool, name: str) -> int:
    slot = pool.acquire(name)
    pool.release(name)
    return slot


def prompt_batch(rows: int = 2, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (rows, length), generator=torch.Generator().manual_seed(7))
    return ids, torch.ones_like(ids)


# packaging


def test_pack_is_identical_when_the_same_folder_is_packed_twice(
    adapter_folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = adapter_folders["all_r8"]
    copy = shutil.copytree(folder, tmp_path / "copy")
    for path in copy.iterdir():
        os.utime(path, (1_700_000_000, 1_700_000_000))
        path.chmod(0o600)
    first, second, copied = pack_adapter(folder), pack_adapter(folder), pack_adapter(copy)
    assert first == second == copied
    assert compute_cid(first) == compute_cid(copied)
    assert pack_adapter(adapter_folders["ko_r16"]) != first


def test_fetch_round_trips_through_a_directory_store_and_reuses_the_cache(
    store: CountingStore, adapter_folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = adapter_folders["attn_qv_r4"]
    cid = put_adapter(store, folder)
    assert put_adapter(store, folder) == cid
    fetched = fetch_adapter(store, cid, tmp_path / "cache")
    assert sorted(p.name for p in fetched.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert (fetched / WEIGHTS_FILE).read_bytes() == (folder / WEIGHTS_FILE).read_bytes()
    # the config as packed: canonical (issue 13, point 15), the same settings
    canonical = (fetched / CONFIG_FILE).read_bytes()
    assert canonical == canonical_config((folder / CONFIG_FILE).read_bytes())
    assert json.loads(canonical) == {
        **json.loads((folder / CONFIG_FILE).read_bytes()),
        "target_modules": sorted(json.loads(canonical)["target_modules"]),
    }
    assert fetch_adapter(store, cid, tmp_path / "cache") == fetched
    assert store.reads == 1


def test_fetch_refuses_content_tampered_in_the_store(
    store: CountingStore, adapter_folders: dict[str, Path], tmp_path: Path
) -> None:
    cid = put_adapter(store, adapter_folders["attn_qv_r4"])
    block = store.root / "blocks" / cid
    data = bytearray(block.read_bytes())
    data[-600] ^= 0xFF
    block.write_bytes(bytes(data))
    with pytest.raises(AdapterError, match="failed verification"):
        fetch_adapter(store, cid, tmp_path / "cache")
    assert not (tmp_path / "cache" / cid).exists()


GOOD_CONFIG = b"{}"
MALFORMED = {
    "not a tar": (b"definitely not a tar archive" * 40, "not a valid adapter archive"),
    "empty": (b"", "not a valid adapter archive"),
    "path entry": (
        make_tar([(entry(CONFIG_FILE), GOOD_CONFIG), (entry("../" + WEIGHTS_FILE), b"x")]),
        "unexpected archive entry",
    ),
    "extra file": (
        make_tar(
            [
                (entry(CONFIG_FILE), GOOD_CONFIG),
                (entry(WEIGHTS_FILE), b"x"),
                (entry("run.sh"), b"x"),
            ]
        ),
        "unexpected archive entry",
    ),
    "symlink": (
        make_tar(
            [(entry(CONFIG_FILE), GOOD_CONFIG), (entry(WEIGHTS_FILE, tarfile.SYMTYPE, "/etc"), b"")]
        ),
        "not a regular file",
    ),
    "duplicate": (
        make_tar([(entry(CONFIG_FILE), GOOD_CONFIG), (entry(CONFIG_FILE), GOOD_CONFIG)]),
        "duplicate archive entry",
    ),
    "missing weights": (make_tar([(entry(CONFIG_FILE), GOOD_CONFIG)]), "archive lacks"),
    "oversized": (
        make_tar([(entry(CONFIG_FILE), GOOD_CONFIG), (entry(WEIGHTS_FILE), b"x" * 5000)]),
        "limit 4096",
    ),
}


def test_fetch_refuses_an_archive_over_the_size_limit(store: CountingStore, tmp_path: Path) -> None:
    cid = store.put(b"\0" * (4096 + 1024 + (16 << 10) + (1 << 20) + 1))
    with pytest.raises(AdapterError, match="archive exceeds"):
        fetch_adapter(store, cid, tmp_path / "cache", max_weights_bytes=4096)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_fetch_refuses_malformed_archives(store: CountingStore, tmp_path: Path, case: str) -> None:
    data, reason = MALFORMED[case]
    cid = store.put(data)
    with pytest.raises(AdapterError, match=reason):
        fetch_adapter(store, cid, tmp_path / "cache", max_weights_bytes=4096)
    assert not any((tmp_path / "cache").glob("*"))


# pool


def test_pool_evicts_the_least_recently_used_slot(make_pool: Callable[..., AdapterPool]) -> None:
    pool = make_pool()
    evicted: list[tuple[str, str]] = []
    pool.add_evict_callback(lambda name, tier: evicted.append((name, tier)))
    a, b, c, d = NAMES
    use(pool, a)
    use(pool, b)
    use(pool, a)  # a is now the most recent
    use(pool, c)
    assert evicted == [(b, "device")]
    use(pool, d)
    assert evicted == [(b, "device"), (a, "device")]
    assert {pool.slot_of(c), pool.slot_of(d)} == {0, 1}
    assert pool.slot_of(a) is pool.slot_of(b) is None
    stats = pool.stats()
    assert (stats.hits, stats.misses, stats.device_evictions) == (1, 4, 2)
    assert pool.model.slot_adapters == [
        next(n for n in (c, d) if pool.slot_of(n) == 0),
        next(n for n in (c, d) if pool.slot_of(n) == 1),
    ]


def test_pinned_and_in_use_adapters_are_not_evicted(
    make_pool: Callable[..., AdapterPool],
) -> None:
    pool = make_pool()
    a, b, c, d = NAMES
    pinned = pool.pin(a)
    use(pool, b)
    use(pool, c)  # evicts b, not the older pinned a
    assert pool.slot_of(a) == pinned and pool.slot_of(b) is None
    pool.acquire(c)  # in use: now both slots are held
    with pytest.raises(PoolExhaustedError, match="all 2 slots are pinned or in use"):
        pool.acquire(d)
    pool.release(c)
    use(pool, d)
    assert pool.slot_of(c) is None and pool.slot_of(a) == pinned
    pool.unpin(a)
    use(pool, c)  # a is now the least recent unheld slot
    assert pool.slot_of(a) is None
    with pytest.raises(RuntimeError, match="not pinned"):
        pool.unpin(c)


def test_cpu_tier_stays_within_its_byte_bound(
    make_pool: Callable[..., AdapterPool], sizes: dict[str, int], store: CountingStore
) -> None:
    a, b, *_ = NAMES
    capacity = sizes[a] + sizes[b]
    pool = make_pool(slots=1, cpu_capacity_bytes=capacity)
    cpu_evicted: list[str] = []
    pool.add_evict_callback(lambda name, tier: tier == "cpu" and cpu_evicted.append(name))
    for name in (*NAMES, *NAMES):
        use(pool, name)
        stats = pool.stats()
        assert stats.cpu_bytes <= capacity
        assert stats.device_bytes == sizes[name]
    assert cpu_evicted, "the bound forced adapters back to disk only"
    stats = pool.stats()
    assert stats.fetches == len(NAMES) == store.reads  # later loads come from the disk cache
    assert stats.loads > len(NAMES)


def test_reacquire_after_device_eviction_comes_from_the_cpu_tier(
    make_pool: Callable[..., AdapterPool], store: CountingStore, sizes: dict[str, int]
) -> None:
    pool = make_pool()
    a, b, c, _ = NAMES
    for name in (a, b, c):
        use(pool, name)
    assert pool.slot_of(a) is None
    before = pool.stats()
    use(pool, a)
    after = pool.stats()
    assert after.cpu_hits == before.cpu_hits + 1
    assert (after.fetches, after.loads, store.reads) == (3, 3, 3)
    assert after.cpu_bytes == sizes[a] + sizes[b] + sizes[c]


def test_outputs_through_the_pool_equal_peft(
    make_pool: Callable[..., AdapterPool], base_folder: Path, adapter_folders: dict[str, Path]
) -> None:
    pool = make_pool()
    ids, mask = prompt_batch()
    for name in (*NAMES, NAMES[0]):  # every slot is reused by adapters with other targets
        slot = pool.acquire(name)
        logits = pool.model(ids, mask, torch.tensor([slot, -1]))  # [batch, seq, vocab]
        pool.release(name)
        with torch.no_grad():
            expected = peft_reference(base_folder, adapter_folders[name])(input_ids=ids).logits
            base = load_base(base_folder)(input_ids=ids).logits
        torch.testing.assert_close(logits[0], expected[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], base[1], atol=ATOL, rtol=0)


def test_thousands_of_registrations_cost_no_memory(
    make_pool: Callable[..., AdapterPool], tmp_path: Path
) -> None:
    pool = make_pool()
    buffers = sum(t.nbytes for t in pool.model.state_dict().values())
    for index in range(1000):
        pool.register(f"model-{index}:v1", compute_cid(f"adapter {index}".encode()))
    stats = pool.stats()
    assert stats.registered == 1000 + len(NAMES)
    assert (stats.cpu_bytes, stats.device_bytes, stats.fetches, stats.loads) == (0, 0, 0, 0)
    assert sum(t.nbytes for t in pool.model.state_dict().values()) == buffers
    assert not (tmp_path / "cache").exists()


def test_bad_adapter_is_refused_while_others_keep_serving(
    make_pool: Callable[..., AdapterPool],
    store: CountingStore,
    adapter_folders: dict[str, Path],
    tmp_path: Path,
) -> None:
    bad_folder = shutil.copytree(adapter_folders["attn_qv_r4"], tmp_path / "bad")
    config = json.loads((bad_folder / CONFIG_FILE).read_text())
    config["r"] = 3  # the tensors are rank 4
    (bad_folder / CONFIG_FILE).write_text(json.dumps(config))
    bad_cid = put_adapter(store, bad_folder)
    junk_cid = store.put(b"junk" * 100)

    pool = make_pool()
    pool.register("bad", bad_cid)
    pool.register("junk", junk_cid)
    good = NAMES[1]
    ids, mask = prompt_batch()
    slot = pool.pin(good)
    served = pool.model(ids, mask, torch.tensor([slot, slot]))
    for name, reason in (("bad", "lora_A shape"), ("junk", "not a valid adapter archive")):
        with pytest.raises(AdapterError, match=reason):
            pool.acquire(name)
        reads = store.reads
        with pytest.raises(AdapterError, match="was refused"):
            pool.acquire(name)
        assert store.reads == reads  # remembered, not refetched
    assert set(pool.refused()) == {"bad", "junk"}
    assert pool.stats().refusals == 2
    assert pool.slot_of("bad") is None and pool.model.slot_adapters.count(None) == 1
    torch.testing.assert_close(pool.model(ids, mask, torch.tensor([slot, slot])), served)
    use(pool, NAMES[0])


def test_adapter_on_an_unwrapped_module_is_refused_before_taking_a_slot(
    make_pool: Callable[..., AdapterPool],
) -> None:
    pool = make_pool(target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    attention, _, mlp, other_attention = NAMES
    use(pool, attention)
    use(pool, other_attention)
    with pytest.raises(AdapterError, match="does not wrap"):
        pool.acquire(mlp)
    assert pool.slot_of(attention) is not None and pool.slot_of(other_attention) is not None
    assert pool.stats().device_evictions == 0


def test_pool_is_consistent_under_concurrent_acquire_and_release(
    make_pool: Callable[..., AdapterPool],
) -> None:
    pool = make_pool()
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for step in range(40):
                name = NAMES[(offset + step) % len(NAMES)]
                try:
                    slot = pool.acquire(name)
                except PoolExhaustedError:
                    continue
                assert pool.model.slot_adapters[slot] == name
                pool.release(name)
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for name in NAMES:
        slot = pool.slot_of(name)
        if slot is not None:
            assert pool.model.slot_adapters[slot] == name
    stats = pool.stats()
    assert stats.device_adapters == 2 and stats.fetches == len(NAMES)


# disk cache bound


def test_disk_cache_keeps_the_most_recent_adapters_within_its_capacity(
    base_folder: Path, store: CountingStore, cids: dict[str, str], tmp_path: Path
) -> None:
    def pool_with(capacity: int | None) -> AdapterPool:
        model = MultiLoraModel(load_base(base_folder), slots=1, max_rank=MAX_RANK)
        pool = AdapterPool(model, store, tmp_path / "cache", cpu_capacity_bytes=0,
                           disk_capacity_bytes=capacity)  # fmt: skip
        for name, cid in cids.items():
            pool.register(name, cid)
        return pool

    unbounded = pool_with(None)
    for name in NAMES:
        use(unbounded, name)
    unbounded.flush()  # the disk cache is written in the background
    folder_bytes = {
        name: sum(f.stat().st_size for f in (tmp_path / "cache" / cid).iterdir())
        for name, cid in cids.items()
    }
    assert unbounded.stats().disk_bytes == sum(folder_bytes.values())
    # a restarted pool finds the cache; a bound of the two largest evicts the least recent
    capacity = sum(sorted(folder_bytes.values())[-2:])
    pool = pool_with(capacity)
    assert pool.stats().disk_adapters == len(NAMES)
    reads = store.reads
    use(pool, "all_r8")  # cached: no read; then the cache shrinks to its capacity
    stats = pool.stats()
    assert store.reads == reads and stats.disk_bytes <= capacity and stats.disk_evictions >= 2
    assert (tmp_path / "cache" / cids["all_r8"]).is_dir()
    evicted = [name for name in NAMES if not (tmp_path / "cache" / cids[name]).is_dir()]
    assert evicted and "all_r8" not in evicted
    use(pool, evicted[0])  # fetched again from the store, verified
    pool.flush()
    assert store.reads == reads + 1 and pool.stats().disk_bytes <= capacity


def test_cold_load_serves_from_memory_while_the_disk_write_is_pending(
    make_pool: Callable[..., AdapterPool],
    store: CountingStore,
    cids: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    written = pool_module.cache_adapter_files

    def slow_disk(cache_dir: Path, cid: str, files: dict[str, bytes]) -> Path:
        release.wait(timeout=30)
        return written(cache_dir, cid, files)

    monkeypatch.setattr(pool_module, "cache_adapter_files", slow_disk)
    pool = make_pool(slots=1, cpu_capacity_bytes=0)
    first, second = NAMES[:2]
    use(pool, first)  # served while its files are still in flight to the disk
    use(pool, second)  # takes the only slot; the CPU tier holds nothing
    use(pool, first)  # again: from the pending files, not a second read of the store
    assert store.reads == 2
    assert not (tmp_path / "cache" / cids[first]).exists()
    release.set()
    pool.flush()
    assert (tmp_path / "cache" / cids[first]).is_dir()
    assert pool.stats().disk_adapters == 2


def test_a_failed_disk_write_costs_a_refetch_not_a_request(
    make_pool: Callable[..., AdapterPool],
    store: CountingStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def full_disk(cache_dir: Path, cid: str, files: dict[str, bytes]) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pool_module, "cache_adapter_files", full_disk)
    pool = make_pool(slots=1, cpu_capacity_bytes=0)
    first, second = NAMES[:2]
    use(pool, first)
    pool.flush()
    assert "not written to the disk cache" in caplog.text
    use(pool, second)
    use(pool, first)  # neither memory nor disk holds it: read from the store again
    pool.flush()
    assert store.reads == 3 and pool.stats().disk_adapters == 0
