"""API fixtures: a real anvil with the scripted history, indexed, and the app over that index
with the content the history referenced in a directory store."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402
from web3 import Web3  # noqa: E402

from backend.api.config import Settings  # noqa: E402
from backend.api.main import create_app  # noqa: E402
from backend.devnet.anvil import Anvil, free_port  # noqa: E402
from backend.indexer.chain import ChainClient  # noqa: E402
from backend.indexer.sync import Indexer, IndexerConfig  # noqa: E402
from backend.storage.local import DirectoryStore  # noqa: E402
from tests.protocol_history import History, make_history  # noqa: E402


@dataclass
class Stack:
    anvil: Anvil
    history: History
    store: DirectoryStore
    db_path: Path

    def reindex(self) -> None:
        indexer = Indexer(
            self.db_path, self.history.protocol.deployment, ChainClient(self.anvil.url),
            IndexerConfig(confirmations=0),
        )  # fmt: skip
        indexer.sync_once()
        indexer.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("api")
    store = DirectoryStore(root / "content")
    with Anvil(port=free_port()) as anvil:
        history = make_history(Web3(Web3.HTTPProvider(anvil.url)), store)
        stack = Stack(anvil, history, store, root / "index.db")
        stack.reindex()
        yield stack


@pytest.fixture(scope="session")
def app(stack: Stack):
    settings = Settings(db_path=stack.db_path, content_dir=stack.store.root)
    return create_app(settings, stack.store)


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver/api/v1") as client:
        yield client
