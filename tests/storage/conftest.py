"""A real IPFS node (js-ipfs, offline, loopback) for the content-store tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backend.devnet.ipfs import IPFSDaemon
from backend.storage.ipfs import IPFSStore


@pytest.fixture(scope="session")
def ipfs_daemon(tmp_path_factory) -> Iterator[IPFSDaemon]:
    with IPFSDaemon(repo=tmp_path_factory.mktemp("ipfs-repo")) as daemon:
        yield daemon


@pytest.fixture
def ipfs_store(ipfs_daemon) -> Iterator[IPFSStore]:
    store = IPFSStore(ipfs_daemon.api_multiaddr)
    yield store
    store.close()
