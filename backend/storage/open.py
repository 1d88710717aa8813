"""Which content store a command uses (Datanet flows, ModelFactory, the node, the auditor): a
directory (the embedded default) or an IPFS node's HTTP RPC API, chosen by one setting
(``--store`` / ``OPENLEDGER_STORE``); how long an IPFS read waits for the node's next byte is
``OPENLEDGER_IPFS_READ_TIMEOUT`` (seconds)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from backend.protocol.deployments import PROJECT_ROOT

if TYPE_CHECKING:  # the stores are imported when one is opened: command lines start faster
    from backend.storage.base import ContentStore

STORE_ENV = "OPENLEDGER_STORE"
READ_TIMEOUT_ENV = "OPENLEDGER_IPFS_READ_TIMEOUT"
DEFAULT_STORE_DIR = PROJECT_ROOT / ".data" / "devnet" / "store"  # the one `make demo` uses


def default_store_spec() -> str:
    return os.environ.get(STORE_ENV) or str(DEFAULT_STORE_DIR)


def open_store(spec: str | Path | None = None) -> ContentStore:
    """``spec`` as a store: an IPFS API (``http://host:5001`` or a multiaddr such as
    ``/ip4/127.0.0.1/tcp/5001/http``), else a directory for a :class:`DirectoryStore`."""
    from backend.storage.ipfs import IPFSStore
    from backend.storage.local import DirectoryStore

    text = str(spec) if spec is not None else default_store_spec()
    if text.startswith(("http://", "https://", "/ip4/", "/ip6/", "/dns")):
        return IPFSStore(text, read_timeout=ipfs_read_timeout())
    return DirectoryStore(Path(text))


def ipfs_read_timeout() -> float:
    """``OPENLEDGER_IPFS_READ_TIMEOUT`` in seconds (default 30): how long a read waits for
    the IPFS node's next byte before the CID counts as not found."""
    from backend.storage.ipfs import DEFAULT_READ_TIMEOUT

    text = os.environ.get(READ_TIMEOUT_ENV)
    if not text:
        return DEFAULT_READ_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{READ_TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{READ_TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return seconds
