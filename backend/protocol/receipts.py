"""Receipts: one per answered inference, the unit a usage proof pays for.

The receipts log of a redemption is JSON Lines, one receipt per line in ledger order, keys as in
:meth:`Receipt.to_json` (byte strings ``0x``-hex, amounts decimal strings). Its usage proof is
the root of an OpenZeppelin ``StandardMerkleTree`` whose leaves are, per receipt::

    (bytes32 requestHash, address payer, address node, uint256 modelId, uint256 adapterVersion,
     uint256 tokensIn, uint256 tokensOut, uint256 price, bytes32 outputHash,
     bytes32 attributionDigest, uint256 voucherCumulative, uint256 createdAt)

so anyone can fetch the log by its CID, rebuild the tree and compare it with the on-chain
``UsageRecord.receiptsRoot``, or prove one receipt with a Merkle proof. The node writes logs;
the backend (feedback, auditors) reads them: this module is their shared contract.

A usage proof's ``receiptsCID`` names a **usage bundle**: canonical JSON (sorted keys, no
spaces, one trailing newline) ``{"attributionRecords":"<CID>","receipts":"<CID>"}``, the
receipts log and its attribution records log (one line per receipt, same order:
``backend/attribution/records_log.py``; docs/attribution-records.md). Proofs recorded before
bundles name the receipts log itself; :func:`read_usage_log` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import is_hex_address, to_checksum_address

from backend.protocol.canonical import canonical_json
from backend.protocol.merkle import StandardMerkleTree

RECEIPT_TYPES = (
    "bytes32", "address", "address", "uint256", "uint256", "uint256", "uint256", "uint256",
    "bytes32", "bytes32", "uint256", "uint256",
)  # fmt: skip


UINT256_MAX = 2**256 - 1


class ReceiptLogError(ValueError):
    """A receipts log that cannot be read; the message names the log, the line and the field."""


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


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
    def from_json(cls, data: object) -> Receipt:
        """One receipts-log line; ValueError naming the missing or bad field."""
        if not isinstance(data, dict):
            raise ValueError("a receipt must be a JSON object")

        def get(key: str) -> Any:
            if key not in data:
                raise ValueError(f"receipt lacks {key!r}")
            return data[key]

        def uint(key: str) -> int:
            value = get(key)
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"receipt {key} must be an integer, got {value!r}")
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"receipt {key} must be an integer, got {value!r}") from None
            if not 0 <= number <= UINT256_MAX:
                raise ValueError(f"receipt {key} out of range: {number}")
            return number

        def address(key: str) -> str:
            value = get(key)
            if not isinstance(value, str) or not is_hex_address(value):
                raise ValueError(f"receipt {key} must be an address, got {value!r}")
            return to_checksum_address(value)

        def hash32(key: str) -> bytes:
            value = get(key)
            try:
                raw = bytes.fromhex(str(value).removeprefix("0x"))
            except ValueError:
                raise ValueError(f"receipt {key} is not hex: {value!r}") from None
            if len(raw) != 32:
                raise ValueError(f"receipt {key} must be 32 bytes, got {len(raw)}")
            return raw

        return cls(
            request_hash=hash32("requestHash"),
            payer=address("payer"),
            node=address("node"),
            model_id=uint("modelId"),
            adapter_version=uint("adapterVersion"),
            tokens_in=uint("tokensIn"),
            tokens_out=uint("tokensOut"),
            price=uint("price"),
            output_hash=hash32("outputHash"),
            attribution_digest=hash32("attributionDigest"),
            voucher_cumulative=uint("voucherCumulative"),
            created_at=uint("createdAt"),
        )


def receipts_log(receipts: Sequence[Receipt]) -> bytes:
    """The JSON Lines receipts log, byte-for-byte deterministic."""
    lines = (json.dumps(r.to_json(), separators=(",", ":")) for r in receipts)
    return "".join(line + "\n" for line in lines).encode()


def parse_receipts_log(data: bytes, source: str = "receipts log") -> list[Receipt]:
    """The receipts of a JSON Lines receipts log; :class:`ReceiptLogError` naming the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReceiptLogError(f"{source} is not UTF-8 text") from None
    receipts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            receipts.append(Receipt.from_json(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ReceiptLogError(f"{source} line {number}: {exc}") from None
    return receipts


def receipts_tree(receipts: Sequence[Receipt]) -> StandardMerkleTree:
    """The usage-proof tree of ``receipts`` (at least one)."""
    return StandardMerkleTree.of([r.leaf_values() for r in receipts], RECEIPT_TYPES)


BUNDLE_KEYS = frozenset({"receipts", "attributionRecords"})


@dataclass(frozen=True)
class UsageLog:
    """What a usage proof's ``receiptsCID`` names: its receipts, the CID of the receipts log
    itself, and the CID of their attribution records log (None for a proof made before
    bundles: its CID is the receipts log's)."""

    receipts: list[Receipt]
    receipts_cid: str
    records_cid: str | None


def usage_bundle(receipts_cid: str, records_cid: str) -> bytes:
    """The canonical usage bundle naming a receipts log and its attribution records log."""
    bundle = {"attributionRecords": records_cid, "receipts": receipts_cid}
    return canonical_json(bundle)


def parse_usage_bundle(data: bytes) -> tuple[str, str] | None:
    """(receipts log CID, records log CID) when ``data`` is a usage bundle; None when it is
    anything else (a plain receipts log, which :func:`parse_receipts_log` judges)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):  # several lines of JSON: a receipts log
        return None
    if not isinstance(value, dict) or set(value) != BUNDLE_KEYS:
        return None
    receipts, records = value["receipts"], value["attributionRecords"]
    if not (isinstance(receipts, str) and receipts and isinstance(records, str) and records):
        raise ReceiptLogError(f"a usage bundle must name two CIDs, not {value!r}")
    return receipts, records


def read_usage_log(get: Callable[[str], bytes], cid: str) -> UsageLog:
    """The receipts a usage proof's ``receiptsCID`` names, through ``get`` (CID -> verified
    bytes, e.g. ``lambda c: store.get(c, max_bytes=...)``); :class:`ReceiptLogError` naming
    the log and line. Reads a usage bundle and an older proof's plain receipts log alike."""
    data = get(cid)
    bundle = parse_usage_bundle(data)
    if bundle is None:
        return UsageLog(parse_receipts_log(data, f"receipts log {cid}"), cid, None)
    receipts_cid, records_cid = bundle
    receipts = parse_receipts_log(
        get(receipts_cid), f"receipts log {receipts_cid} (usage bundle {cid})"
    )
    return UsageLog(receipts, receipts_cid, records_cid)
