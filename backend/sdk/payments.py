"""Node and payment actions: stake, unbond; channels (deposit, withdrawal requests), session
keys, vouchers and their redemption."""

from __future__ import annotations

from typing import Any

from eth_utils import to_checksum_address

from backend.protocol.amounts import format_open
from backend.protocol.eip712 import VOUCHER_TYPE, SignedVoucher, Voucher, recover_voucher_signer
from backend.sdk.connection import Connection, ProtocolError
from backend.sdk.signers import typed_data


class PaymentActions(Connection):
    def stake(self, amount: int, endpoint: str | None = None) -> Any:
        """Bonds ``amount`` (approved first) and, when given, declares the endpoint
        (``Staked``)."""
        self.ensure_allowance(self.nodes, amount)
        receipt = self.send(f"staked {format_open(amount)}", self.nodes.functions.stake(amount))
        staked = self.event(receipt, self.nodes, "Staked")
        if endpoint is not None:
            self.send(f"set endpoint {endpoint}", self.nodes.functions.setEndpoint(endpoint))
        return staked

    def unbond(self, amount: int) -> Any:
        """Moves ``amount`` of bonded stake to unbonding (``UnbondingRequested``)."""
        receipt = self.send(
            f"unbonding {format_open(amount)}", self.nodes.functions.requestUnbonding(amount)
        )
        return self.event(receipt, self.nodes, "UnbondingRequested")

    def deposit(self, node: str, amount: int) -> Any:
        """Deposits into the sender's channel with ``node`` (``Deposited``)."""
        self.ensure_allowance(self.payments, amount)
        receipt = self.send(
            f"deposited {format_open(amount)} for node {node}",
            self.payments.functions.deposit(node, amount),
        )
        return self.event(receipt, self.payments, "Deposited")

    def request_withdrawal(self, node: str, amount: int) -> Any:
        receipt = self.send(
            f"requested a withdrawal of {format_open(amount)}",
            self.payments.functions.requestWithdrawal(node, amount),
        )
        return self.event(receipt, self.payments, "WithdrawalRequested")

    def authorize_session_key(self, node: str, signer: str, expiry: int, allowance: int) -> None:
        self.send(
            f"authorized session key {signer} for node {node} until {expiry}, "
            f"allowance {format_open(allowance)}",
            self.payments.functions.authorizeSessionKey(node, signer, expiry, allowance),
        )

    def revoke_session_key(self, node: str, signer: str) -> Any:
        receipt = self.send(
            f"revoked session key {signer}", self.payments.functions.revokeSessionKey(node, signer)
        )
        return self.event(receipt, self.payments, "SessionKeyRevoked")

    def sign_voucher(
        self, node: str, model_id: int, cumulative_amount: int, deadline: int, payer: str | None
    ) -> SignedVoucher:
        """A voucher promising ``node`` ``cumulative_amount`` in total, signed by the sender for
        ``payer`` (the sender itself, or a payer whose live session key the sender is).

        No transaction: nothing simulates a signature, so what the node would skip at
        redemption is refused here, before anyone relies on the voucher.
        """
        payer = to_checksum_address(payer or self.address)
        self.read(f"model {model_id}", self.models.functions.model(model_id))
        if payer != self.address:
            key = self.payments.functions.sessionKey(payer, node, self.address).call()
            if int(key.validUntil) <= self.now():
                raise ProtocolError(
                    f"{self.address} is not a live session key of {payer} for {node}"
                )
        redeemed = int(self.payments.functions.redeemed(payer, node, model_id).call())
        if cumulative_amount <= redeemed:
            raise ProtocolError(
                f"the channel ({payer}, {node}, model {model_id}) already redeemed "
                f"{format_open(redeemed)}; a voucher must promise more in total"
            )
        voucher = Voucher(payer, to_checksum_address(node), model_id, cumulative_amount, deadline)
        document = typed_data(self.domain, "Voucher", VOUCHER_TYPE, voucher.message())
        signed = SignedVoucher(voucher, self.signer.sign_typed_data(document))
        if recover_voucher_signer(self.domain, signed) != self.address:
            raise ProtocolError(
                "the signature does not recover to the sender; it signed other data"
            )
        return signed

    def redeem(
        self, vouchers: list[SignedVoucher], receipts_root: bytes, receipt_count: int, cid: str
    ) -> Any:
        """Redeems ``vouchers`` as the node; returns (redeemed, skipped, UsageProofRecorded)."""
        receipt = self.send(
            f"redeemed {len(vouchers)} voucher(s)",
            self.payments.functions.redeem(
                [s.redemption_tuple() for s in vouchers], (receipts_root, receipt_count, cid)
            ),
        )
        return (
            self.events(receipt, self.payments, "VoucherRedeemed"),
            self.events(receipt, self.payments, "VoucherSkipped"),
            self.event(receipt, self.payments, "UsageProofRecorded"),
        )
