"""The inference part of ``make demo``: a LoRA adapter trained on the Datanet's approved data,
registered as a priced model, served by a staked node (its own process, started like an
operator would), paid per chat completion through the client SDK, and redeemed on-chain with
the receipts as usage proof — then checked from the chain and the content store.

Every step reads its state first, so a second run reuses the adapter, the model, the stake and
the deposit, and its payments continue the same channel.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.models.base_models import ensure_smollm2
from backend.protocol.contracts import Protocol
from backend.protocol.deployments import PROJECT_ROOT
from backend.protocol.eip712 import SignedVoucher
from backend.protocol.inference_client import VoucherWallet, openai_client
from backend.storage.base import ContentStore
from backend.storage.unixfs import compute_cid
from inference_node.engine.demo_adapter import train_demo_adapter
from inference_node.engine.packaging import put_adapter
from inference_node.payments.receipts import parse_receipts_log, receipts_tree

log = logging.getLogger(__name__)

OPEN = 10**18
STAKE = 2_000 * OPEN
DEPOSIT = 100 * OPEN  # the payer keeps at least this much deposited
PRICING = (OPEN // 100, OPEN // 10_000)  # per request, per token (OPEN wei)
SPLIT = (5_000, 3_000, 1_500, 500)  # developer, contributors, node, protocol (bps)
QUESTIONS = (
    "How many metres are in 3 kilometres?",
    "Convert 2 hours to minutes.",
    "How many grams are in 5 kilograms?",
)


@dataclass
class NodeDemo:
    adapter_dir: Path
    adapter_cid: str
    adapter_trained_now: bool
    model_id: int
    model_registered_now: bool
    staked_now: bool
    deposited_now: int
    node_url: str = ""
    answers: list[dict[str, Any]] = field(default_factory=list)
    redemption: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def _adapter(
    data_dir: Path, dataset_files: list[Path], base: Path, steps: int
) -> tuple[Path, bool]:
    out = data_dir / "adapters" / "unit-conversions-r8"
    if (out / "adapter_model.safetensors").exists():
        return out, False
    pairs = [
        (row["prompt"], row["response"])
        for f in dataset_files
        for row in map(json.loads, f.read_text(encoding="utf-8").splitlines())
    ]
    log.info("training the demo adapter on %d approved pairs", len(pairs))
    train_demo_adapter(base, pairs, out, steps=steps, seed=0)  # 12 steps: ~1-2 min on 2 cores
    return out, True


def _model(p: Protocol, store: ContentStore, developer: Any, node: Any, spec: dict[str, Any]):
    """The model serving ``spec['adapter']`` (registered now if none does)."""
    for model_id in range(1, int(p.models.modelCount()) + 1):
        count = p.models.model(model_id).versionCount
        if p.models.modelVersion(model_id, count).adapterCID == spec["adapter"]:
            return model_id, False
    metadata = json.dumps(
        {"name": "unit-conversions-r8", "description": "SmolLM2 LoRA that converts units",
         "license": "CC0-1.0", "prompt_format": "chatml"}, sort_keys=True
    ).encode()  # fmt: skip
    metadata_cid = store.put(metadata)
    tx = p.models.registerModel(
        (metadata_cid, spec["base_cid"], spec["adapter"], spec["manifest"], spec["datanet"],
         spec["version"], PRICING, SPLIT, node.address),
        sender=developer,
    )  # fmt: skip
    return int(tx.events.filter(p.models.ModelRegistered)[0].modelId), True


def prepare(
    p: Protocol,
    store: ContentStore,
    roles: dict[str, Any],
    data_dir: Path,
    datanet: tuple[int, int, str],
    dataset_files: list[Path],
    train_steps: int = 12,
) -> NodeDemo:
    """Trains or reuses the adapter, registers or reuses the model, stakes and deposits."""
    base = ensure_smollm2(PROJECT_ROOT / ".data")
    adapter_dir, trained = _adapter(data_dir, dataset_files, base, train_steps)
    adapter_cid = put_adapter(store, adapter_dir)
    node, developer, payer = roles["node operator"], roles["developer"], roles["payer"]
    staked = False
    if not p.nodes.isActive(node):
        p.token.approve(p.nodes.address, STAKE, sender=node)
        p.nodes.stake(STAKE, sender=node)
        staked = True
    datanet_id, version, manifest_cid = datanet
    spec = {
        "adapter": adapter_cid,
        "base_cid": compute_cid(_chunks(base / "model.safetensors")),
        "manifest": manifest_cid,  # the Datanet version it learned from (ModelFactory will
        "datanet": datanet_id,  # write a per-example training manifest here)
        "version": version,
    }
    model_id, registered = _model(p, store, developer, node, spec)
    balance = int(p.payments.accountOf(payer).balance)
    deposited = 0
    if balance < DEPOSIT:
        deposited = DEPOSIT - balance
        p.token.approve(p.payments.address, deposited, sender=payer)
        p.payments.deposit(deposited, sender=payer)
    return NodeDemo(adapter_dir, adapter_cid, trained, model_id, registered, staked, deposited)


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


@contextmanager
def node_process(env: dict[str, str], url: str, log_path: Path) -> Iterator[str]:
    """``python -m inference_node serve`` with ``env``; yields its URL once it answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_node", "--log-format", "json", "serve"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the node exited with {process.returncode}; see {log_path}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the node did not start in 180 s; see {log_path}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_and_pay(
    demo: NodeDemo,
    p: Protocol,
    store: ContentStore,
    roles: dict[str, Any],
    rpc_url: str,
    data_dir: Path,
    port: int,
) -> NodeDemo:
    """Starts the node, pays for chat completions through the SDK, redeems, checks on-chain."""
    node, payer = roles["node operator"], roles["payer"]
    url = f"http://127.0.0.1:{port}"
    env = {
        "OPENLEDGER_NODE_RPC_URL": rpc_url,
        "OPENLEDGER_NODE_DEPLOYMENTS": str(data_dir / "deployments.json"),
        "OPENLEDGER_NODE_PRIVATE_KEY": node.private_key,
        "OPENLEDGER_NODE_STORE": str(data_dir / "store"),
        "OPENLEDGER_NODE_DATA_DIR": str(data_dir / "node"),
        "OPENLEDGER_NODE_MODELS": json.dumps([demo.model_id]),
        "OPENLEDGER_NODE_SLOTS": "4",
        "OPENLEDGER_NODE_MAX_RANK": "16",
        "OPENLEDGER_NODE_PORT": str(port),
        "OPENLEDGER_NODE_POLL_SECONDS": "1",
    }
    wallet = VoucherWallet(
        payer.address,
        bytes.fromhex(payer.private_key.removeprefix("0x")),
        node=node.address,
        max_price=OPEN,
    )
    saved = data_dir / "wallet" / "payer-latest-voucher.json"  # the app keeps its latest voucher
    if saved.exists():
        wallet.remember(SignedVoucher.from_json(json.loads(saved.read_text())))
    with node_process(env, url, data_dir / "node" / "node.log"):
        demo.node_url = url
        client = openai_client(f"{url}/v1", wallet)
        for question in QUESTIONS:
            answer = client.chat.completions.create(
                model=str(demo.model_id),
                messages=[{"role": "user", "content": question}],
                max_tokens=24,
                temperature=0,
            )
            extension = answer.model_extra["openledger"]
            demo.answers.append({
                "question": question,
                "answer": answer.choices[0].message.content,
                "tokens": (answer.usage.prompt_tokens, answer.usage.completion_tokens),
                "price": int(extension["price"]),
                "receipt": extension["receipt_id"],
            })  # fmt: skip
        latest = wallet.latest(node.address, demo.model_id)
        if latest is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(latest.to_json()))
        demo.redemption = httpx.post(f"{url}/node/redeem", timeout=300).json()
    demo.checks = check_usage_proof(p, store, demo.redemption)
    return demo


def check_usage_proof(p: Protocol, store: ContentStore, done: dict[str, Any]) -> dict[str, Any]:
    """Recomputes the usage proof's Merkle root from the receipts log fetched by CID."""
    if not done.get("redeemed"):
        return {}
    record = p.payments.usageRecord(done["usage_proof_id"])
    receipts = parse_receipts_log(store.get(done["receipts_cid"]))
    root = receipts_tree(receipts).root if receipts else b"\x00" * 32
    return {
        "receipts": len(receipts),
        "root_on_chain": "0x" + bytes(record.receiptsRoot).hex(),
        "root_matches": bytes(record.receiptsRoot) == root,
        "amount": int(record.amount),
    }
