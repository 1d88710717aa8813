"""Payments of an inference node: quotes, voucher verification, the durable ledger of vouchers
and receipts, and the redeemer that turns them into on-chain redemptions with usage proofs.

The server's flow per request: ``price = pricing.price(prompt_tokens, max_tokens)``; without a
voucher answer 402 with ``verifier.quote(payer, model_id, price).to_json()``; else
``acceptance = verifier.verify(voucher, model_id, price)`` (a :class:`PaymentError` becomes
402/400), serve, ``verifier.settle(acceptance, receipt)`` (the receipt, with the actual price,
written durably) and only then release the answer; on failure ``verifier.release(acceptance)``.
A background task calls ``redeemer.maybe_redeem(now)`` periodically.
"""

from backend.protocol.receipts import (
    RECEIPT_TYPES,
    Receipt,
    parse_receipts_log,
    receipts_log,
    receipts_tree,
)
from inference_node.payments.chain import ChannelAccount, PaymentsChain, SessionKeyState
from inference_node.payments.errors import (
    AllowanceExceededError,
    ChannelMismatchError,
    DeadlineTooFarError,
    DeadlineTooSoonError,
    InsufficientDepositError,
    InvalidVoucherError,
    PaymentError,
    PaymentRequiredError,
    SessionKeyExpiredError,
    UnderpaidError,
    WrongSignerError,
)
from inference_node.payments.ledger import ChannelState, Ledger, LedgerError, Redemption
from inference_node.payments.quote import Pricing, expected_cumulative, make_quote
from inference_node.payments.redeemer import Redeemer, RedeemPolicy
from inference_node.payments.sender import RedeemSender, Web3Sender
from inference_node.payments.verify import Acceptance, VerifyPolicy, VoucherVerifier

__all__ = [
    "RECEIPT_TYPES",
    "Acceptance",
    "AllowanceExceededError",
    "ChannelAccount",
    "ChannelMismatchError",
    "ChannelState",
    "DeadlineTooFarError",
    "DeadlineTooSoonError",
    "InsufficientDepositError",
    "InvalidVoucherError",
    "Ledger",
    "LedgerError",
    "PaymentError",
    "PaymentRequiredError",
    "PaymentsChain",
    "Pricing",
    "Receipt",
    "RedeemPolicy",
    "RedeemSender",
    "Redeemer",
    "Redemption",
    "SessionKeyExpiredError",
    "SessionKeyState",
    "UnderpaidError",
    "VerifyPolicy",
    "VoucherVerifier",
    "Web3Sender",
    "WrongSignerError",
    "expected_cumulative",
    "make_quote",
    "parse_receipts_log",
    "receipts_log",
    "receipts_tree",
]
