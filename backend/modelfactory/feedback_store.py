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
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from eth_utils import keccak, to_checksum_address

from backend.datanets.formats import (
    ContributionFormatError,
    DataFormat,
    DatanetMetadata,
    validate_contribution,
)
from backend.modelfactory.feedback_types import (
    AnswerMismatchError,
    CommentMismatchError,
    DuplicateFeedbackError,
    FeedbackError,
    MalformedFeedbackError,
    NotPayerError,
    PreferenceMismatchError,
    PromptMismatchError,
    SignedPreference,
    SignedRating,
    UnknownReceiptError,
    comment_hash,
    recover_preference_signer,
    recover_rating_signer,
)
from backend.modelfactory.receipt_index import ReceiptLookup
from backend.protocol.eip712 import (
    Domain,
)
from backend.protocol.receipts import Receipt
from backend.storage.sqlite import DurableSQLite

# validates exports; its limit is far above any feedback file (the target Datanet's own
# metadata, passed to export_preferences, applies its real limit)
EXPORT_METADATA = DatanetMetadata(
    name="feedback",
    description="preference pairs from signed user feedback",
    license="CC-BY-4.0",
    format=DataFormat.PREFERENCE,
    max_file_bytes=2**40,
)


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
