"""The attribution records log of a usage proof, and checking its lines against the receipts.

JSON Lines, one line per receipt of the proof's receipts log, in the same order
(docs/attribution-records.md): the receipt's full record (spans and gradients) when the node
computed it, else its answer record (spans only), each as its canonical bytes
(:meth:`.AttributionRecord.to_bytes`, one line); ``null`` for a receipt with a zero
``attributionDigest`` (a model version served without an attribution index).

A receipt's ``attributionDigest`` commits to the **answer record**: the record scored by spans
alone (``sketch`` None), the part the node computes before it answers. A full record adds the
query sketch and the gradient part of the shares; it is tied to the receipt by recomputing its
answer record — same model, index, token hashes and spans, shares with no gradients — from the
index and the answer's token ids, and comparing digests (:func:`verify_record`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from backend.attribution.corpus import tokens_hash
from backend.attribution.index import AttributionIndex
from backend.attribution.record import AttributionRecord, RecordError
from backend.attribution.scoring import make_record, span_evidence
from backend.protocol.receipts import Receipt

ZERO_DIGEST = b"\x00" * 32


class RecordsLogError(ValueError):
    """A records log that cannot be read, or a line that does not match its receipt; the
    message names the log line or the receipt."""


def records_log(records: Sequence[AttributionRecord | None]) -> bytes:
    """The JSON Lines records log, one line per receipt (None: ``null``)."""
    return b"".join(b"null\n" if r is None else r.to_bytes() for r in records)


def parse_records_log(
    data: bytes, source: str = "attribution records log"
) -> list[AttributionRecord | None]:
    """The records of a records log, one per line; :class:`RecordsLogError` naming the line."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise RecordsLogError(f"{source} is not UTF-8 text") from None
    records: list[AttributionRecord | None] = []
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)
            records.append(None if value is None else AttributionRecord.from_json(value))
        except (ValueError, RecordError) as why:  # json.JSONDecodeError is a ValueError
            raise RecordsLogError(f"{source} line {number}: {why}") from None
    return records


def answer_record(
    index: AttributionIndex,
    index_cid: str,
    record: AttributionRecord,
    prompt: Sequence[int],
    answer: Sequence[int],
) -> AttributionRecord:
    """The answer record (spans only) of ``record``'s answer, recomputed from the index and
    the token ids, which must hash to the record's."""
    if record.prompt_hash != tokens_hash(prompt) or record.answer_hash != tokens_hash(answer):
        raise RecordsLogError("the token ids do not hash to the record's prompt and answer hashes")
    evidence = span_evidence(index, prompt, answer)
    return make_record(
        index, index_cid, record.model_id, record.version, prompt, answer, evidence, None
    )


def verify_record(
    receipt: Receipt,
    record: AttributionRecord | None,
    index: AttributionIndex | None = None,
    index_cid: str | None = None,
    prompt: Sequence[int] | None = None,
    answer: Sequence[int] | None = None,
) -> AttributionRecord | None:
    """``record`` (a records-log line) when it is the one ``receipt`` commits to; else
    :class:`RecordsLogError` naming the receipt.

    1. A zero digest: the line must be ``null``.
    2. The record names the receipt's model and adapter version.
    3. An answer record (no query sketch): its digest is the receipt's ``attributionDigest``.
    4. A full record: its answer record, recomputed from ``index`` and the answer's token ids
       (``prompt``, ``answer``; the record commits to them by hash only), has that digest.
       (:func:`.audit.check_record` then checks the rest of the full record.)
    """
    named = f"receipt 0x{receipt.request_hash.hex()}"
    digest = receipt.attribution_digest
    if digest == ZERO_DIGEST:
        if record is not None:
            raise RecordsLogError(f"{named} has no attribution digest but a record")
        return None
    if record is None:
        raise RecordsLogError(f"{named} commits to attribution digest 0x{digest.hex()}; its line "
                              "is null")  # fmt: skip
    if (record.model_id, record.version) != (receipt.model_id, receipt.adapter_version):
        raise RecordsLogError(
            f"{named} is of model {receipt.model_id} version {receipt.adapter_version}; its "
            f"record of model {record.model_id} version {record.version}"
        )
    if record.query_sketch is None:
        spans_only = record
    else:
        if index is None or index_cid is None or prompt is None or answer is None:
            raise RecordsLogError(
                f"{named}: a full record is checked against its receipt with the index and "
                "the answer's token ids"
            )
        if record.index != index_cid:
            raise RecordsLogError(f"{named}: the record is of index {record.index}, not "
                                  f"{index_cid}")  # fmt: skip
        try:
            spans_only = answer_record(index, index_cid, record, prompt, answer)
        except RecordsLogError as why:
            raise RecordsLogError(f"{named}: {why}") from None
    if spans_only.digest() != digest:
        raise RecordsLogError(
            f"{named} commits to attribution digest 0x{digest.hex()}; its answer record's is "
            f"0x{spans_only.digest().hex()}"
        )
    return record
