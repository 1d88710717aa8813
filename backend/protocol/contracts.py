"""Contract access through ape, for what runs under ``ape run``: deploy the protocol, or bind to
a recorded deployment. Everything else reaches the chain through plain web3
(:mod:`backend.protocol.web3_protocol`); :meth:`Protocol.as_web3` hands ape's connection over."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from ape import chain
from ape.managers.project import Project

from backend.protocol.deployments import (
    CONTRACT_NAMES,
    PROJECT_ROOT,
    Deployment,
    DeploymentNotFoundError,
    DeploymentStore,
    ProtocolParams,
)
from backend.protocol.eip712 import Domain
from backend.protocol.web3_protocol import Web3Protocol
from backend.sdk import OpenLedger, ape_signer
from backend.sdk.connection import OnSent

log = logging.getLogger(__name__)


@cache
def project() -> Project:
    """The OpenLedger ape project (its compiled contract types), from any working directory."""
    return Project(PROJECT_ROOT)


@dataclass(frozen=True)
class Protocol:
    """The six protocol contracts of one deployment, as ape contract instances."""

    deployment: Deployment
    token: Any
    datanets: Any
    models: Any
    nodes: Any
    rewards: Any
    payments: Any

    @classmethod
    def at(cls, deployment: Deployment) -> Protocol:
        p = project()
        c = {name: getattr(p, name).at(deployment.address(name)) for name in CONTRACT_NAMES}
        return cls(
            deployment=deployment,
            token=c["OpenToken"],
            datanets=c["DatanetRegistry"],
            models=c["ModelRegistry"],
            nodes=c["NodeRegistry"],
            rewards=c["AttributionRewards"],
            payments=c["InferencePayments"],
        )

    @classmethod
    def load(cls, store: DeploymentStore | None = None) -> Protocol:
        """The deployment recorded for the connected chain; checks that its code is there."""
        store = store or DeploymentStore()
        deployment = store.get(chain.chain_id)
        missing = [n for n in CONTRACT_NAMES if not chain.provider.get_code(deployment.address(n))]
        if missing:
            raise DeploymentNotFoundError(
                f"the deployment recorded for chain {chain.chain_id} in {store.path} has no code "
                f"at {', '.join(missing)}: the chain was reset"
            )
        return cls.at(deployment)

    def as_web3(self) -> Web3Protocol:
        """This deployment through plain web3, over ape's connected provider: for the code that
        ``ape run`` shares with processes without ape (ModelFactory's chain reads)."""
        return Web3Protocol.at(chain.provider.web3, self.deployment)

    def sdk(self, account: Any, on_sent: OnSent | None = None) -> OpenLedger:
        """This deployment through the SDK acting as the ape ``account``; ``on_sent`` hears of
        each transaction (a command line prints it)."""
        return OpenLedger(self.as_web3(), ape_signer(account), on_sent)

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain of this deployment's InferencePayments."""
        return Domain(chain_id=self.deployment.chain_id, verifying_contract=self.payments.address)


def deploy_protocol(
    deployer: Any,
    *,
    governance: str | None = None,
    treasury: str | None = None,
    params: ProtocolParams | None = None,
    network: str = "",
) -> Protocol:
    """Deploys and wires the six contracts from ``deployer``.

    The deployer owns every contract while wiring; when ``governance`` is another address,
    ownership is then offered to it (Ownable2Step: governance calls ``acceptOwnership``).
    """
    p = project()
    params = params or ProtocolParams()
    treasury = treasury or deployer.address
    start_block = chain.blocks.height + 1
    token = deployer.deploy(p.OpenToken, treasury)
    datanets = deployer.deploy(p.DatanetRegistry, token, deployer)
    models = deployer.deploy(
        p.ModelRegistry, datanets, deployer, params.protocol_bps, params.contributors_floor_bps
    )
    nodes = deployer.deploy(
        p.NodeRegistry, token, deployer, params.min_stake, params.unbonding_delay
    )
    rewards = deployer.deploy(
        p.AttributionRewards,
        token,
        models,
        nodes,
        deployer,
        params.challenge_window,
        params.challenge_bond,
        params.slash_amount,
        params.claim_period,
    )
    nodes.setSlasher(rewards, sender=deployer)
    payments = deployer.deploy(
        p.InferencePayments,
        token,
        models,
        nodes,
        rewards,
        deployer,
        treasury,
        params.withdrawal_delay,
    )
    contracts = [datanets, models, nodes, rewards, payments]
    if governance and governance.lower() != deployer.address.lower():
        for contract in contracts:
            contract.transferOwnership(governance, sender=deployer)
    deployment = Deployment(
        chain_id=chain.chain_id,
        network=network,
        block=start_block,
        governance=governance or deployer.address,
        treasury=treasury,
        contracts={
            "OpenToken": token.address,
            "DatanetRegistry": datanets.address,
            "ModelRegistry": models.address,
            "NodeRegistry": nodes.address,
            "AttributionRewards": rewards.address,
            "InferencePayments": payments.address,
        },
        params=params,
    )
    log.info("deployed the protocol on chain %s: %s", deployment.chain_id, deployment.contracts)
    return Protocol.at(deployment)


def ensure_protocol(
    deployer: Any,
    store: DeploymentStore | None = None,
    *,
    governance: str | None = None,
    treasury: str | None = None,
    params: ProtocolParams | None = None,
    network: str = "",
) -> tuple[Protocol, bool]:
    """The deployment recorded for the connected chain if its code is there, else a new one
    (recorded in ``store``). Returns the protocol and whether it was deployed now."""
    store = store or DeploymentStore()
    try:
        existing = Protocol.load(store)
    except DeploymentNotFoundError as why:
        log.info("deploying: %s", why)
    else:
        log.info("reusing the deployment on chain %s from %s", chain.chain_id, store.path)
        return existing, False
    deployed = deploy_protocol(
        deployer, governance=governance, treasury=treasury, params=params, network=network
    )
    store.save(deployed.deployment)
    return deployed, True


__all__ = ["DeploymentNotFoundError", "Protocol", "deploy_protocol", "ensure_protocol", "project"]
