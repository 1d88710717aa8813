"""Contract fixtures: role-named accounts and the whole protocol deployed and funded."""

from __future__ import annotations

import pytest

from backend.protocol.contracts import Protocol, deploy_protocol
from backend.protocol.deployments import ProtocolParams

OPEN = 10**18
PARAMS = ProtocolParams()
FUNDED = 1_000_000 * OPEN  # OPEN wei given to every role account


@pytest.fixture(scope="session")
def governance(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def treasury(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def developer(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def node(accounts):
    return accounts[3]


@pytest.fixture(scope="session")
def payer(accounts):
    return accounts[4]


@pytest.fixture(scope="session")
def contributor(accounts):
    return accounts[5]


@pytest.fixture(scope="session")
def curator(accounts):
    return accounts[6]


@pytest.fixture(scope="session")
def challenger(accounts):
    return accounts[7]


@pytest.fixture(scope="session")
def other(accounts):
    return accounts[8]


@pytest.fixture(scope="session")
def second_node(accounts):
    return accounts[9]


@pytest.fixture(scope="session")
def protocol(governance, treasury, accounts) -> Protocol:
    deployed = deploy_protocol(governance, treasury=treasury.address, params=PARAMS, network="test")
    for account in accounts[2:10]:
        deployed.token.transfer(account, FUNDED, sender=treasury)
    return deployed


@pytest.fixture(scope="session")
def token(protocol):
    return protocol.token


@pytest.fixture(scope="session")
def datanets(protocol):
    return protocol.datanets


@pytest.fixture(scope="session")
def models(protocol):
    return protocol.models


@pytest.fixture(scope="session")
def nodes(protocol):
    return protocol.nodes


@pytest.fixture(scope="session")
def rewards(protocol):
    return protocol.rewards


@pytest.fixture(scope="session")
def payments(protocol):
    return protocol.payments


@pytest.fixture(scope="session", autouse=True)
def _session_state(
    governance, treasury, developer, node, payer, contributor, curator, challenger, other,
    second_node, protocol,
):  # fmt: skip
    """Builds every session fixture before the first test, so ape snapshots the chain once
    with all of them (a session fixture first used mid-file makes ape rebuild its snapshots)."""
