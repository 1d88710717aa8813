"""Users' feedback on paid answers: signed ratings and preferences, stored, exported for DPO.

Only the wallet that paid for an answer may rate it. A rating or preference names answers by the
``request_hash`` of their receipts (the node returns it in every answer's ``openledger`` object)
and is EIP-712 typed data signed by that wallet. It is checked against the receipts logs that
the node's usage proofs committed on-chain: the receipt must be known, its payer must be the
signer, and the answer text sent with the feedback must hash to the receipt's ``output_hash``.
The prompt cannot be checked (a receipt commits to it only through the request id); it is the
payer's word, kept consistent: one request has one prompt.

Accepted feedback is durable (SQLite in WAL mode, ``synchronous=FULL``) before a call returns,
and exports as a preference-pairs Datanet contribution, so feedback givers become data
contributors of the model's next version.

Duplicates (there is no nonce in the signed data, so an older signature can always be replayed;
"latest wins" would let anyone who saw it undo a change of mind, hence the first one stands):

- a rating of an answer already rated is refused (:class:`DuplicateFeedbackError`), unless it
  says exactly the same (same score and comment hash): then it is an idempotent retry;
- a preference over a pair of answers already compared is refused in the reversed order and is
  an idempotent retry in the same order.

Pairs exported for a model (:meth:`FeedbackStore.preference_pairs`):

- every stored preference;
- from ratings: two answers of the same model to the same prompt (the same text), rated by the
  same payer with different scores, give one pair, the higher score chosen; equal scores give
  none, and a pair of answers already compared by an explicit preference is not derived again;
- lines with the same (prompt, chosen, rejected) text are exported once, every giver credited;
- order: by (chosen, rejected) request hash, so the same feedback gives the same bytes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol

from eth_account.messages import SignableMessage
from eth_utils import keccak, to_checksum_address

from backend.datanets.formats import (
    ContributionFormatError,
    DataFormat,
    DatanetMetadata,
    validate_contribution,
)
from backend.protocol.eip712 import (
    PREFERENCE_TYPE,
    RATING_TYPE,
    Domain,
    InvalidSignatureError,
    Signature,
    parse_signature,
    recover_signer,
    sign_typed,
    typed_digest,
    typed_message,
)
from backend.protocol.receipts import Receipt, ReceiptLogError, read_usage_log
from backend.storage.base import ContentStore
from backend.storage.sqlite import DurableSQLite

MIN_SCORE, MAX_SCORE = 1, 5
ZERO32 = bytes(32)
MAX_SQLITE_INT = 2**63 - 1
# validates exports; its limit is far above any feedback file (the target Datanet's own
# metadata, passed to export_preferences, applies its real limit)
EXPORT_METADATA = DatanetMetadata(
    name="feedback",
    description="preference pairs from signed user feedback",
    license="CC-BY-4.0",
    format=DataFormat.PREFERENCE,
    max_file_bytes=2**40,
)


# ---------------------------------------------------------------- errors


class FeedbackError(ValueError):
    """Feedback that is refused; the subclass and the message say which check failed."""


class MalformedFeedbackError(FeedbackError):
    """A field of the feedback has the wrong shape (hash length, empty text, …)."""


class ScoreOutOfRangeError(MalformedFeedbackError):
    """A rating's score outside 1..5."""


class BadSignatureError(FeedbackError):
    """A signature that is malformed, non-canonical (high s) or recovers no address."""


class UnknownReceiptError(FeedbackError):
    """No receipt of a published receipts log has this request hash."""


class NotPayerError(FeedbackError):
    """The signer is not the wallet that paid for the answer."""


class AnswerMismatchError(FeedbackError):
    """The answer text sent does not hash to the receipt's output hash."""


class CommentMismatchError(FeedbackError):
    """The comment text sent does not hash to the signed comment hash."""


class PromptMismatchError(FeedbackError):
    """An answer already stored with another prompt."""


class PreferenceMismatchError(FeedbackError):
    """The two answers of a preference cannot be compared (payers, models or text differ)."""


class DuplicateFeedbackError(FeedbackError):
    """Feedback that contradicts feedback already stored (see the module's dedupe rules)."""


# ---------------------------------------------------------------- typed data


def comment_hash(comment: str | None) -> bytes:
    """The ``commentHash`` of a comment: zero for none, else ``keccak(text=comment)``."""
    return keccak(text=comment) if comment else ZERO32


