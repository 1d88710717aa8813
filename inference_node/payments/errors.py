"""Why a voucher is refused. Each error names the bad value and what was expected; the server
maps :class:`PaymentRequiredError` subclasses to HTTP 402 (with a fresh quote) and
:class:`InvalidVoucherError` subclasses to HTTP 400."""

from __future__ import annotations


class PaymentError(Exception):
    """A voucher was refused; ``reason`` is a short machine-readable code."""

    reason = "payment_error"
    http_status = 402


class InvalidVoucherError(PaymentError):
    """The voucher is malformed or not for this channel: resending it can never succeed."""

    reason = "invalid_voucher"
    http_status = 400


class PaymentRequiredError(PaymentError):
    """The voucher is well formed but does not pay enough (yet): sign a new one."""

    reason = "payment_required"
    http_status = 402


class WrongSignerError(InvalidVoucherError):
    reason = "wrong_signer"

    def __init__(self, payer: str, signer: str) -> None:
        super().__init__(f"voucher signed by {signer}, neither payer {payer} nor its session key")
        self.payer, self.signer = payer, signer


class SessionKeyExpiredError(PaymentRequiredError):
    reason = "session_key_expired"

    def __init__(self, signer: str, expiry: int, needed: int) -> None:
        super().__init__(f"session key {signer} is valid until {expiry}, needed beyond {needed}")
        self.signer, self.expiry, self.needed = signer, expiry, needed


class ChannelMismatchError(InvalidVoucherError):
    reason = "channel_mismatch"

    def __init__(self, field: str, given: object, expected: object) -> None:
        super().__init__(f"voucher {field} is {given}, expected {expected}")
        self.field, self.given, self.expected = field, given, expected


class DeadlineTooSoonError(PaymentRequiredError):
    reason = "deadline_too_soon"

    def __init__(self, deadline: int, needed: int) -> None:
        super().__init__(f"voucher deadline {deadline} is before {needed}")
        self.deadline, self.needed = deadline, needed


class UnderpaidError(PaymentRequiredError):
    reason = "underpaid"

    def __init__(self, cumulative: int, required: int) -> None:
        super().__init__(f"voucher cumulative amount {cumulative} wei, at least {required} needed")
        self.cumulative, self.required = cumulative, required


class InsufficientDepositError(PaymentRequiredError):
    reason = "insufficient_deposit"

    def __init__(self, payer: str, available: int, outstanding: int) -> None:
        super().__init__(
            f"payer {payer} has {available} wei redeemable, {outstanding} wei would be owed"
        )
        self.payer, self.available, self.outstanding = payer, available, outstanding


class DeadlineTooFarError(PaymentRequiredError):
    reason = "deadline_too_far"

    def __init__(self, deadline: int, latest: int) -> None:
        super().__init__(f"voucher deadline {deadline} is after {latest}, the latest accepted")
        self.deadline, self.latest = deadline, latest


class AllowanceExceededError(PaymentRequiredError):
    reason = "allowance_exceeded"

    def __init__(self, signer: str, left: int, needed: int) -> None:
        super().__init__(
            f"session key {signer} has {left} wei of its allowance left, {needed} wei would be "
            "drawn by its vouchers: raise its allowance or sign with another key"
        )
        self.signer, self.left, self.needed = signer, left, needed


class AuthorizationMismatchError(InvalidVoucherError):
    """A relayed session-key authorization that is not for this voucher's channel and key."""

    reason = "authorization_mismatch"

    def __init__(self, field: str, given: object, expected: object) -> None:
        super().__init__(f"sessionKeyAuthorization {field} is {given}, expected {expected}")
        self.field, self.given, self.expected = field, given, expected


class AuthorizationSignatureError(InvalidVoucherError):
    reason = "authorization_wrong_signer"

    def __init__(self, payer: str, recovered: str, domain: object) -> None:
        super().__init__(
            f"sessionKeyAuthorization is signed by {recovered}, not payer {payer} "
            f"(EIP-712 domain {domain})"
        )
        self.payer, self.recovered = payer, recovered


class AuthorizationExpiredError(PaymentRequiredError):
    reason = "authorization_expired"

    def __init__(self, deadline: int, needed: int) -> None:
        super().__init__(
            f"sessionKeyAuthorization deadline {deadline} is before {needed}: sign a new one"
        )
        self.deadline, self.needed = deadline, needed


class AuthorizationNonceError(PaymentRequiredError):
    reason = "authorization_stale_nonce"

    def __init__(self, payer: str, nonce: int, current: int) -> None:
        super().__init__(
            f"sessionKeyAuthorization nonce is {nonce}, payer {payer}'s current nonce is "
            f"{current}: sign a new one"
        )
        self.payer, self.nonce, self.current = payer, nonce, current


class AuthorizationExpiryError(PaymentRequiredError):
    reason = "authorization_expiry_too_soon"

    def __init__(self, signer: str, expiry: int, needed: int) -> None:
        super().__init__(
            f"sessionKeyAuthorization lets {signer} sign until {expiry}, needed beyond {needed}"
        )
        self.signer, self.expiry, self.needed = signer, expiry, needed


class AuthorizationRevertedError(InvalidVoucherError):
    reason = "authorization_reverted"

    def __init__(self, signer: str, revert: str) -> None:
        super().__init__(
            f"InferencePayments refuses the sessionKeyAuthorization of {signer}: {revert}"
        )
        self.signer, self.revert = signer, revert
