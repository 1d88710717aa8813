"""The local stack behind `make demo`: anvil with persisted state, deploy once, reuse after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.devnet.anvil import Anvil, free_port, rpc

ROOT = Path(__file__).resolve().parents[1]
APE = str(Path(sys.executable).with_name("ape"))


def run_demo(data_dir: Path, port: int) -> str:
    result = subprocess.run(
        [APE, "run", "devnet", "demo", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_deploys_once_then_reuses_the_persisted_chain(tmp_path):
    port = free_port()
    first = run_demo(tmp_path, port)
    assert "(deployed now)" in first
    assert "1,000,000,000 OPEN" in first
    assert first.count("funded 10,000 OPEN now") == 4
    deployments = json.loads((tmp_path / "deployments.json").read_text())
    contracts = deployments["31337"]["contracts"]
    assert (tmp_path / "chain" / "anvil-state.json").exists()

    second = run_demo(tmp_path, port)
    assert "(reused from the persisted chain state)" in second
    assert "funded" not in second  # balances were already at their target
    assert (
        json.loads((tmp_path / "deployments.json").read_text())["31337"]["contracts"] == contracts
    )
    for address in contracts.values():
        assert address in second
    # Every process the demo started is gone: nothing answers on its port.
    assert not Anvil(port=port).is_up()


def test_demo_redeploys_when_the_recorded_deployment_has_no_code(tmp_path):
    port = free_port()
    run_demo(tmp_path, port)
    (tmp_path / "chain" / "anvil-state.json").unlink()  # the chain is reset, the record is not
    assert "(deployed now)" in run_demo(tmp_path, port)


def test_anvil_keeps_state_across_restart(tmp_path):
    state = tmp_path / "state.json"
    with Anvil(port=free_port(), state_file=state) as anvil:
        rpc(anvil.url, "anvil_mine", ["0x5"])
        height = int(str(rpc(anvil.url, "eth_blockNumber")), 16)
    assert height == 5
    with Anvil(port=free_port(), state_file=state) as anvil:
        assert int(str(rpc(anvil.url, "eth_blockNumber")), 16) == height