def _bytes32(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        shown = len(value) if isinstance(value, bytes) else type(value).__name__
        raise MalformedFeedbackError(f"{what} must be 32 bytes, got {shown}")
    return value


@dataclass(frozen=True)
class Rating:
    """A score of 1..5 for the answer of request ``request_hash``."""

    request_hash: bytes  # 32 bytes
    score: int  # 1..5
    comment_hash: bytes = ZERO32  # keccak(text=comment), zero for none

    def __post_init__(self) -> None:
        _bytes32(self.request_hash, "rating requestHash")
        _bytes32(self.comment_hash, "rating commentHash")
        score = self.score
        if not isinstance(score, int) or isinstance(score, bool):
            raise ScoreOutOfRangeError(f"score must be an integer, got {score!r}")
        if not MIN_SCORE <= score <= MAX_SCORE:
            raise ScoreOutOfRangeError(f"score must be in {MIN_SCORE}..{MAX_SCORE}, got {score}")

    def message(self) -> dict[str, Any]:
        return {
            "requestHash": self.request_hash,
            "score": self.score,
            "commentHash": self.comment_hash,
        }


@dataclass(frozen=True)
class Preference:
    """The answer of ``chosen_request_hash`` is better than that of ``rejected_request_hash``."""

    chosen_request_hash: bytes  # 32 bytes
    rejected_request_hash: bytes  # 32 bytes

    def __post_init__(self) -> None:
        _bytes32(self.chosen_request_hash, "preference chosenRequestHash")
        _bytes32(self.rejected_request_hash, "preference rejectedRequestHash")
        if self.chosen_request_hash == self.rejected_request_hash:
            raise PreferenceMismatchError(
                "a preference compares two answers; both name request "
                f"0x{self.chosen_request_hash.hex()}"
            )

    def message(self) -> dict[str, Any]:
        return {
            "chosenRequestHash": self.chosen_request_hash,
            "rejectedRequestHash": self.rejected_request_hash,
        }


@dataclass(frozen=True)
class SignedRating:
    rating: Rating
    signature: Signature

    def to_json(self) -> dict[str, Any]:
        r = self.rating
        return {
            "requestHash": "0x" + r.request_hash.hex(),
            "score": r.score,
            "commentHash": "0x" + r.comment_hash.hex(),
            "signature": "0x" + self.signature.to_bytes().hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedRating:
        """Parses the JSON of :meth:`to_json`; :class:`FeedbackError` naming a bad field."""
        fields = _fields(data, "rating", ("requestHash", "score", "commentHash", "signature"))
        rating = Rating(
            _hex32(fields["requestHash"], "rating requestHash"),
            fields["score"],
            _hex32(fields["commentHash"], "rating commentHash"),
        )
        return cls(rating, _parse_signature(fields["signature"]))


@dataclass(frozen=True)
class SignedPreference:
    preference: Preference
    signature: Signature

    def to_json(self) -> dict[str, Any]:
        p = self.preference
        return {
            "chosenRequestHash": "0x" + p.chosen_request_hash.hex(),
            "rejectedRequestHash": "0x" + p.rejected_request_hash.hex(),
            "signature": "0x" + self.signature.to_bytes().hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedPreference:
        """Parses the JSON of :meth:`to_json`; :class:`FeedbackError` naming a bad field."""
        names = ("chosenRequestHash", "rejectedRequestHash", "signature")
        fields = _fields(data, "preference", names)
        preference = Preference(
            _hex32(fields["chosenRequestHash"], "preference chosenRequestHash"),
            _hex32(fields["rejectedRequestHash"], "preference rejectedRequestHash"),
        )
        return cls(preference, _parse_signature(fields["signature"]))


def _fields(data: object, what: str, names: Sequence[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedFeedbackError(f"a {what} must be a JSON object")
    missing = [n for n in names if n not in data]
    if missing:
        raise MalformedFeedbackError(f"{what} lacks field(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise MalformedFeedbackError(f"{what} has unknown field(s) {', '.join(unknown)}")
    return data


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MalformedFeedbackError(f"{what} must be 0x-prefixed hex, got {value!r}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise MalformedFeedbackError(f"{what} is not hex: {value!r}") from None
    return _bytes32(raw, what)


def _parse_signature(value: object) -> Signature:
    try:
        return parse_signature(value)
    except InvalidSignatureError as exc:
        raise BadSignatureError(str(exc)) from None


def _recover(signable: SignableMessage, signature: Signature) -> str:
    """The signer, refusing what a contract's ``ECDSA.recover`` refuses (EIP-2: low s only),
    so one answer cannot be rated twice under two encodings of one signature."""
    try:
        return recover_signer(signable, signature)
    except InvalidSignatureError as exc:
        raise BadSignatureError(str(exc)) from None


def rating_digest(domain: Domain, rating: Rating) -> bytes:
    """The 32-byte EIP-712 digest a rater signs."""
    return typed_digest(typed_message(domain, "Rating", RATING_TYPE, rating.message()))


def sign_rating(private_key: bytes | str, domain: Domain, rating: Rating) -> SignedRating:
    """Signs ``rating`` with the payer's key (as a wallet's ``eth_signTypedData_v4`` would)."""
    signable = typed_message(domain, "Rating", RATING_TYPE, rating.message())
    return SignedRating(rating, sign_typed(private_key, signable))


def recover_rating_signer(domain: Domain, signed: SignedRating) -> str:
    """The checksummed address that signed ``signed``; :class:`BadSignatureError` if none."""
    signable = typed_message(domain, "Rating", RATING_TYPE, signed.rating.message())
    return _recover(signable, signed.signature)


def sign_preference(
    private_key: bytes | str, domain: Domain, preference: Preference
) -> SignedPreference:
    """Signs ``preference`` with the payer's key."""
    signable = typed_message(domain, "Preference", PREFERENCE_TYPE, preference.message())
    return SignedPreference(preference, sign_typed(private_key, signable))


def recover_preference_signer(domain: Domain, signed: SignedPreference) -> str:
    """The checksummed address that signed ``signed``; :class:`BadSignatureError` if none."""
    signable = typed_message(domain, "Preference", PREFERENCE_TYPE, signed.preference.message())
    return _recover(signable, signed.signature)


# ---------------------------------------------------------------- receipts


class ReceiptLookup(Protocol):
    def get(self, request_hash: bytes) -> Receipt | None: ...


class ReceiptIndex:
    """Receipts by request hash, from the receipts logs of published usage proofs."""

    def __init__(self, receipts: Iterable[Receipt] = ()) -> None:
        self._by_hash: dict[bytes, Receipt] = {}
        for receipt in receipts:
            self.add(receipt)

    @classmethod
    def from_logs(cls, store: ContentStore, cids: Iterable[str]) -> ReceiptIndex:
        """The index of the logs ``cids`` (usage proofs' ``receiptsCID``), each verified."""
        index = cls()
        for cid in cids:
            index.add_log(store, cid)
        return index

    def add_log(self, store: ContentStore, cid: str) -> int:
        """Adds the receipts a usage proof's ``cid`` names (a usage bundle or a plain receipts
        log, read verified from ``store``); returns how many."""
        receipts = read_usage_log(store.get, cid).receipts
        for receipt in receipts:
            self.add(receipt, source=f"receipts log {cid}")
        return len(receipts)

    def add(self, receipt: Receipt, source: str = "receipt") -> None:
        """Adds ``receipt``; the same receipt twice is one, two different ones are an error."""
        for name in ("model_id", "adapter_version", "created_at"):  # stored in SQLite
            if getattr(receipt, name) > MAX_SQLITE_INT:
                raise ReceiptLogError(f"{source}: receipt {name} out of range")
        known = self._by_hash.get(receipt.request_hash)
        if known is not None and known != receipt:
            raise ReceiptLogError(
                f"{source}: request 0x{receipt.request_hash.hex()} has two different receipts"
            )
        self._by_hash[receipt.request_hash] = receipt

    def get(self, request_hash: bytes) -> Receipt | None:
        return self._by_hash.get(request_hash)

    def __len__(self) -> int:
        return len(self._by_hash)


# ---------------------------------------------------------------- the store


@dataclass(frozen=True)
class PreferencePair:
    """One exported line and where it came from."""

    prompt: str
    chosen: str
    rejected: str
    chosen_request: bytes  # 32 bytes
    rejected_request: bytes  # 32 bytes
    source: str  # "preference" (signed as such) or "ratings" (derived from two ratings)
    givers: tuple[str, ...]  # checksummed addresses, sorted

    def line(self) -> dict[str, str]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    request_hash BLOB PRIMARY KEY,      -- 32 bytes
    payer TEXT NOT NULL,
    model_id INTEGER NOT NULL,
    adapter_version INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL                -- keccak(text=answer) == the receipt's output hash
);
CREATE TABLE IF NOT EXISTS ratings (
    request_hash BLOB PRIMARY KEY REFERENCES answers (request_hash),
    signer TEXT NOT NULL,
    model_id INTEGER NOT NULL,
    score INTEGER NOT NULL,
    comment_hash BLOB NOT NULL,
    comment TEXT,                       -- NULL when not sent (the hash is still signed)
    signature BLOB NOT NULL             -- 65 bytes r || s || v
);
CREATE TABLE IF NOT EXISTS preferences (
    low_hash BLOB NOT NULL,             -- the two request hashes, sorted: one row per pair
    high_hash BLOB NOT NULL,
    chosen_hash BLOB NOT NULL REFERENCES answers (request_hash),
    rejected_hash BLOB NOT NULL REFERENCES answers (request_hash),
    signer TEXT NOT NULL,
    model_id INTEGER NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (low_hash, high_hash)
);
CREATE INDEX IF NOT EXISTS ratings_by_model ON ratings (model_id);
CREATE INDEX IF NOT EXISTS preferences_by_model ON preferences (model_id);
"""


class FeedbackStore(DurableSQLite):
    """Checked, deduplicated feedback in one SQLite file. Safe to share between threads.

    ``domain`` (``backend.protocol.eip712.feedback_domain``) is recorded at creation: a file
    holds signatures of one domain only. ``receipts`` answers which receipts exist (a
    :class:`ReceiptIndex`).
    """

    def __init__(self, path: str | Path, domain: Domain, receipts: ReceiptLookup) -> None:
        super().__init__(path, SCHEMA)
        self.domain = domain
        self.receipts = receipts
        wanted = json.dumps(domain.as_dict(), sort_keys=True)
        stored = self._owner("domain", wanted)
        if stored != wanted:
            self.close()
            raise FeedbackError(f"feedback store {self.path} holds domain {stored}, not {wanted}")

    # ------------------------------------------------------------ adding

    def add_rating(
        self, signed: SignedRating, prompt: str, answer: str, comment: str | None = None
    ) -> bool:
        """Stores a rating by the payer of the rated answer; True if new, False for a retry.

        Raises a :class:`FeedbackError` subclass naming the failed check; nothing is stored then.
        """
        rating = signed.rating
        signer = recover_rating_signer(self.domain, signed)
        receipt = self._paid_answer(rating.request_hash, signer, answer, "rated")
        _text(prompt, "prompt")
        if comment is not None and comment_hash(comment) != rating.comment_hash:
            raise CommentMismatchError(
                f"the comment hashes to 0x{comment_hash(comment).hex()}, but the signed "
                f"commentHash is 0x{rating.comment_hash.hex()}"
            )
        with self._tx() as db:
            self._store_answer(db, receipt, prompt, answer)
            known = db.execute(
                "SELECT score, comment_hash FROM ratings WHERE request_hash = ?",
                (rating.request_hash,),
            ).fetchone()
            if known is not None:
                if (known["score"], bytes(known["comment_hash"])) != (
                    rating.score,
                    rating.comment_hash,
                ):
                    raise DuplicateFeedbackError(
                        f"request 0x{rating.request_hash.hex()} is already rated "
                        f"{known['score']} by {signer}; a rating cannot be changed"
                    )
                if comment is not None:
                    db.execute(
                        "UPDATE ratings SET comment = ? WHERE request_hash = ?",
                        (comment, rating.request_hash),
                    )
                return False
            db.execute(
                "INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rating.request_hash, signer, receipt.model_id, rating.score,
                 rating.comment_hash, comment, signed.signature.to_bytes()),
            )  # fmt: skip
        return True

    def add_preference(
        self, signed: SignedPreference, prompt: str, chosen_answer: str, rejected_answer: str
    ) -> bool:
        """Stores a preference between two answers to ``prompt`` that its signer paid for.

        True if new, False for a retry. Raises a :class:`FeedbackError` subclass naming the
        failed check; nothing is stored then.
        """
        pref = signed.preference
        signer = recover_preference_signer(self.domain, signed)
        chosen = self._receipt(pref.chosen_request_hash, "chosen")
        rejected = self._receipt(pref.rejected_request_hash, "rejected")
        if chosen.payer != rejected.payer:
            raise PreferenceMismatchError(
                f"the chosen answer was paid by {chosen.payer}, the rejected one by "
                f"{rejected.payer}: a preference compares answers of one payer"
            )
        if chosen.model_id != rejected.model_id:
            raise PreferenceMismatchError(
                f"the chosen answer is from model {chosen.model_id}, the rejected one from "
                f"model {rejected.model_id}: a preference compares answers of one model"
            )
        self._paid_answer(pref.chosen_request_hash, signer, chosen_answer, "chosen")
        self._paid_answer(pref.rejected_request_hash, signer, rejected_answer, "rejected")
        _text(prompt, "prompt")
        if chosen_answer == rejected_answer:
            raise PreferenceMismatchError("the chosen and rejected answers are the same text")
        low, high = sorted((pref.chosen_request_hash, pref.rejected_request_hash))
        with self._tx() as db:
            self._store_answer(db, chosen, prompt, chosen_answer)
            self._store_answer(db, rejected, prompt, rejected_answer)
            known = db.execute(
                "SELECT chosen_hash FROM preferences WHERE low_hash = ? AND high_hash = ?",
                (low, high),
            ).fetchone()
            if known is not None:
                if bytes(known["chosen_hash"]) != pref.chosen_request_hash:
                    raise DuplicateFeedbackError(
                        f"{signer} already preferred request 0x{bytes(known[0]).hex()} over "
                        f"this one; a preference cannot be reversed"
                    )
                return False
            db.execute(
                "INSERT INTO preferences VALUES (?, ?, ?, ?, ?, ?, ?)",
                (low, high, pref.chosen_request_hash, pref.rejected_request_hash, signer,
                 chosen.model_id, signed.signature.to_bytes()),
            )  # fmt: skip
        return True

    def _receipt(self, request_hash: bytes, role: str) -> Receipt:
        receipt = self.receipts.get(request_hash)
        if receipt is None:
            raise UnknownReceiptError(
                f"no published receipt for the {role} request 0x{request_hash.hex()}"
            )
        return receipt

    def _paid_answer(self, request_hash: bytes, signer: str, answer: str, role: str) -> Receipt:
        receipt = self._receipt(request_hash, role)
        if signer != receipt.payer:
            raise NotPayerError(
                f"signed by {signer}, but the {role} answer (request 0x{request_hash.hex()}) "
                f"was paid by {receipt.payer}: only its payer may give feedback on it"
            )
        _text(answer, f"{role} answer")
        if keccak(text=answer) != receipt.output_hash:
            raise AnswerMismatchError(
                f"the {role} answer text hashes to 0x{keccak(text=answer).hex()}, but receipt "
                f"0x{request_hash.hex()} says 0x{receipt.output_hash.hex()}: not that answer"
            )
        return receipt

    @staticmethod
    def _store_answer(db: sqlite3.Connection, receipt: Receipt, prompt: str, answer: str) -> None:
        known = db.execute(
            "SELECT prompt FROM answers WHERE request_hash = ?", (receipt.request_hash,)
        ).fetchone()
        if known is None:
            db.execute(
                "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                (receipt.request_hash, receipt.payer, receipt.model_id,
                 receipt.adapter_version, prompt, answer),
            )  # fmt: skip
        elif known["prompt"] != prompt:
            raise PromptMismatchError(
                f"request 0x{receipt.request_hash.hex()} was stored with another prompt "
                f"({known['prompt'][:60]!r}); one request has one prompt"
            )

    # ------------------------------------------------------------ reading

    def counts(self, model_id: int) -> dict[str, int]:
        """How many ratings and preferences are stored for ``model_id``."""
        ratings = self._read("SELECT COUNT(*) FROM ratings WHERE model_id = ?", (model_id,))
        prefs = self._read("SELECT COUNT(*) FROM preferences WHERE model_id = ?", (model_id,))
        return {"ratings": ratings[0][0], "preferences": prefs[0][0]}

    def preference_pairs(self, model_id: int, giver: str | None = None) -> list[PreferencePair]:
        """The pairs exported for ``model_id`` (only ``giver``'s when given), in export order."""
        explicit = self._read(
            "SELECT p.chosen_hash, p.rejected_hash, p.signer, c.prompt, c.answer AS chosen, "
            "r.answer AS rejected FROM preferences p "
            "JOIN answers c ON c.request_hash = p.chosen_hash "
            "JOIN answers r ON r.request_hash = p.rejected_hash WHERE p.model_id = ?",
            (model_id,),
        )
        pairs = [
            PreferencePair(row["prompt"], row["chosen"], row["rejected"],
                           bytes(row["chosen_hash"]), bytes(row["rejected_hash"]),
                           "preference", (row["signer"],))
            for row in explicit
        ]  # fmt: skip
        compared = {frozenset((p.chosen_request, p.rejected_request)) for p in pairs}
        pairs.extend(p for p in self._rating_pairs(model_id) if
                     frozenset((p.chosen_request, p.rejected_request)) not in compared)  # fmt: skip
        pairs.sort(key=lambda p: (p.chosen_request, p.rejected_request))
        merged: dict[tuple[str, str, str], PreferencePair] = {}
        for pair in pairs:
            key = (pair.prompt, pair.chosen, pair.rejected)
            first = merged.get(key)
            if first is None:
                merged[key] = pair
            else:
                givers = tuple(sorted(set(first.givers) | set(pair.givers)))
                merged[key] = PreferencePair(*key, first.chosen_request, first.rejected_request,
                                             first.source, givers)  # fmt: skip
        result = list(merged.values())  # dicts keep insertion order: still sorted
        if giver is not None:
            giver = to_checksum_address(giver)
            result = [p for p in result if giver in p.givers]
        return result

    def _rating_pairs(self, model_id: int) -> list[PreferencePair]:
        rows = self._read(
            "SELECT r.request_hash, r.signer, r.score, a.prompt, a.answer FROM ratings r "
            "JOIN answers a ON a.request_hash = r.request_hash WHERE r.model_id = ? "
            "ORDER BY r.request_hash",
            (model_id,),
        )
        groups: dict[tuple[str, str], list[sqlite3.Row]] = defaultdict(list)
        for row in rows:
            groups[(row["signer"], row["prompt"])].append(row)
        pairs = []
        for (signer, prompt), rated in groups.items():
            for a, b in combinations(rated, 2):
                if a["score"] == b["score"] or a["answer"] == b["answer"]:
                    continue
                hi, lo = (a, b) if a["score"] > b["score"] else (b, a)
                pairs.append(
                    PreferencePair(prompt, hi["answer"], lo["answer"], bytes(hi["request_hash"]),
                                   bytes(lo["request_hash"]), "ratings", (signer,))
                )  # fmt: skip
        return pairs

    def export_preferences(
        self,
        model_id: int,
        giver: str | None = None,
        metadata: DatanetMetadata = EXPORT_METADATA,
    ) -> bytes:
        """The pairs of ``model_id`` as PREFERENCE JSONL (``{"prompt","chosen","rejected"}``
        per line), checked by ``validate_contribution`` against ``metadata`` (the target
        Datanet's, for its size limit). Same feedback, same bytes.

        Raises :class:`FeedbackError` when there is nothing to export or the result is invalid.
        """
        if metadata.format is not DataFormat.PREFERENCE:
            raise FeedbackError(
                f"feedback exports preference data, not {metadata.format.value} data"
            )
        pairs = self.preference_pairs(model_id, giver)
        if not pairs:
            who = f" from {giver}" if giver else ""
            raise FeedbackError(f"no preference pairs for model {model_id}{who} to export")
        lines = (json.dumps(p.line(), ensure_ascii=False, separators=(",", ":")) for p in pairs)
        data = "".join(line + "\n" for line in lines).encode()
        try:
            validate_contribution(metadata, data)
        except ContributionFormatError as exc:
            raise FeedbackError(f"the export of model {model_id} is not valid: {exc}") from exc
        return data

    def contributors(self, model_id: int) -> dict[str, int]:
        """Who gave the exported feedback of ``model_id``: address -> exported lines,
        sorted by address. These become the contributors of the preference data."""
        counts: dict[str, int] = defaultdict(int)
        for pair in self.preference_pairs(model_id):
            for giver in pair.givers:
                counts[giver] += 1
        return dict(sorted(counts.items()))


def _text(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise MalformedFeedbackError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise MalformedFeedbackError(f"{what} is empty")
