"""The one byte form of a JSON document that is stored by CID or hashed: keys sorted, no
spaces, ASCII (non-ASCII as ``\\u`` escapes), a trailing newline. Every manifest, record,
report and receipts bundle is written by :func:`canonical_json`, so the same document always has
the same CID, whoever writes it."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(data: Any, *, newline: bool = True) -> bytes:
    """``data`` in canonical form; ``newline=False`` for the formats fixed without one (Datanet
    metadata, job specs: their CIDs and hashes are already on chains and in manifests)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return text + b"\n" if newline else text
