"""Who sends the node's ``redeem`` transaction. The redeemer only needs :class:`RedeemSender`;
:class:`Web3Sender` signs with a local key, or uses an unlocked account of the RPC node (anvil).
An ape account fits the same protocol by wrapping ``contract.redeem(..., sender=account)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from eth_account import Account
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from backend.sdk.signers import KeySigner, NodeSigner, call_transaction

RedeemArgs = tuple[list[tuple[Any, ...]], tuple[bytes, int, str]]  # (vouchers, usage proof)


class RedeemSender(Protocol):
    """Sends ``IInferencePayments.redeem`` from the node's account."""

    address: str

    def send(self, vouchers: list[tuple[Any, ...]], proof: tuple[bytes, int, str]) -> str:
        """Broadcasts the transaction; returns its hash (``0x``-hex) without waiting."""
        ...

    def wait(self, tx_hash: str) -> dict[str, Any]:
        """Waits for and returns the transaction's receipt."""
        ...

    def estimate(self, vouchers: list[tuple[Any, ...]]) -> int:
        """The gas ``redeem(vouchers, <a usage proof>)`` would take; ContractLogicError when
        the contract refuses it."""
        ...

    def send_call(self, call: Any, gas: int | None = None) -> str:
        """Broadcasts any bound contract call (with ``gas`` when already estimated); returns
        its hash without waiting."""
        ...


@dataclass
class Web3Sender:
    """Sends through web3: signed with ``private_key``, else from the unlocked ``address``."""

    w3: Web3
    payments: Contract
    address: str
    private_key: bytes | None = None
    timeout: float = 120.0  # seconds to wait for a receipt

    def __post_init__(self) -> None:
        self.address = to_checksum_address(self.address)
        if self.private_key is not None:
            derived = Account.from_key(self.private_key).address
            if derived != self.address:
                raise ValueError(f"the private key is {derived}'s, not {self.address}'s")

    def send(self, vouchers: list[tuple[Any, ...]], proof: tuple[bytes, int, str]) -> str:
        return self.send_call(self.payments.functions.redeem(vouchers, proof))

    def estimate(self, vouchers: list[tuple[Any, ...]]) -> int:
        proof = (b"\x00" * 32, 0, "b" * 59)  # a CIDv1's length: the log CID is not known yet
        call = self.payments.functions.redeem(vouchers, proof)
        return int(call.estimate_gas({"from": self.address}))

    def send_call(self, call: Any, gas: int | None = None) -> str:
        """Broadcasts any bound contract call from the node's account (``gas``: the caller's
        simulation already estimated it); returns the tx hash."""
        signer = (
            NodeSigner(self.w3, self.address)
            if self.private_key is None
            else KeySigner(self.private_key)
        )
        tx = call_transaction(call)
        if gas is not None:
            tx["gas"] = gas
        return "0x" + signer.send_transaction(self.w3, tx).hex()

    def wait(self, tx_hash: str) -> dict[str, Any]:
        return dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout))
