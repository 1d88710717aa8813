"""Revealing an answer's token ids to settle a challenge, and checking full records with them.

Records publish the prompt's and the answer's token ids by hash only, so a payer's prompt stays
private. An answer record (spans only) is bound to its receipt by the receipt's digest; a full
record (spans and gradients) is bound only through the token ids: its spans must be those of
the answer record the digest commits to, and its query sketch must be the answer's gradients.
When an epoch is disputed, the node (which keeps the ids in its ledger) or the payer reveals
the ids of the disputed receipts only, as a **reveal file** in the content store:

    JSON Lines, one object per receipt, in any order:
    {"answer":[ids],"prompt":[ids],"requestHash":"0x<32 bytes>"}

A reveal cannot be forged: the ids must hash to the record's ``prompt_hash`` and
``answer_hash``. With it, anyone recomputes the record (integer arithmetic on the index) and
the query sketch (the adapter's gradients, within :data:`.audit.TOLERANCE`), and the epoch rule
refuses a full record they disprove: its receipt is paid by training examples instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from backend.attribution.attributor import Attributor
from backend.attribution.audit import check_record
from backend.attribution.corpus import tokens_hash
from backend.attribution.epoch import RedemptionInput
from backend.attribution.records_log import RecordsLogError, verify_record
from backend.protocol.canonical import canonical_json
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)

MAX_REVEAL_BYTES = 64 << 20
MAX_TOKEN_ID = 2**32 - 1


class RevealError(ValueError):
    """A reveal file that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Revealed:
    request_hash: bytes
    prompt: tuple[int, ...]
    answer: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "answer": list(self.answer),
            "prompt": list(self.prompt),
            "requestHash": "0x" + self.request_hash.hex(),
        }


def reveal_bytes(items: Iterable[Revealed]) -> bytes:
    """The canonical reveal file of ``items`` (sorted keys, no spaces, one line each)."""
    return b"".join(canonical_json(i.to_json()) for i in items)


def _ids(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_TOKEN_ID for i in value
    ):
        raise RevealError(f"{what} must be a list of token ids (integers in [0, 2^32))")
    return tuple(value)


def parse_reveal(data: bytes, source: str = "reveal file") -> dict[bytes, Revealed]:
    """The revealed token ids by request hash; :class:`RevealError` naming the bad line."""
    found: dict[bytes, Revealed] = {}
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise RevealError(f"{source} is not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        where = f"{source} line {number}"
        try:
            value = json.loads(line)
        except ValueError:
            raise RevealError(f"{where} is not JSON") from None
        if not isinstance(value, dict) or set(value) != {"answer", "prompt", "requestHash"}:
            raise RevealError(f"{where} must have exactly answer, prompt and requestHash")
        text = value["requestHash"]
        try:
            request_hash = bytes.fromhex(text.removeprefix("0x"))
        except (AttributeError, ValueError):
            request_hash = b""
        if len(request_hash) != 32:
            raise RevealError(f"{where}: requestHash {text!r} is not 32 bytes of hex")
        if request_hash in found:
            raise RevealError(f"{where}: receipt {text} is revealed twice")
        found[request_hash] = Revealed(
            request_hash, _ids(value["prompt"], f"{where}: prompt"),
            _ids(value["answer"], f"{where}: answer"),
        )  # fmt: skip
    return found


AttributorOf = Callable[[int, int], Attributor]  # (model id, version) -> its attributor


def refute_full_records(
    redemption: RedemptionInput,
    revealed: Mapping[bytes, Revealed],
    attributor_of: AttributorOf,
    recompute_sketches: bool = True,
) -> dict[bytes, list[str]]:
    """What the revealed token ids disprove in ``redemption``'s full records, by request hash
    (receipts without a full record or without revealed ids are not checked). A full record
    stands when its answer record, recomputed from the ids, has the receipt's digest; when it
    recomputes byte for byte from the index with its own sketch; and (``recompute_sketches``)
    when that sketch is the answer's gradients within tolerance.

    Anyone can write a reveal file, so ids that do not hash to the record's ``prompt_hash``
    and ``answer_hash`` are not this answer's: they prove nothing and are ignored (logged),
    or a false challenger could refute an honest record with made-up ids."""
    problems: dict[bytes, list[str]] = {}
    for receipt, record in zip(redemption.receipts, redemption.records, strict=True):
        ids = revealed.get(receipt.request_hash)
        if record is None or record.query_sketch is None or ids is None:
            continue
        if (tokens_hash(ids.prompt), tokens_hash(ids.answer)) != (
            record.prompt_hash,
            record.answer_hash,
        ):
            log.warning("reveal of receipt 0x%s: the ids do not hash to its record's; ignored",
                        receipt.request_hash.hex())  # fmt: skip
            continue
        attributor = attributor_of(record.model_id, record.version)
        found: list[str] = []
        try:
            verify_record(receipt, record, attributor.index, attributor.index_cid, ids.prompt,
                          ids.answer)  # fmt: skip
        except RecordsLogError as why:
            found.append(str(why))
        if not found:
            sketch = None
            if recompute_sketches:
                sketch = attributor.sketches([(ids.prompt, ids.answer)])[0]
            found += check_record(attributor.index, attributor.index_cid, record, ids.prompt,
                                  ids.answer, sketch)  # fmt: skip
        if found:
            problems[receipt.request_hash] = found
    return problems


def chain_attributors(
    p: Web3Protocol, store: ContentStore, base_dir: Path, work_dir: Path, device: str = "cpu"
) -> AttributorOf:
    """Attributors of the chain's model versions, each built once (adapter unpacked into
    ``work_dir``, the base model from ``base_dir``)."""
    made: dict[tuple[int, int], Attributor] = {}

    def attributor_of(model_id: int, version: int) -> Attributor:
        if (model_id, version) not in made:
            made[model_id, version] = Attributor.for_model_version(
                p, store, model_id, version, base_dir, work_dir, device
            )
        return made[model_id, version]

    return attributor_of
