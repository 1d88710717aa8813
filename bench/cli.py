"""Command-line latency: how long a user waits for a protocol command, start-up included.

Runs each command as a user types it, as a subprocess against a local anvil with a fresh
deployment: the ``openledger`` console script (plain web3) and ``ape run ol`` (the same commands
under ape), a read (``status``) and a transaction (``transfer``, simulated, signed, mined).
Writes bench/results/cli.json and prints a table. Targets, for the console script on the local
chain: a read under 1 s, a transaction under 2 s (medians).

    python bench/cli.py [--runs 5] [--ape-runs 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chain_env  # noqa: F401  (first: sets where ape and solc live)
from common import at_most, table, targets_table, warn_if_busy, write_results
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port
from backend.protocol.deployments import DeploymentStore
from backend.protocol.web3_protocol import deploy

log = logging.getLogger("bench.cli")
BIN = Path(sys.executable).parent
RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # TEST::1
READ_TARGET_S, TX_TARGET_S = 1.0, 2.0


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return seconds


def _median(command: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    times = [_timed(command, env) for _ in range(runs)]
    log.info("%s: %s s", " ".join(command[1:4]), ", ".join(f"{t:.2f}" for t in times))
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "runs": runs}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each openledger command")
    parser.add_argument("--ape-runs", type=int, default=2, help="runs of each ape command")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load = warn_if_busy(1.0)
    with Anvil(port=free_port()) as anvil, tempfile.TemporaryDirectory() as tmp:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        protocol = deploy(w3, w3.eth.accounts[0])
        DeploymentStore(Path(tmp) / "deployments.json").save(protocol.deployment)
        env = {**os.environ, "OPENLEDGER_DEPLOYMENTS": str(Path(tmp) / "deployments.json"),
               "OPENLEDGER_RPC": anvil.url, "APE_FOUNDRY_HOST": anvil.url}  # fmt: skip
        ol = [str(BIN / "openledger")]
        ape = [str(BIN / "ape"), "run", "ol"]
        on_ape = ["--network", "ethereum:local:foundry"]
        results = {
            "openledger status": _median([*ol, "status", "--account", "TEST::1"], env, args.runs),
            "openledger transfer": _median(
                [*ol, "transfer", RECIPIENT, "1", "--account", "TEST::0"], env, args.runs
            ),
            "ape run ol status": _median(
                [*ape, "status", *on_ape, "--account", "TEST::1"], env, args.ape_runs
            ),
            "ape run ol transfer": _median(
                [*ape, "transfer", RECIPIENT, "1", *on_ape, "--account", "TEST::0"],
                env,
                args.ape_runs,
            ),
        }
    read, tx = results["openledger status"]["median_s"], results["openledger transfer"]["median_s"]
    targets = [
        at_most("openledger read (status), s", read, READ_TARGET_S),
        at_most("openledger transaction (transfer), s", tx, TX_TARGET_S),
    ]
    speedup = {
        "read": round(results["ape run ol status"]["median_s"] / read, 2),
        "transaction": round(results["ape run ol transfer"]["median_s"] / tx, 2),
    }
    payload = {"commands": results, "ape_over_openledger": speedup, "targets": targets}
    path = write_results("cli", payload, loadavg_1min_at_start=round(load, 2))
    rows = [[k, v["median_s"], v["min_s"], v["runs"]] for k, v in results.items()]
    print(table(["command", "median s", "min s", "runs"], rows))
    print(f"\nape run ol / openledger: read {speedup['read']}x, transaction "
          f"{speedup['transaction']}x\n")  # fmt: skip
    print(targets_table(targets))
    print(f"\nwrote {path}")
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
