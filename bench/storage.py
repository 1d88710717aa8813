"""Content-store throughput: CID computation and `put` of a 100 MiB file in the embedded store
(memory measured in a fresh process per size, to show it stays flat), and the same file added
to a real IPFS node (js-ipfs, offline, loopback) in the same run for comparison.
Writes bench/results/storage.json and prints a table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import table, write_results

MIB = 1 << 20
SIZES_MIB = (10, 100)
TARGET_MB_S = 100.0

_WORKER = r"""
import json, resource, sys, time
from pathlib import Path
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import UnixFSHasher, CHUNK_SIZE
path, store_dir = Path(sys.argv[1]), Path(sys.argv[2])
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hasher = UnixFSHasher()
start = time.perf_counter()
with path.open("rb") as f:
    for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
        hasher.update(chunk)
cid = hasher.finalize()
hash_s = time.perf_counter() - start
start = time.perf_counter()
stored = DirectoryStore(store_dir).put(path)
put_s = time.perf_counter() - start
assert stored == cid
peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"cid": cid, "hash_s": hash_s, "put_s": put_s,
                  "rss_growth_kib": peak_rss - base_rss}))
"""


def _embedded(path: Path, store_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(path), str(store_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ipfs_add(path: Path, repo: Path) -> tuple[str, float]:
    from backend.devnet.ipfs import IPFSDaemon
    from backend.storage.ipfs import IPFSStore

    with IPFSDaemon(repo=repo) as daemon:
        store = IPFSStore(daemon.api_multiaddr, timeout=600)
        start = time.perf_counter()
        cid = store.put(path)
        elapsed = time.perf_counter() - start
        store.close()
    return cid, elapsed


def main() -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)  # ipfshttpclient's urllib3 use
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for size in SIZES_MIB:
            path = tmp_path / f"random-{size}MiB.bin"
            with path.open("wb") as f:
                for _ in range(size):
                    f.write(os.urandom(MIB))
            r = _embedded(path, tmp_path / f"store-{size}")
            r["hash_mb_s"] = size * MIB / 1e6 / r["hash_s"]
            r["put_mb_s"] = size * MIB / 1e6 / r["put_s"]
            results[f"{size} MiB"] = r
            rows.append([f"embedded CID, {size} MiB", f"{r['hash_mb_s']:.0f} MB/s",
                         f"{r['rss_growth_kib'] / 1024:.1f} MiB"])  # fmt: skip
            rows.append([f"embedded put, {size} MiB", f"{r['put_mb_s']:.0f} MB/s", ""])
        big = tmp_path / f"random-{SIZES_MIB[-1]}MiB.bin"
        ipfs_cid, ipfs_s = _ipfs_add(big, tmp_path / "ipfs-repo")
        same = ipfs_cid == results[f"{SIZES_MIB[-1]} MiB"]["cid"]
        ipfs_rate = SIZES_MIB[-1] * MIB / 1e6 / ipfs_s
        results["ipfs_add"] = {"cid": ipfs_cid, "seconds": ipfs_s, "mb_s": ipfs_rate,
                               "same_cid": same}  # fmt: skip
        rows.append([f"js-ipfs add over HTTP, {SIZES_MIB[-1]} MiB",
                     f"{results['ipfs_add']['mb_s']:.0f} MB/s", f"same CID: {same}"])  # fmt: skip
    hash_rate = results[f"{SIZES_MIB[-1]} MiB"]["hash_mb_s"]
    target = {"embedded CID MB/s, 100 MiB": hash_rate, "target": TARGET_MB_S,
              "met": hash_rate >= TARGET_MB_S}  # fmt: skip
    path = write_results("storage", {"results": results, "target": target})
    print(table(["operation", "throughput", "memory growth / note"], rows))
    print(f"\ntarget: CID of 100 MiB >= {TARGET_MB_S:.0f} MB/s: {hash_rate:.0f} MB/s "
          f"({'met' if target['met'] else 'NOT met'})\nwrote {path}")  # fmt: skip
    return 0 if target["met"] and same else 1


if __name__ == "__main__":
    sys.exit(main())
