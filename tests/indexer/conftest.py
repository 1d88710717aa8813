"""Indexer fixtures: a real anvil with the scripted protocol history."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port
from backend.indexer.abi import EventDecoder
from tests.protocol_history import History, make_history


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, History]]:
    """One anvil per test module with the history on it (tests only add blocks to it)."""
    with Anvil(port=free_port()) as anvil:
        yield anvil, make_history(Web3(Web3.HTTPProvider(anvil.url)))


@pytest.fixture(scope="session")
def decoders() -> dict[str, EventDecoder]:
    return {}
