"""The SDK's core: one deployment, one account, and transactions that are simulated before they
are signed, so a call the contract would refuse costs nothing and reads as its custom error.

Everything the protocol checks stays in the contracts: the SDK does not restate a revert
condition, it simulates the call from the sender against the pending block and names the
contract's error (``would revert: NotCurator(datanetId=1, caller=0x...)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Self

from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from backend.protocol.amounts import format_open
from backend.protocol.deployments import DeploymentStore
from backend.protocol.eip712 import Domain
from backend.protocol.web3_protocol import RECEIPT_TIMEOUT, Web3Protocol
from backend.sdk.reverts import describe_revert
from backend.sdk.signers import Signer, call_transaction

Receipt = dict[str, Any]
OnSent = Callable[[str, str], None]  # (what was done, transaction hash)


class ProtocolError(RuntimeError):
    """An action the chain refuses or that cannot be done as asked; the message says why."""


def _ignore(_: str, __: str) -> None:
    pass


class Connection:
    """A deployment's contracts over web3, acting as ``signer``.

    ``on_sent`` hears of every transaction once mined (a command line prints it; a service
    logs it), approvals the SDK sends on the way included.
    """

    def __init__(
        self, protocol: Web3Protocol, signer: Signer, on_sent: OnSent | None = None
    ) -> None:
        self.protocol = protocol
        self.signer = signer
        self.on_sent = on_sent or _ignore

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        signer: Signer | Callable[[Web3], Signer],
        *,
        deployments: DeploymentStore | None = None,
        on_sent: OnSent | None = None,
    ) -> Self:
        """The deployment recorded for the chain at ``rpc_url``; ``signer`` may be a factory
        taking the connected ``Web3`` (for a signer the RPC node unlocks)."""
        protocol = Web3Protocol.connect(rpc_url, deployments)
        return cls(protocol, signer if not callable(signer) else signer(protocol.w3), on_sent)

    # --- reading ---------------------------------------------------------------------------

    @property
    def w3(self) -> Web3:
        return self.protocol.w3

    @property
    def address(self) -> str:
        return self.signer.address

    @property
    def token(self) -> Contract:
        return self.protocol["OpenToken"]

    @property
    def datanets(self) -> Contract:
        return self.protocol["DatanetRegistry"]

    @property
    def models(self) -> Contract:
        return self.protocol["ModelRegistry"]

    @property
    def nodes(self) -> Contract:
        return self.protocol["NodeRegistry"]

    @property
    def rewards(self) -> Contract:
        return self.protocol["AttributionRewards"]

    @property
    def payments(self) -> Contract:
        return self.protocol["InferencePayments"]

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain of the deployment's InferencePayments (vouchers)."""
        return Domain(self.protocol.deployment.chain_id, self.payments.address)

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def now(self) -> int:
        """Unix seconds as the next block will see them (a dev chain's clock can run ahead)."""
        return max(int(self.w3.eth.get_block("latest")["timestamp"]), int(time.time()))

    def read(self, what: str, call: ContractFunction) -> Any:
        """``call``'s result; a view that reverts (an unknown id) raises its decoded error."""
        try:
            return call.call()
        except ContractLogicError as err:
            raise ProtocolError(f"cannot read {what}: {describe_revert(err)}") from None

    # --- sending ---------------------------------------------------------------------------

    def simulate(self, action: str, call: ContractFunction) -> int:
        """Runs ``call`` from the sender against the pending block and returns the gas it
        takes (one ``eth_estimateGas``: the simulation and the estimate are the same run);
        a revert is raised decoded."""
        tx = {"from": self.address, **call_transaction(call)}
        try:
            return int(self.w3.eth.estimate_gas(tx, "pending"))  # type: ignore[arg-type]
        except ContractLogicError as err:
            raise ProtocolError(f"{action} would revert: {describe_revert(err)}") from None

    def send(self, action: str, call: ContractFunction) -> Receipt:
        """Simulates ``call``, then signs and sends it; returns the mined receipt."""
        tx = {**call_transaction(call), "gas": self.simulate(action, call)}
        try:
            tx_hash = self.signer.send_transaction(self.w3, tx)
        except ContractLogicError as err:  # the state moved between simulation and sending
            raise ProtocolError(f"{action} reverted: {describe_revert(err)}") from None
        receipt = dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, RECEIPT_TIMEOUT))
        if receipt["status"] != 1:
            raise ProtocolError(f"{action} reverted in transaction 0x{tx_hash.hex()}")
        self.on_sent(action, "0x" + tx_hash.hex())
        return receipt

    def events(self, receipt: Receipt, contract: Contract, name: str) -> list[Any]:
        """The ``name`` events ``contract`` emitted in ``receipt``, decoded (their ``args``)."""
        event = getattr(contract.events, name)()
        # DISCARD: the receipt's other events do not match this one's ABI, and need not.
        logs = event.process_receipt(receipt, errors=DISCARD)
        return [e.args for e in logs if e.address == contract.address]

    def event(self, receipt: Receipt, contract: Contract, name: str) -> Any:
        """The single ``name`` event of ``receipt``."""
        found = self.events(receipt, contract, name)
        if len(found) != 1:
            tx = "0x" + bytes(receipt["transactionHash"]).hex()
            raise ProtocolError(f"expected one {name} event in {tx}, found {len(found)}")
        return found[0]

    def ensure_allowance(self, spender: Contract, amount: int) -> None:
        """Approves ``spender`` for ``amount`` OPEN wei when the allowance is lower."""
        if int(self.token.functions.allowance(self.address, spender.address).call()) < amount:
            self.send(
                f"approved {format_open(amount)} to {spender.address}",
                self.token.functions.approve(spender.address, amount),
            )
