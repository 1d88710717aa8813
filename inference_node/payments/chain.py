"""The on-chain state the payments read, through web3: prices, deposits, session keys and what
each channel redeemed. The contract is the truth; the ledger only caches it."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from backend.protocol.eip712 import Domain
from inference_node.payments.quote import Pricing


@dataclass(frozen=True)
class PayerAccount:
    """``IInferencePayments.Account`` of a payer."""

    balance: int  # OPEN wei, redeemable by nodes
    pending_withdrawal: int  # OPEN wei
    withdrawal_unlock_at: int  # unix seconds

    def available(self, until: int) -> int:
        """What stays redeemable until ``until``: balance less a withdrawal unlocking by then."""
        if self.pending_withdrawal and self.withdrawal_unlock_at <= until:
            return max(0, self.balance - self.pending_withdrawal)
        return self.balance


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

    def now(self) -> int:
        """The latest block's timestamp (the clock redemptions are judged by)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def pricing(self, model_id: int) -> Pricing:
        per_request, per_token = self.models.functions.model(model_id).call()[5]
        return Pricing(int(per_request), int(per_token))

    def account(self, payer: str) -> PayerAccount:
        balance, pending, unlock_at = self.payments.functions.accountOf(
            to_checksum_address(payer)
        ).call()
        return PayerAccount(int(balance), int(pending), int(unlock_at))

    def session_key_expiry(self, payer: str, signer: str) -> int:
        call = self.payments.functions.sessionKeyExpiry(
            to_checksum_address(payer), to_checksum_address(signer)
        )
        return int(call.call())

    def redeemed(self, payer: str, model_id: int) -> int:
        """What channel (payer, this node, model) redeemed on-chain, in OPEN wei."""
        call = self.payments.functions.redeemed(
            to_checksum_address(payer), to_checksum_address(self.node), model_id
        )
        return int(call.call())
