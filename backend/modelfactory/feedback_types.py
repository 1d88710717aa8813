"""Users' feedback as signed messages: ratings and preferences over paid answers, EIP-712
typed data signed by the wallet that paid (``sign_*`` / ``recover_*``), read from JSON with
every malformed field named, and the errors feedback is refused with. Stored by
:mod:`backend.modelfactory.feedback_store`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.messages import SignableMessage
from eth_utils import keccak

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
from backend.protocol.json_fields import exact_keys

MIN_SCORE, MAX_SCORE = 1, 5
ZERO32 = bytes(32)


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
    return exact_keys(data, names, what, MalformedFeedbackError)


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
