"""Serving the local stack for people: the chain, the indexer following it, the API with the
web app, and (once the demo registered a model and staked the node) the inference node, until
stopped. What `make up` runs, and how `make demo` ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backend.devnet.node_demo import node_env, node_process
from backend.devnet.services import APIServer, api_server, following_indexer
from backend.devnet.stack import LocalStack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    rpc_url: str
    chain_id: int
    api: APIServer
    node_url: str | None  # None: no model registered or the node is not staked yet
    models: list[int]  # the model ids the node serves

    @property
    def webapp_url(self) -> str:
        return self.api.origin + "/"


def servable_models(stack: LocalStack) -> list[int]:
    """The registered models the demo's node can serve (none before its stake)."""
    p = stack.protocol
    if not p.nodes.isActive(stack.roles["node operator"]):
        return []
    return list(range(1, int(p.models.modelCount()) + 1))


@contextlib.contextmanager
def serve_stack(
    stack: LocalStack, data_dir: Path, api_port: int, node_port: int, node: bool = True
) -> Iterator[Served]:
    """Runs the indexer, the API (web app at its root, the chain's RPC offered to the page)
    and the node (allowed to be called from the web app's origin) over ``stack``."""
    d = stack.protocol.deployment
    rpc_url = stack.anvil.url
    with contextlib.ExitStack() as running:
        running.enter_context(following_indexer(data_dir / "index.db", d, rpc_url))
        api = running.enter_context(
            api_server(data_dir / "index.db", stack.store.root, api_port, public_rpc_url=rpc_url)
        )
        models = servable_models(stack) if node else []
        node_url: str | None = None
        if models:
            operator = stack.roles["node operator"]
            node_url = f"http://127.0.0.1:{node_port}"
            if stack.protocol.nodes.nodeInfo(operator).endpoint != node_url:
                # what an operator does: declare where wallets reach it (the page reads it)
                stack.protocol.nodes.setEndpoint(node_url, sender=operator)
                log.info("node endpoint set to %s", node_url)
            env = node_env(operator.private_key, models, rpc_url, data_dir, node_port, [api.origin])
            running.enter_context(node_process(env, node_url, data_dir / "node" / "node.log"))
        log.info("serving: API %s, node %s", api.url, node_url)
        yield Served(rpc_url, d.chain_id, api, node_url, models)
