"""Receipts: one per answered inference, the unit a usage proof pays for.

The receipts log of a redemption is JSON Lines, one receipt per line in ledger order, keys as in
:meth:`Receipt.to_json` (byte strings ``0x``-hex, amounts decimal strings). Its usage proof is
the root of an OpenZeppelin ``StandardMerkleTree`` whose leaves are, per receipt::

    (bytes32 requestHash, address payer, address node, uint256 modelId, uint256 adapterVersion,
     uint256 tokensIn, uint256 tokensOut, uint256 price, bytes32 outputHash,
     bytes32 attributionDigest, uint256 voucherCumulative, uint256 createdAt)

so anyone can fetch the log by its CID, rebuild the tree and compare it with the on-chain
``UsageRecord.receiptsRoot``, or prove one receipt with a Merkle proof.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from backend.protocol.merkle import StandardMerkleTree

RECEIPT_TYPES = (
    "bytes32", "address", "address", "uint256", "uint256", "uint256", "uint256", "uint256",
    "bytes32", "bytes32", "uint256", "uint256",
)  # fmt: skip


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def _bytes32(text: str) -> bytes:
    raw = bytes.fromhex(text.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Receipt:
    """What the node answered for one paid request."""

    request_hash: bytes  # 32 bytes, keccak of the canonical request
    payer: str
    node: str
    model_id: int
    adapter_version: int
    tokens_in: int
    tokens_out: int
    price: int  # OPEN wei, the actual price (see quote.py's credit rule)
    output_hash: bytes  # 32 bytes, keccak of the output text
    attribution_digest: bytes  # 32 bytes, digest of the attribution scores (zero if none)
    voucher_cumulative: int  # OPEN wei, cumulative amount of the voucher that paid for it
    created_at: int  # unix seconds

    def leaf_values(self) -> tuple[Any, ...]:
        return (
            self.request_hash, to_checksum_address(self.payer), to_checksum_address(self.node),
            self.model_id, self.adapter_version, self.tokens_in, self.tokens_out, self.price,
            self.output_hash, self.attribution_digest, self.voucher_cumulative, self.created_at,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "requestHash": _hex(self.request_hash),
            "payer": to_checksum_address(self.payer),
            "node": to_checksum_address(self.node),
            "modelId": self.model_id,
            "adapterVersion": self.adapter_version,
            "tokensIn": self.tokens_in,
            "tokensOut": self.tokens_out,
            "price": str(self.price),
            "outputHash": _hex(self.output_hash),
            "attributionDigest": _hex(self.attribution_digest),
            "voucherCumulative": str(self.voucher_cumulative),
            "createdAt": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Receipt:
        return cls(
            request_hash=_bytes32(data["requestHash"]),
            payer=to_checksum_address(data["payer"]),
            node=to_checksum_address(data["node"]),
            model_id=int(data["modelId"]),
            adapter_version=int(data["adapterVersion"]),
            tokens_in=int(data["tokensIn"]),
            tokens_out=int(data["tokensOut"]),
            price=int(data["price"]),
            output_hash=_bytes32(data["outputHash"]),
            attribution_digest=_bytes32(data["attributionDigest"]),
            voucher_cumulative=int(data["voucherCumulative"]),
            created_at=int(data["createdAt"]),
        )


def receipts_log(receipts: Sequence[Receipt]) -> bytes:
    """The JSON Lines receipts log, byte-for-byte deterministic."""
    lines = (json.dumps(r.to_json(), separators=(",", ":")) for r in receipts)
    return "".join(line + "\n" for line in lines).encode()


def parse_receipts_log(data: bytes) -> list[Receipt]:
    return [Receipt.from_json(json.loads(line)) for line in data.decode().splitlines() if line]


def receipts_tree(receipts: Sequence[Receipt]) -> StandardMerkleTree:
    """The usage-proof tree of ``receipts`` (at least one)."""
    return StandardMerkleTree.of([r.leaf_values() for r in receipts], RECEIPT_TYPES)
