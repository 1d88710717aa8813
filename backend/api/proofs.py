"""Merkle proofs the API serves, rebuilt from the index and checked against on-chain roots.

- A Datanet version's tree: leaves ``(uint256 contributionId, address contributor, string cid)``
  of the contributions approved before the version was published (its ``contributionCount``
  of them, in id order), exactly what ``publishVersion`` committed to.
- An attribution epoch's tree: leaves ``(uint256 index, address account, uint256 amount)`` from
  the epoch's report in the content store. The report format (JSON)::

      {"leaves": [[index, "0xaccount", "amount in OPEN wei"], ...], ...}

  ``amount`` may be a JSON integer or a decimal string; other keys (model, epoch, per-inference
  scores) are the attribution's business and ignored here.

Both are immutable once on-chain, so trees are cached by (what, root).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from eth_utils import is_address, to_checksum_address

from backend.protocol.merkle import StandardMerkleTree
from backend.storage.base import ContentNotFoundError, ContentStore, ContentStoreError

VERSION_LEAF_TYPES = ("uint256", "address", "string")
CLAIM_LEAF_TYPES = ("uint256", "address", "uint256")
UINT256_MAX = 2**256 - 1
T = TypeVar("T")


class ProofUnavailableError(LookupError):
    """The tree cannot be rebuilt, or it does not match the on-chain root."""


@dataclass(frozen=True)
class IndexedTree:
    tree: StandardMerkleTree
    positions: dict[int, list[int]]  # contribution id / leaf index -> rows of the tree
    by_account: dict[str, list[int]] = field(default_factory=dict)  # report leaves' accounts


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]  # type: ignore[return-value]
        value = build()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def _check_root(tree: StandardMerkleTree, onchain: str, what: str) -> None:
    rebuilt = "0x" + tree.root.hex()
    if rebuilt != onchain.lower():
        raise ProofUnavailableError(f"{what}: the rebuilt Merkle root {rebuilt} differs from the "
                                    f"on-chain root {onchain}")  # fmt: skip


def version_rows(conn: sqlite3.Connection, version: sqlite3.Row) -> list[sqlite3.Row]:
    """The contributions of a version: approved in its Datanet before its publication event."""
    return conn.execute(
        "SELECT id, contributor, cid FROM contributions WHERE datanet_id = ?"
        " AND status = 'approved' AND (reviewed_block < ? OR (reviewed_block = ?"
        " AND reviewed_log_index < ?)) ORDER BY id",
        (version["datanet_id"], version["block_number"], version["block_number"],
         version["log_index"]),
    ).fetchall()  # fmt: skip


def parse_report(raw: bytes) -> list[tuple[int, str, int]]:
    """The leaves of an attribution report. Raises ValueError naming what is wrong."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as why:
        raise ValueError(f"not JSON ({why})") from None
    leaves = data.get("leaves") if isinstance(data, dict) else None
    if not isinstance(leaves, list) or not leaves:
        raise ValueError("no 'leaves' list")
    parsed = []
    for n, leaf in enumerate(leaves):
        if not (isinstance(leaf, list) and len(leaf) == 3):
            raise ValueError(f"leaf {n} is not [index, account, amount]")
        index, account, amount = leaf
        if isinstance(amount, str) and amount.isdigit():
            amount = int(amount)
        valid = (
            isinstance(index, int) and not isinstance(index, bool) and 0 <= index <= UINT256_MAX
            and isinstance(account, str) and is_address(account)
            and isinstance(amount, int) and not isinstance(amount, bool)
            and 0 <= amount <= UINT256_MAX
        )  # fmt: skip
        if not valid:
            raise ValueError(f"leaf {n} is not [uint256 index, address account, uint256 amount]")
        parsed.append((index, to_checksum_address(account), amount))
    return parsed


class ProofCache:
    """Rebuilt trees, checked against their on-chain roots, cached."""

    def __init__(self, size: int = 64) -> None:
        self._trees = _LRU(size)

    def version_tree(self, conn: sqlite3.Connection, version: sqlite3.Row) -> IndexedTree:
        key = ("version", version["datanet_id"], version["version"], version["merkle_root"])
        return self._trees.get(key, lambda: self._build_version(conn, version))

    @staticmethod
    def _build_version(conn: sqlite3.Connection, version: sqlite3.Row) -> IndexedTree:
        what = f"datanet {version['datanet_id']} version {version['version']}"
        rows = version_rows(conn, version)
        if len(rows) != version["contribution_count"]:
            raise ProofUnavailableError(
                f"{what}: {len(rows)} approved contributions indexed before its publication, "
                f"the chain says {version['contribution_count']}"
            )
        tree = StandardMerkleTree.of([tuple(r) for r in rows], VERSION_LEAF_TYPES)
        _check_root(tree, version["merkle_root"], what)
        return IndexedTree(tree, {int(r[0]): [i] for i, r in enumerate(rows)})

    def version_members(self, conn: sqlite3.Connection, version: sqlite3.Row) -> list[int]:
        """The ids of a version's contributions, in id order."""
        key = ("members", version["datanet_id"], version["version"], version["merkle_root"])
        return self._trees.get(key, lambda: [int(r[0]) for r in version_rows(conn, version)])

    def report_tree(self, store: ContentStore, epoch: sqlite3.Row) -> IndexedTree:
        key = ("report", epoch["report_cid"], epoch["merkle_root"])
        return self._trees.get(key, lambda: self._build_report(store, epoch))

    @staticmethod
    def _build_report(store: ContentStore, epoch: sqlite3.Row) -> IndexedTree:
        what = f"epoch {epoch['id']}'s report {epoch['report_cid']}"
        try:
            raw = store.get(epoch["report_cid"])
        except ContentNotFoundError:
            raise ProofUnavailableError(f"{what} is not in the content store") from None
        except (ContentStoreError, ValueError) as why:
            raise ProofUnavailableError(f"{what} cannot be read: {why}") from None
        try:
            leaves = parse_report(raw)
        except ValueError as why:
            raise ProofUnavailableError(f"{what} is not an attribution report: {why}") from None
        tree = StandardMerkleTree.of(leaves, CLAIM_LEAF_TYPES)
        _check_root(tree, epoch["merkle_root"], what)
        positions: dict[int, list[int]] = {}
        by_account: dict[str, list[int]] = {}
        for i, (index, account, _amount) in enumerate(leaves):
            positions.setdefault(index, []).append(i)
            by_account.setdefault(account, []).append(i)
        return IndexedTree(tree, positions, by_account)
