"""Where the protocol is deployed: one JSON file of deployment records, keyed by chain id.

Public networks record theirs in the repository's ``deployments.json``; a local chain keeps its
file beside its persisted state (``OPENLEDGER_DEPLOYMENTS`` points there), so a restarted local
chain finds the deployment it already holds.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_NAMES = (
    "OpenToken",
    "DatanetRegistry",
    "ModelRegistry",
    "NodeRegistry",
    "AttributionRewards",
    "InferencePayments",
)


class DeploymentNotFoundError(LookupError):
    """No deployment is recorded for a chain."""


@dataclass(frozen=True)
class ProtocolParams:
    """Governance parameters set at deployment (all changeable later by governance)."""

    min_stake: int = 1_000 * 10**18  # OPEN wei
    unbonding_delay: int = 7 * 86_400  # seconds
    withdrawal_delay: int = 86_400  # seconds
    challenge_window: int = 86_400  # seconds
    challenge_bond: int = 100 * 10**18  # OPEN wei
    slash_amount: int = 500 * 10**18  # OPEN wei
    claim_period: int = 180 * 86_400  # seconds an epoch stays claimable after its window
    protocol_bps: int = 500  # bps of every payment
    contributors_floor_bps: int = 1_000  # bps, minimum contributors' share


@dataclass(frozen=True)
class Deployment:
    """The addresses of one deployment of the protocol on one chain."""

    chain_id: int
    network: str
    block: int  # first block of the deployment (where indexers start)
    governance: str
    treasury: str
    contracts: dict[str, str]  # contract name -> address
    params: ProtocolParams = field(default_factory=ProtocolParams)

    def address(self, name: str) -> str:
        try:
            return self.contracts[name]
        except KeyError:
            raise DeploymentNotFoundError(
                f"no {name} in the deployment on chain {self.chain_id}"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        return cls(
            chain_id=int(data["chain_id"]),
            network=str(data["network"]),
            block=int(data["block"]),
            governance=str(data["governance"]),
            treasury=str(data["treasury"]),
            contracts=dict(data["contracts"]),
            params=ProtocolParams(**data.get("params", {})),
        )


def default_path() -> Path:
    """``$OPENLEDGER_DEPLOYMENTS``, else ``deployments.json`` at the project root."""
    return Path(os.environ.get("OPENLEDGER_DEPLOYMENTS", PROJECT_ROOT / "deployments.json"))


class DeploymentStore:
    """A JSON file of deployment records, one per chain id."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def get(self, chain_id: int) -> Deployment:
        record = self._read().get(str(chain_id))
        if record is None:
            raise DeploymentNotFoundError(
                f"no deployment recorded for chain {chain_id} in {self.path}"
            )
        return Deployment.from_json(record)

    def save(self, deployment: Deployment) -> None:
        """Records ``deployment`` (replacing that chain's), written atomically."""
        records = self._read()
        records[str(deployment.chain_id)] = deployment.to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def remove(self, chain_id: int) -> None:
        records = self._read()
        if records.pop(str(chain_id), None) is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
