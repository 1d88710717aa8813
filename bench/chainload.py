"""A local anvil loaded with many Datanet events, for the indexer and API benchmarks: the
protocol deployed with web3, contributions registered in ``contributeBatch`` transactions of
``batch`` CIDs from several contributors, reviewed in batches, and one version published."""

from __future__ import annotations

import time
from dataclasses import dataclass

from web3 import Web3

from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.web3_protocol import Web3Protocol, deploy
from backend.storage.unixfs import compute_cid

OPEN = 10**18
CONTRIBUTORS = 4  # anvil accounts 2..5


@dataclass(frozen=True)
class Load:
    protocol: Web3Protocol
    contributions: int
    seconds: float  # to send every transaction


def load_chain(w3: Web3, contributions: int, batch: int = 100, publish: bool = True) -> Load:
    """Deploys the protocol and registers, approves (9 in 10) and publishes ``contributions``."""
    started = time.perf_counter()
    accounts = w3.eth.accounts
    owner, treasury = accounts[0], accounts[1]
    contributors = accounts[2 : 2 + CONTRIBUTORS]
    p = deploy(w3, owner, treasury=treasury)
    token, registry = p["OpenToken"].functions, p["DatanetRegistry"]
    for who in contributors:
        p.transact(treasury, token.transfer(who, 1_000_000 * OPEN))
        p.transact(who, token.approve(registry.address, 2**256 - 1))
    metadata = b'{"name":"bench","description":"bench","license":"CC0-1.0","format":"text"}'
    p.transact(owner, registry.functions.createDatanet(compute_cid(metadata), OPEN // 100, 1,
                                                       treasury))  # fmt: skip
    leaves: list[tuple[int, str, str]] = []
    next_id = 1
    for start in range(0, contributions, batch):
        who = contributors[(start // batch) % len(contributors)]
        cids = [compute_cid(f"bench contribution {i}".encode())
                for i in range(start, min(start + batch, contributions))]  # fmt: skip
        p.transact(who, registry.functions.contributeBatch(1, cids, [1_000] * len(cids)))
        ids = list(range(next_id, next_id + len(cids)))
        approve = [i % 10 != 0 for i in ids]
        p.transact(owner, registry.functions.review(1, ids, approve))
        leaves += [(i, who, cid) for i, cid, ok in zip(ids, cids, approve, strict=True) if ok]
        next_id += len(cids)
    if publish:
        root = StandardMerkleTree.of(leaves, ("uint256", "address", "string")).root
        p.transact(
            owner, registry.functions.publishVersion(1, root, compute_cid(b"manifest"), len(leaves))
        )
    return Load(p, contributions, time.perf_counter() - started)
