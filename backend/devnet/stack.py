"""The local stack that ``make demo`` and ``make up`` run: anvil with persisted state, the
protocol deployed once (or reused from that state), and local accounts funded with OPEN."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ape import accounts, networks

from backend.devnet.anvil import Anvil
from backend.protocol.contracts import Protocol, ensure_protocol
from backend.protocol.deployments import PROJECT_ROOT, DeploymentStore
from backend.storage.local import DirectoryStore

log = logging.getLogger(__name__)

OPEN = 10**18
NETWORK = "ethereum:local:foundry"
DEFAULT_DATA_DIR = PROJECT_ROOT / ".data" / "devnet"
DEMO_ROLES = ("governance", "treasury", "developer", "node operator", "payer", "contributor")
FUND_TARGET = 10_000 * OPEN  # OPEN wei each local user account holds after funding


@dataclass(frozen=True)
class LocalStack:
    anvil: Anvil
    protocol: Protocol
    deployed_now: bool
    roles: dict[str, Any]  # role name -> ape test account
    funded: dict[str, int]  # role name -> OPEN wei sent now
    store: DirectoryStore  # the embedded content store, under the data dir


@contextlib.contextmanager
def connected(anvil: Anvil) -> Iterator[Any]:
    """ape connected to ``anvil`` through ape-foundry (which leaves a running anvil alone)."""
    os.environ["APE_FOUNDRY_HOST"] = anvil.url
    with networks.parse_network_choice(NETWORK) as provider:
        yield provider


def fund_users(protocol: Protocol, roles: dict[str, Any]) -> dict[str, int]:
    """Tops up every user role (not governance or treasury) to ``FUND_TARGET`` OPEN from the
    treasury; idempotent, so a second run sends nothing."""
    treasury = roles["treasury"]
    sent: dict[str, int] = {}
    for role, account in roles.items():
        if role in ("governance", "treasury"):
            continue
        balance = protocol.token.balanceOf(account)
        if balance < FUND_TARGET:
            protocol.token.transfer(account, FUND_TARGET - balance, sender=treasury)
            sent[role] = FUND_TARGET - balance
    return sent


@contextlib.contextmanager
def local_stack(data_dir: Path = DEFAULT_DATA_DIR, port: int = 8545) -> Iterator[LocalStack]:
    """Starts anvil on ``data_dir``'s chain state, deploys or reuses the protocol, funds the
    local accounts, opens the content store ``data_dir/store``; stops everything it started on
    exit."""
    store = DeploymentStore(data_dir / "deployments.json")
    anvil = Anvil(port=port, state_file=data_dir / "chain" / "anvil-state.json")
    with anvil, connected(anvil):
        test_accounts = accounts.test_accounts
        roles = {role: test_accounts[i] for i, role in enumerate(DEMO_ROLES)}
        protocol, deployed_now = ensure_protocol(
            roles["governance"], store, treasury=roles["treasury"].address, network=NETWORK
        )
        funded = fund_users(protocol, roles)
        content = DirectoryStore(data_dir / "store")
        yield LocalStack(anvil, protocol, deployed_now, roles, funded, content)
