"""The local stack that ``make demo`` and ``make up`` run: anvil with persisted state, the
protocol deployed once (or reused from that state), and local accounts funded with OPEN."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
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
CONTRACTS_MARK = "contracts.sha256"  # the contract code the data dir's chain was deployed with
MANIFEST = PROJECT_ROOT / "backend" / "protocol" / "abi" / "manifest.json"


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


def contracts_fingerprint() -> str:
    """sha256 of the shipped ABI manifest: it names every contract source by hash."""
    return hashlib.sha256(MANIFEST.read_bytes()).hexdigest()


def retire_stale_chain(data_dir: Path) -> Path | None:
    """Moves a local chain deployed by other contract code (or by a version that did not record
    its code) aside, everything but the content store, so the stack starts a fresh chain with
    the current contracts instead of reusing contracts whose ABI has changed; returns where it
    went (nothing is deleted)."""
    if not (data_dir / "deployments.json").exists():
        return None
    mark = data_dir / CONTRACTS_MARK
    if mark.exists() and mark.read_text().strip() == contracts_fingerprint():
        return None
    (data_dir / "retired").mkdir(exist_ok=True)
    retired = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%dT%H%M%S-"),
                                    dir=data_dir / "retired"))  # fmt: skip
    for entry in data_dir.iterdir():
        if entry.name not in ("store", "retired"):
            shutil.move(str(entry), retired / entry.name)
    log.warning(
        "the local chain in %s was deployed by other contract code: moved it to %s and "
        "starting a fresh chain with the current contracts", data_dir, retired,
    )  # fmt: skip
    return retired


@contextlib.contextmanager
def local_stack(data_dir: Path = DEFAULT_DATA_DIR, port: int = 8545) -> Iterator[LocalStack]:
    """Starts anvil on ``data_dir``'s chain state, deploys or reuses the protocol, funds the
    local accounts, opens the content store ``data_dir/store``; stops everything it started on
    exit."""
    retire_stale_chain(data_dir)
    store = DeploymentStore(data_dir / "deployments.json")
    anvil = Anvil(port=port, state_file=data_dir / "chain" / "anvil-state.json")
    with anvil, connected(anvil):
        test_accounts = accounts.test_accounts
        roles = {role: test_accounts[i] for i, role in enumerate(DEMO_ROLES)}
        protocol, deployed_now = ensure_protocol(
            roles["governance"], store, treasury=roles["treasury"].address, network=NETWORK
        )
        (data_dir / CONTRACTS_MARK).write_text(contracts_fingerprint() + "\n")
        funded = fund_users(protocol, roles)
        content = DirectoryStore(data_dir / "store")
        yield LocalStack(anvil, protocol, deployed_now, roles, funded, content)
