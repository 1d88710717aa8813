"""The manifest of a Datanet version and its Merkle tree.

A manifest lists every approved contribution of a version in id order (id, CID, contributor,
size), with the Datanet id and version number, as canonical JSON: the same set always gives the
same bytes, hence the same CID. Its Merkle tree is the one the DatanetRegistry checks
(``isInVersion``): OpenZeppelin StandardMerkleTree leaves ``(uint256 id, address contributor,
string cid)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from eth_utils import is_hex_address, to_checksum_address

from backend.protocol.canonical import canonical_json
from backend.protocol.merkle import StandardMerkleTree

MANIFEST_SCHEMA_VERSION = 1
LEAF_TYPES = ("uint256", "address", "string")  # (contributionId, contributor, cid)


class ManifestError(ValueError):
    """Bytes that are not a well-formed Datanet version manifest."""


@dataclass(frozen=True)
class ManifestEntry:
    """One approved contribution."""

    id: int
    cid: str
    contributor: str  # checksummed address
    size: int  # bytes, as declared on-chain

    @property
    def leaf(self) -> tuple[int, str, str]:
        return (self.id, self.contributor, self.cid)


@dataclass(frozen=True)
class Manifest:
    """Version ``version`` of Datanet ``datanet_id``: its contributions in id order."""

    datanet_id: int
    version: int
    contributions: tuple[ManifestEntry, ...]
    schema_version: int = MANIFEST_SCHEMA_VERSION

    @classmethod
    def of(cls, datanet_id: int, version: int, entries: Iterable[ManifestEntry]) -> Manifest:
        """A manifest of ``entries``, sorted by id."""
        return cls(datanet_id, version, tuple(sorted(entries, key=lambda e: e.id)))

    def to_json_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, one trailing newline."""
        data = {
            "schema_version": self.schema_version,
            "datanet_id": self.datanet_id,
            "version": self.version,
            "leaf_types": list(LEAF_TYPES),
            "contributions": [asdict(e) for e in self.contributions],
        }
        return canonical_json(data)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parses a manifest; raises :class:`ManifestError` naming what is wrong."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as why:
            raise ManifestError(f"the manifest is not JSON: {why}") from None
        if not isinstance(data, dict):
            raise ManifestError("the manifest is not a JSON object")
        if data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
            raise ManifestError(f"manifest schema_version {data.get('schema_version')!r}, not 1")
        if data.get("leaf_types") != list(LEAF_TYPES):
            raise ManifestError(f"manifest leaf_types {data.get('leaf_types')!r}")
        for key in ("datanet_id", "version"):
            if not _is_uint(data.get(key)):
                raise ManifestError(f"manifest field {key!r} is not a non-negative integer")
        rows = data.get("contributions")
        if not isinstance(rows, list):
            raise ManifestError("manifest field 'contributions' is not a list")
        entries = [_entry(i, row) for i, row in enumerate(rows)]
        return cls(data["datanet_id"], data["version"], tuple(entries))

    def tree(self) -> StandardMerkleTree:
        """The version's Merkle tree (leaf ``i`` is ``contributions[i]``)."""
        return StandardMerkleTree.of([e.leaf for e in self.contributions], LEAF_TYPES)

    @property
    def root(self) -> bytes:
        return self.tree().root

    def proof(self, contribution_id: int) -> list[bytes]:
        """The Merkle proof of contribution ``contribution_id`` in this version."""
        for i, e in enumerate(self.contributions):
            if e.id == contribution_id:
                return self.tree().proof(i)
        raise KeyError(f"contribution {contribution_id} is not in this manifest")


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(index: int, row: Any) -> ManifestEntry:
    if not isinstance(row, dict) or set(row) != {"id", "cid", "contributor", "size"}:
        raise ManifestError(f"manifest entry {index} needs exactly id, cid, contributor, size")
    if not _is_uint(row["id"]) or not _is_uint(row["size"]):
        raise ManifestError(f"manifest entry {index}: id and size must be integers")
    if not isinstance(row["cid"], str) or not row["cid"]:
        raise ManifestError(f"manifest entry {index}: cid must be a non-empty string")
    if not isinstance(row["contributor"], str) or not is_hex_address(row["contributor"]):
        raise ManifestError(f"manifest entry {index}: contributor is not an address")
    return ManifestEntry(
        row["id"], row["cid"], to_checksum_address(row["contributor"]), row["size"]
    )
