"""Merkle trees compatible with OpenZeppelin's ``StandardMerkleTree`` and ``MerkleProof``.

Leaves are double-hashed ABI encodings, ``keccak256(keccak256(abi.encode(values)))``, so a leaf
can never be mistaken for an inner node; inner nodes hash their two children in sorted order.
The tree is laid out as OpenZeppelin's: leaves sorted by hash, stored at the end of a flat array
``tree[2n-1]`` whose root is ``tree[0]``. The same tree is built by the contracts' tests, the
scripts publishing Datanet versions, the attribution reports and the auditor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_utils import keccak


def leaf_hash(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """The leaf of ``values`` ABI-encoded as ``types``: keccak256(keccak256(abi.encode(...)))."""
    return keccak(keccak(encode(list(types), list(values))))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """An inner node: the keccak256 of its children in sorted order (commutative)."""
    return keccak(a + b) if a < b else keccak(b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf`` (``MerkleProof.processProof``)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


@dataclass(frozen=True)
class StandardMerkleTree:
    """An OpenZeppelin-compatible Merkle tree over rows of ABI-typed values."""

    types: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    tree: tuple[bytes, ...]  # [2n - 1] nodes, root first, leaves last
    leaf_positions: tuple[int, ...]  # [n] position in `tree` of the leaf of values[i]

    @classmethod
    def of(cls, values: Sequence[Sequence[Any]], types: Sequence[str]) -> StandardMerkleTree:
        """Builds the tree of ``values`` (rows ABI-encoded as ``types``)."""
        if not values:
            raise ValueError("a Merkle tree needs at least one leaf")
        rows = tuple(tuple(row) for row in values)
        hashed = [(leaf_hash(types, row), i) for i, row in enumerate(rows)]
        hashed.sort(key=lambda item: item[0])
        n = len(hashed)
        tree: list[bytes] = [b""] * (2 * n - 1)
        positions = [0] * n
        for k, (digest, row_index) in enumerate(hashed):
            position = len(tree) - 1 - k
            tree[position] = digest
            positions[row_index] = position
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        return cls(tuple(types), rows, tuple(tree), tuple(positions))

    @property
    def root(self) -> bytes:
        """The 32-byte root."""
        return self.tree[0]

    def leaf(self, index: int) -> bytes:
        """The leaf hash of ``values[index]``."""
        return self.tree[self.leaf_positions[index]]

    def proof(self, index: int) -> list[bytes]:
        """The sibling hashes from ``values[index]``'s leaf up to the root."""
        position = self.leaf_positions[index]
        proof: list[bytes] = []
        while position > 0:
            sibling = position - 1 if position % 2 == 0 else position + 1
            proof.append(self.tree[sibling])
            position = (position - 1) // 2
        return proof

    def verify(self, index: int, proof: Sequence[bytes]) -> bool:
        """Whether ``proof`` leads from ``values[index]``'s leaf to the root."""
        return process_proof(leaf_hash(self.types, self.values[index]), proof) == self.root
