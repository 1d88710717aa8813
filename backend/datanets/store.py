"""Which content store the Datanet flows use: a directory (the embedded default) or an IPFS
node's HTTP RPC API, chosen by one setting (``--store`` / ``OPENLEDGER_STORE``)."""

from __future__ import annotations

import os
from pathlib import Path

from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.base import ContentStore
from backend.storage.ipfs import IPFSStore
from backend.storage.local import DirectoryStore

STORE_ENV = "OPENLEDGER_STORE"
DEFAULT_STORE_DIR = PROJECT_ROOT / ".data" / "devnet" / "store"  # the one `make demo` uses


def default_store_spec() -> str:
    return os.environ.get(STORE_ENV) or str(DEFAULT_STORE_DIR)


def open_store(spec: str | Path | None = None) -> ContentStore:
    """``spec`` as a store: an IPFS API (``http://host:5001`` or a multiaddr such as
    ``/ip4/127.0.0.1/tcp/5001/http``), else a directory for a :class:`DirectoryStore`."""
    text = str(spec) if spec is not None else default_store_spec()
    if text.startswith(("http://", "https://", "/ip4/", "/ip6/", "/dns")):
        return IPFSStore(text)
    return DirectoryStore(Path(text))
