"""The protocol's contracts through plain web3: what the inference node, ModelFactory's workers
and the tests and benchmarks use to reach the chain, with the ABIs and bytecode this package
ships (:mod:`backend.protocol.abi`) — no ape, no compiler.

Bind to a recorded deployment (:meth:`Web3Protocol.connect` over an RPC URL, or
:meth:`Web3Protocol.at` on a ``Web3``), read through ``protocol[name].functions``, and send
from an account the RPC node unlocks (:meth:`~Web3Protocol.transact`, anvil's) or with a local
key (:meth:`~Web3Protocol.transact_signed`). :func:`deploy` deploys and wires the six contracts
from an unlocked account, as ape's :func:`backend.protocol.contracts.deploy_protocol` does for
what runs under ``ape run``.

Contracts decode struct results as named tuples: ``registry.functions.datanet(1).call()
.versionCount`` reads a field by name, and indexing by position still works.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction

from backend.protocol.abi import abi, artifact
from backend.protocol.deployments import (
    CONTRACT_NAMES,
    Deployment,
    DeploymentStore,
    ProtocolParams,
)

log = logging.getLogger(__name__)

RECEIPT_TIMEOUT = 120.0  # seconds to wait for a transaction's receipt


class ChainMismatchError(ConnectionError):
    """The chain at an RPC URL is not the deployment's: another chain id, or no code at the
    deployment's addresses (the chain was reset)."""


class TransactionFailedError(RuntimeError):
    """A transaction was mined but reverted."""


def contract(w3: Web3, name: str, address: str) -> Contract:
    """Contract ``name`` at ``address``, with the shipped ABI."""
    return w3.eth.contract(address=to_checksum_address(address), abi=abi(name), decode_tuples=True)


@dataclass(frozen=True)
class Web3Protocol:
    """One deployment's six contracts on one chain, as web3 contract objects by name."""

    w3: Web3
    deployment: Deployment
    contracts: Mapping[str, Contract]

    def __getitem__(self, name: str) -> Contract:
        return self.contracts[name]

    @classmethod
    def at(cls, w3: Web3, deployment: Deployment) -> Web3Protocol:
        """``deployment``'s contracts over ``w3`` (nothing is checked on the chain)."""
        contracts = {name: contract(w3, name, deployment.address(name)) for name in CONTRACT_NAMES}
        return cls(w3, deployment, contracts)

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        deployment: Deployment | DeploymentStore | None = None,
        *,
        timeout: float = 30.0,
    ) -> Web3Protocol:
        """The deployment on the chain at ``rpc_url``: ``deployment`` itself, or the one the
        store (default: :class:`DeploymentStore`'s file) records for that chain.

        Raises ``ConnectionError`` when nothing answers, :class:`ChainMismatchError` when the
        chain is not the deployment's, and ``DeploymentNotFoundError`` when the store records
        no deployment for it.
        """
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        if not w3.is_connected():
            raise ConnectionError(f"no chain answers at {rpc_url}")
        chain_id = w3.eth.chain_id
        if not isinstance(deployment, Deployment):
            deployment = (deployment or DeploymentStore()).get(chain_id)
        if chain_id != deployment.chain_id:
            raise ChainMismatchError(
                f"{rpc_url} is chain {chain_id}, but the deployment is on chain "
                f"{deployment.chain_id}"
            )
        missing = [n for n in CONTRACT_NAMES if not w3.eth.get_code(deployment.address(n))]
        if missing:
            raise ChainMismatchError(
                f"no code at the deployment's {', '.join(missing)} on chain {chain_id} "
                f"({rpc_url}): the chain was reset"
            )
        return cls.at(w3, deployment)

    def transact(self, sender: str, call: ContractFunction) -> dict[str, Any]:
        """Sends ``call`` (a bound contract function) from ``sender``, an account the RPC node
        unlocks; returns the receipt, or raises :class:`TransactionFailedError` if it reverted."""
        from backend.sdk.signers import NodeSigner

        return self._send(NodeSigner(self.w3, sender), call)

    def transact_signed(self, private_key: bytes, call: ContractFunction) -> dict[str, Any]:
        """Sends ``call`` signed with ``private_key``; returns the receipt, or raises
        :class:`TransactionFailedError` if it reverted."""
        from backend.sdk.signers import KeySigner

        return self._send(KeySigner(private_key), call)

    def _send(self, signer: Any, call: ContractFunction) -> dict[str, Any]:
        """``call`` sent by one of the SDK's signers (the one place transactions are signed)."""
        from backend.sdk.signers import call_transaction

        return self.wait(signer.send_transaction(self.w3, call_transaction(call)), call)

    def wait(self, tx_hash: bytes, call: ContractFunction | None = None) -> dict[str, Any]:
        """The receipt of ``tx_hash`` once mined; raises if the transaction reverted."""
        receipt = dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, RECEIPT_TIMEOUT))
        if receipt["status"] != 1:
            what = f"{call.fn_name} " if call is not None else ""
            raise TransactionFailedError(f"{what}transaction 0x{bytes(tx_hash).hex()} reverted")
        return receipt


def deploy(
    w3: Web3,
    deployer: str,
    *,
    treasury: str | None = None,
    params: ProtocolParams | None = None,
    network: str = "ethereum:local:foundry",
) -> Web3Protocol:
    """Deploys and wires the six contracts from ``deployer``, an account the RPC node unlocks
    (it stays the owner of every contract), with the shipped bytecode."""
    params = params or ProtocolParams()
    deployer = to_checksum_address(deployer)
    treasury = to_checksum_address(treasury or deployer)
    start_block = w3.eth.block_number + 1
    addresses: dict[str, str] = {}

    def send(tx_hash: bytes, what: str) -> dict[str, Any]:
        receipt = dict(w3.eth.wait_for_transaction_receipt(tx_hash, RECEIPT_TIMEOUT))
        if receipt["status"] != 1:
            raise TransactionFailedError(f"{what} reverted (transaction 0x{tx_hash.hex()})")
        return receipt

    def create(name: str, *args: Any) -> str:
        compiled = artifact(name)
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        receipt = send(factory.constructor(*args).transact({"from": deployer}), f"deploying {name}")
        addresses[name] = to_checksum_address(receipt["contractAddress"])
        return addresses[name]

    token = create("OpenToken", treasury)
    datanets = create("DatanetRegistry", token, deployer)
    models = create(
        "ModelRegistry", datanets, deployer, params.protocol_bps, params.contributors_floor_bps
    )
    nodes = create("NodeRegistry", token, deployer, params.min_stake, params.unbonding_delay)
    rewards = create(
        "AttributionRewards", token, models, nodes, deployer,
        params.challenge_window, params.challenge_bond, params.slash_amount, params.claim_period,
    )  # fmt: skip
    registry = contract(w3, "NodeRegistry", nodes)
    send(registry.functions.setSlasher(rewards).transact({"from": deployer}), "setSlasher")
    create(
        "InferencePayments", token, models, nodes, rewards, deployer, treasury,
        params.withdrawal_delay,
    )  # fmt: skip
    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        network=network,
        block=start_block,
        governance=deployer,
        treasury=treasury,
        contracts={name: addresses[name] for name in CONTRACT_NAMES},
        params=params,
    )
    log.info("deployed the protocol on chain %s: %s", deployment.chain_id, deployment.contracts)
    return Web3Protocol.at(w3, deployment)


__all__ = [
    "ChainMismatchError",
    "TransactionFailedError",
    "Web3Protocol",
    "contract",
    "deploy",
]
