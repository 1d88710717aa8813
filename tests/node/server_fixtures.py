"""A served node for tests: the anvil world of conftest.py, a tiny real checkpoint with a
tokenizer, a real PEFT adapter registered on-chain as a model, and the node's HTTP server
(uvicorn in a thread) in front of its runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from transformers import AutoTokenizer

from backend.devnet.anvil import free_port
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from inference_node.engine.model import MultiLoraModel
from inference_node.engine.packaging import put_adapter
from inference_node.payments import Web3Sender
from inference_node.server.app import create_app
from inference_node.server.runtime import NodeRuntime
from inference_node.server.settings import NodeSettings
from tests.engine.conftest import MAX_RANK, RECIPES, build_adapter, load_base
from tests.engine.tiny_tokenizer import build_tiny_checkpoint
from tests.node.conftest import PRICING, World

SERVED_MODEL = 2  # model 1 of the world has no real adapter


@dataclass(frozen=True)
class Checkpoint:
    base: Path
    adapter: Path
    base_cid: str


def make_checkpoint(root: Path) -> Checkpoint:
    base = build_tiny_checkpoint(root / "base")
    adapter = build_adapter(base, root / "adapter", RECIPES["all_r8"], seed=11)
    weights = (base / "model.safetensors").read_bytes()
    return Checkpoint(base, adapter, compute_cid(weights))


def register_served_model(world: World, store: DirectoryStore, checkpoint: Checkpoint) -> int:
    """Registers the checkpoint's adapter as a model served by the world's node; its id."""
    r, p = world.roles, world.protocol
    spec = (
        "bafkmeta", checkpoint.base_cid, put_adapter(store, checkpoint.adapter), "bafkmanifest",
        1, 1, (PRICING.per_request, PRICING.per_token), (6_000, 2_000, 1_500, 500), r.node,
    )  # fmt: skip
    p.transact(r.developer, p["ModelRegistry"].functions.registerModel(spec))
    return int(p["ModelRegistry"].functions.modelCount().call())


def node_settings(data_dir: Path, store: Path, world: World, **kw: object) -> NodeSettings:
    return NodeSettings(
        address=world.roles.node,
        store=str(store),
        data_dir=data_dir,
        slots=4,
        max_rank=MAX_RANK,
        max_batch=8,
        max_tokens=12,
        max_tokens_limit=64,
        poll_seconds=0.5,
        redeem_interval=10**9,
        redeem_threshold_wei=10**30,
        **kw,  # type: ignore[arg-type]
    )


def build_runtime(
    world: World, settings: NodeSettings, checkpoint: Checkpoint, store: DirectoryStore
) -> NodeRuntime:
    model = MultiLoraModel(load_base(checkpoint.base), slots=settings.slots, max_rank=MAX_RANK)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.base))
    sender = Web3Sender(world.w3, world.payments, world.roles.node)
    return NodeRuntime(settings, world.protocol, sender, store, model, tokenizer, checkpoint.base)


@contextmanager
def serving(runtime: NodeRuntime) -> Iterator[str]:
    """Runs the node's HTTP server on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    runtime.start()
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("the node's HTTP server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        runtime.stop()


NodeFactory = Callable[..., AbstractContextManager[tuple[str, int]]]


def node_factory(world: World, checkpoint: Checkpoint, tmp_path: Path) -> NodeFactory:
    """``start(**settings)``: serves a node with extra settings over a model registered now;
    yields (its URL, the served model id)."""

    @contextmanager
    def start(**settings: object) -> Iterator[tuple[str, int]]:
        store = DirectoryStore(tmp_path / "store")
        model_id = register_served_model(world, store, checkpoint)
        config = node_settings(tmp_path / "node", tmp_path / "store", world, **settings)
        with serving(build_runtime(world, config, checkpoint, store)) as url:
            yield url, model_id

    return start
