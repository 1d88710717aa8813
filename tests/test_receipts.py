"""The receipts log, the contract between the node that writes it and the backend and auditors
that read it: a lossless round trip, and every bad field refused by name and line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from eth_utils import keccak

from backend.protocol.receipts import (
    Receipt,
    ReceiptLogError,
    UsageLog,
    parse_receipts_log,
    read_usage_log,
    receipts_log,
    receipts_tree,
    usage_bundle,
)
from backend.storage.unixfs import compute_cid

PAYER = "0x" + "ab" * 20
NODE = "0x" + "cd" * 20


def receipt(i: int) -> Receipt:
    return Receipt(
        keccak(text=f"request {i}"), PAYER, NODE, 1, 2, 10 + i, 5, 10**16 * i,
        keccak(text=f"answer {i}"), bytes(32), 10**17 + i, 1_700_000_000 + i,
    )  # fmt: skip


def test_log_round_trips_and_rebuilds_the_same_tree() -> None:
    receipts = [receipt(i) for i in range(1, 4)]
    log = receipts_log(receipts)
    parsed = parse_receipts_log(log)
    assert parsed == [Receipt.from_json(r.to_json()) for r in receipts]
    assert receipts_tree(parsed).root == receipts_tree(receipts).root
    assert receipts_log(parsed) == log  # byte for byte


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("payer", None, "receipt payer must be an address, got None"),
        ("node", "0x1234", "receipt node must be an address"),
        ("requestHash", "0xzz", "receipt requestHash is not hex"),
        ("outputHash", "0x" + "00" * 31, "receipt outputHash must be 32 bytes, got 31"),
        ("modelId", True, "receipt modelId must be an integer, got True"),
        ("price", "ten", "receipt price must be an integer, got 'ten'"),
        ("tokensIn", -1, "receipt tokensIn out of range: -1"),
        ("voucherCumulative", str(2**256), "receipt voucherCumulative out of range"),
    ],
)
def test_a_bad_field_is_named_with_its_line(field: str, value: object, message: str) -> None:
    bad = {**receipt(2).to_json(), field: value}
    data = receipts_log([receipt(1)]) + json.dumps(bad).encode() + b"\n"
    with pytest.raises(ReceiptLogError, match="^log X line 2: " + message):
        parse_receipts_log(data, "log X")


def test_missing_fields_non_objects_and_non_text_are_refused() -> None:
    missing = receipt(1).to_json()
    del missing["createdAt"]
    with pytest.raises(ReceiptLogError, match="line 1: receipt lacks 'createdAt'"):
        parse_receipts_log(json.dumps(missing).encode())
    with pytest.raises(ReceiptLogError, match="line 1: a receipt must be a JSON object"):
        parse_receipts_log(b"[1, 2]\n")
    with pytest.raises(ReceiptLogError, match="line 1: "):
        parse_receipts_log(b"{not json\n")
    with pytest.raises(ReceiptLogError, match="is not UTF-8 text"):
        parse_receipts_log(b"\xff\xfe")
    assert parse_receipts_log(b"\n\n") == []


def _store() -> tuple[dict[str, bytes], Callable[[bytes], str]]:
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        cid = compute_cid(data)
        blobs[cid] = data
        return cid

    return blobs, put


def test_a_usage_bundle_is_canonical_and_reads_its_receipts_and_records() -> None:
    blobs, put = _store()
    receipts = [Receipt.from_json(receipt(i).to_json()) for i in range(1, 3)]
    receipts_cid, records_cid = put(receipts_log(receipts)), put(b"null\nnull\n")
    bundle = usage_bundle(receipts_cid, records_cid)
    assert bundle == (
        f'{{"attributionRecords":"{records_cid}","receipts":"{receipts_cid}"}}\n'.encode()
    )
    read = read_usage_log(blobs.__getitem__, put(bundle))
    assert read == UsageLog(receipts, receipts_cid, records_cid)


def test_a_plain_receipts_log_of_an_older_proof_still_reads() -> None:
    blobs, put = _store()
    one, two = (Receipt.from_json(receipt(i).to_json()) for i in (1, 2))
    for receipts in ([one], [one, two], []):
        cid = put(receipts_log(receipts))
        assert read_usage_log(blobs.__getitem__, cid) == UsageLog(receipts, cid, None)


def test_a_bad_receipts_log_in_a_bundle_is_named() -> None:
    blobs, put = _store()
    bad = put(b"{}\n")
    bundle = put(usage_bundle(bad, put(b"null\n")))
    with pytest.raises(ReceiptLogError, match=f"^receipts log {bad} \\(usage bundle {bundle}\\)"):
        read_usage_log(blobs.__getitem__, bundle)
    broken = put(b'{"attributionRecords":7,"receipts":""}\n')
    with pytest.raises(ReceiptLogError, match="a usage bundle must name two CIDs"):
        read_usage_log(blobs.__getitem__, broken)
