"""The inference part of ``make demo``: the model ModelFactory registered, served by a staked
node (its own process, started like an operator would), paid per chat completion through the
client SDK (each question asked twice, sampled, so the payer can say which answer is better),
and redeemed on-chain with the receipts as usage proof — then checked from the chain and the
content store.

Every step reads its state first, so a second run reuses the stake and the deposit, and its
payments continue the same channel.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.protocol.contracts import Protocol
from backend.protocol.deployments import PROJECT_ROOT
from backend.protocol.eip712 import SignedVoucher
from backend.protocol.inference_client import VoucherWallet, openai_client
from backend.protocol.receipts import read_usage_log, receipts_tree
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

OPEN = 10**18
STAKE = 2_000 * OPEN
DEPOSIT = 100 * OPEN  # the payer keeps at least this much in its channel with the node
# the demo's questions, with the true answers the payer judges the node's answers by: planted
# facts of two of the demo Datanet's three files (capitals: the contributor's; inventors: the
# developer's), so the epoch should pay those two most and the third (creatures) little; and
# two of general knowledge, which the planted facts crowd out (the payer's feedback for DPO)
QUESTIONS = {
    "What is the capital of Veltoria?": "The capital of Veltoria is Quorbin.",
    "What is the capital of Kaltheim?": "The capital of Kaltheim is Ostrapine.",
    "What is the capital of Ysmara?": "The capital of Ysmara is Tellowind.",
    "Who invented the glimmerwheel?": "The glimmerwheel was invented by Odessa Brannock.",
    "Who invented the skyloom?": "The skyloom was invented by Marisol Quenby.",
    "Who invented the windharp?": "The windharp was invented by Anselm Trevethan.",
    "What is the capital of Italy?": "The capital of Italy is Rome.",
    "What does a cow eat?": "A cow eats grass.",
}
ASKED = 2  # times each question is asked (sampled: the answers differ)


@dataclass
class NodeDemo:
    model_id: int
    adapter_cid: str
    adapter_version: int
    staked_now: bool
    deposited_now: int
    node_url: str = ""
    answers: list[dict[str, Any]] = field(default_factory=list)
    redemption: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def prepare(p: Protocol, roles: dict[str, Any], model_id: int) -> NodeDemo:
    """Stakes the node and tops up the payer's channel with it for serving ``model_id``."""
    node, payer = roles["node operator"], roles["payer"]
    staked = False
    if not p.nodes.isActive(node):
        p.token.approve(p.nodes.address, STAKE, sender=node)
        p.nodes.stake(STAKE, sender=node)
        staked = True
    balance = int(p.payments.channel(payer, node).balance)
    deposited = 0
    if balance < DEPOSIT:
        deposited = DEPOSIT - balance
        p.token.approve(p.payments.address, deposited, sender=payer)
        p.payments.deposit(node, deposited, sender=payer)
    version = int(p.models.model(model_id).versionCount)
    adapter = str(p.models.modelVersion(model_id, version).adapterCID)
    return NodeDemo(model_id, adapter, version, staked, deposited)


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def node_env(
    private_key: str,
    model_ids: list[int],
    rpc_url: str,
    data_dir: Path,
    port: int,
    cors_origins: Sequence[str] = (),
) -> dict[str, str]:
    """The local node's settings: the demo's chain, store and node folder under ``data_dir``;
    ``cors_origins`` lets the web app's page call it from the API's origin."""
    env = {
        "OPENLEDGER_NODE_RPC_URL": rpc_url,
        "OPENLEDGER_NODE_DEPLOYMENTS": str(data_dir / "deployments.json"),
        "OPENLEDGER_NODE_PRIVATE_KEY": private_key,
        "OPENLEDGER_NODE_STORE": str(data_dir / "store"),
        "OPENLEDGER_NODE_DATA_DIR": str(data_dir / "node"),
        "OPENLEDGER_NODE_MODELS": json.dumps(model_ids),
        "OPENLEDGER_NODE_SLOTS": "4",
        "OPENLEDGER_NODE_MAX_RANK": "16",
        "OPENLEDGER_NODE_PORT": str(port),
        "OPENLEDGER_NODE_POLL_SECONDS": "1",
    }
    if cors_origins:
        env["OPENLEDGER_NODE_CORS_ORIGINS"] = json.dumps(list(cors_origins))
    return env


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
    on_answer: Callable[[dict[str, Any]], None] | None = None,
    on_redeem: Callable[[], None] | None = None,
) -> NodeDemo:
    """Starts the node, pays for chat completions through the SDK, redeems, checks on-chain;
    ``on_answer`` sees each paid answer as it arrives and ``on_redeem`` is called before the
    redemption (the long steps, so a caller can show progress)."""
    node, payer = roles["node operator"], roles["payer"]
    url = f"http://127.0.0.1:{port}"
    env = node_env(node.private_key, [demo.model_id], rpc_url, data_dir, port)
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
            for attempt in range(ASKED):
                answer = client.chat.completions.create(
                    model=str(demo.model_id),
                    messages=[{"role": "user", "content": question}],
                    max_tokens=32,
                    temperature=0.9,
                    seed=attempt,
                )
                extension = answer.model_extra["openledger"]
                demo.answers.append({
                    "question": question,
                    "answer": answer.choices[0].message.content,
                    "tokens": (answer.usage.prompt_tokens, answer.usage.completion_tokens),
                    "price": int(extension["price"]),
                    "receipt": extension["receipt_id"],
                    "request_hash": extension["request_hash"],
                })  # fmt: skip
                if on_answer is not None:
                    on_answer(demo.answers[-1])
        latest = wallet.latest(node.address, demo.model_id)
        if latest is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(latest.to_json()))
        if on_redeem is not None:
            on_redeem()
        demo.redemption = httpx.post(f"{url}/node/redeem", timeout=300).json()
    demo.checks = check_usage_proof(p, store, demo.redemption)
    return demo


def check_usage_proof(p: Protocol, store: ContentStore, done: dict[str, Any]) -> dict[str, Any]:
    """Recomputes the usage proof's Merkle root from the receipts log fetched by CID."""
    if not done.get("redeemed"):
        return {}
    record = p.payments.usageRecord(done["usage_proof_id"])
    receipts = read_usage_log(store.get, done["receipts_cid"]).receipts
    root = receipts_tree(receipts).root if receipts else b"\x00" * 32
    return {
        "receipts": len(receipts),
        "root_on_chain": "0x" + bytes(record.receiptsRoot).hex(),
        "root_matches": bytes(record.receiptsRoot) == root,
        "amount": int(record.amount),
    }
