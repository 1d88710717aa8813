"""The protocol on a local anvil through plain web3: deploy from ape's compiled artifacts and send
transactions from anvil's unlocked accounts. For tests and benchmarks of the off-chain services
(indexer, API) that need many real transactions fast; user-facing flows go through ape
(``backend.protocol.contracts``), whose ``deploy_protocol`` this wiring mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from backend.protocol.contracts import project
from backend.protocol.deployments import CONTRACT_NAMES, Deployment, ProtocolParams


def _artifact(name: str) -> tuple[list[dict[str, Any]], str]:
    contract_type = getattr(project(), name).contract_type
    abi = [item.model_dump(mode="json", by_alias=True) for item in contract_type.abi]
    return abi, str(contract_type.deployment_bytecode.bytecode)


@dataclass(frozen=True)
class Web3Protocol:
    """A deployment with a web3 contract object per contract."""

    w3: Web3
    deployment: Deployment
    contracts: dict[str, Contract]

    def __getitem__(self, name: str) -> Contract:
        return self.contracts[name]

    def transact(self, sender: str, call: Any) -> dict[str, Any]:
        """Sends ``call`` (a bound contract function) from ``sender``; returns the receipt and
        raises if it reverted."""
        tx_hash = call.transact({"from": sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction {tx_hash.hex()} reverted")
        return dict(receipt)

    @classmethod
    def at(cls, w3: Web3, deployment: Deployment) -> Web3Protocol:
        contracts = {
            name: w3.eth.contract(address=deployment.address(name), abi=_artifact(name)[0])
            for name in CONTRACT_NAMES
        }
        return cls(w3, deployment, contracts)


def deploy(
    w3: Web3,
    deployer: str,
    *,
    treasury: str | None = None,
    params: ProtocolParams | None = None,
) -> Web3Protocol:
    """Deploys and wires the six contracts from the unlocked account ``deployer`` (who stays
    the owner of every contract)."""
    params = params or ProtocolParams()
    treasury = to_checksum_address(treasury or deployer)
    start_block = w3.eth.block_number + 1
    addresses: dict[str, str] = {}

    def create(name: str, *args: Any) -> str:
        abi, bytecode = _artifact(name)
        tx_hash = (
            w3.eth.contract(abi=abi, bytecode=bytecode)
            .constructor(*args)
            .transact({"from": deployer})
        )
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        addresses[name] = str(receipt["contractAddress"])
        return addresses[name]

    token = create("OpenToken", treasury)
    datanets = create("DatanetRegistry", token, deployer)
    models = create(
        "ModelRegistry", datanets, deployer, params.protocol_bps, params.contributors_floor_bps
    )
    nodes = create("NodeRegistry", token, deployer, params.min_stake, params.unbonding_delay)
    rewards = create(
        "AttributionRewards", token, models, nodes, deployer,
        params.challenge_window, params.challenge_bond, params.slash_amount,
    )  # fmt: skip
    node_registry = w3.eth.contract(address=nodes, abi=_artifact("NodeRegistry")[0])
    w3.eth.wait_for_transaction_receipt(
        node_registry.functions.setSlasher(rewards).transact({"from": deployer})
    )
    create(
        "InferencePayments", token, models, nodes, rewards, deployer, treasury,
        params.withdrawal_delay,
    )  # fmt: skip
    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        network="ethereum:local:foundry",
        block=start_block,
        governance=to_checksum_address(deployer),
        treasury=treasury,
        contracts={name: addresses[name] for name in CONTRACT_NAMES},
        params=params,
    )
    return Web3Protocol.at(w3, deployment)
