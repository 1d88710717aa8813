"""The on-chain state the payments read, through web3: prices, channels, session keys, what
each (payer, model) pair of a channel redeemed, and scheduled split changes. The contract is the
truth; the ledger only caches it."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from backend.protocol.eip712 import Domain
from inference_node.payments.quote import Pricing

WITHDRAWAL_WINDOW = 86_400  # seconds an unlocked withdrawal stays usable (the contract's)


@dataclass(frozen=True)
class ChannelAccount:
    """``IInferencePayments.Channel`` (payer, this node)."""

    balance: int  # OPEN wei, redeemable by this node only
    pending_withdrawal: int  # OPEN wei
    withdrawal_unlock_at: int  # unix seconds
    withdraw_delay: int  # seconds, fixed when the channel opened (0: never opened)

    def withdrawal_pending(self, now: int) -> bool:
        """Whether a withdrawal request can still be used (it lapses a window after unlock)."""
        return self.pending_withdrawal != 0 and now <= self.withdrawal_unlock_at + WITHDRAWAL_WINDOW

    def guaranteed(self, now: int) -> int:
        """What the node can count on: the balance less a withdrawal request still usable,
        however far its unlock (the node cannot know it will redeem first)."""
        if self.withdrawal_pending(now):
            return max(0, self.balance - self.pending_withdrawal)
        return self.balance


@dataclass(frozen=True)
class SessionKeyState:
    """``IInferencePayments.SessionKey`` of a channel."""

    valid_until: int  # unix seconds (0: never authorized)
    allowance: int  # OPEN wei
    spent: int  # OPEN wei

    @property
    def left(self) -> int:
        return self.allowance - self.spent


@dataclass(frozen=True)
class PaymentsChain:
    """Reads of InferencePayments and ModelRegistry for one node."""

    w3: Web3
    payments: Contract  # InferencePayments
    models: Contract  # ModelRegistry
    node: str  # this node's address

    @property
    def domain(self) -> Domain:
        return Domain(self.w3.eth.chain_id, self.payments.address)

    def token(self) -> str:
        """The OPEN token (x402's ``asset``)."""
        return to_checksum_address(self.payments.functions.token().call())

    def now(self) -> int:
        """The latest block's timestamp (the clock redemptions are judged by)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def pricing(self, model_id: int) -> Pricing:
        per_request, per_token = self.models.functions.model(model_id).call().pricing
        return Pricing(int(per_request), int(per_token))

    def channel(self, payer: str) -> ChannelAccount:
        """The channel (``payer``, this node)."""
        balance, pending, unlock_at, delay = self.payments.functions.channel(
            to_checksum_address(payer), self.node
        ).call()
        return ChannelAccount(int(balance), int(pending), int(unlock_at), int(delay))

    def session_key(self, payer: str, signer: str) -> SessionKeyState:
        valid_until, allowance, spent = self.payments.functions.sessionKey(
            to_checksum_address(payer), self.node, to_checksum_address(signer)
        ).call()
        return SessionKeyState(int(valid_until), int(allowance), int(spent))

    def nonce(self, payer: str) -> int:
        """``payer``'s next nonce for ``authorizeSessionKeyWithSig``."""
        return int(self.payments.functions.nonces(to_checksum_address(payer)).call())

    def redeemed(self, payer: str, model_id: int) -> int:
        """What pair (payer, model) of the channel with this node redeemed, in OPEN wei."""
        call = self.payments.functions.redeemed(to_checksum_address(payer), self.node, model_id)
        return int(call.call())

    def split_change_at(self, model_id: int) -> int | None:
        """When a scheduled split change that lowers this node's share takes effect (None: no
        such change pending)."""
        (pending, effective_at) = self.models.functions.pendingSplit(model_id).call()
        if effective_at == 0 or effective_at <= self.now():
            return None
        current = self.models.functions.paymentTerms(model_id).call()[1]
        return int(effective_at) if int(pending[2]) < int(current[2]) else None
