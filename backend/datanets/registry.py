"""A Datanet's history on the DatanetRegistry, read from its events, and how transactions are sent.

Every Datanet flow takes its state from the chain (events and views) and the content store,
never from local files, so any of them can be re-run after a crash. One ``eth_getLogs`` page
holds all four event types of one Datanet (each indexes ``datanetId`` first), decoded in chain
order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ape import chain, networks
from eth_utils import keccak, to_checksum_address

from backend.datanets.formats import DatanetMetadata
from backend.protocol.cli_support import format_open
from backend.protocol.contracts import Protocol as ProtocolContracts
from backend.storage.base import ContentStore, ContentStoreError

log = logging.getLogger(__name__)

LOG_PAGE_BLOCKS = 10_000  # blocks per eth_getLogs request (public RPCs cap the range)
HISTORY_EVENTS = ("DatanetCreated", "Contributed", "Reviewed", "VersionPublished")


class DatanetError(RuntimeError):
    """A Datanet action that cannot be done as asked; the message says why."""


class Send(Protocol):
    """Sends ``method(*args)`` from ``sender`` and returns the receipt; ``action`` describes it."""

    def __call__(self, action: str, method: Any, *args: Any, sender: Any) -> Any: ...


def send_direct(action: str, method: Any, *args: Any, sender: Any) -> Any:
    """The plain sender: one transaction, logged."""
    receipt = method(*args, sender=sender)
    log.info("%s: tx %s", action, receipt.txn_hash)
    return receipt


# --- events ----------------------------------------------------------------------------------

Position = tuple[int, int]  # (block number, log index): the order of events on the chain


@dataclass(frozen=True)
class Contribution:
    """A contribution as its events tell it."""

    id: int
    contributor: str  # checksummed
    cid: str
    size: int  # bytes, as declared
    bond: int  # OPEN wei
    position: Position
    approved: bool | None = None  # None while pending
    reviewed_at: Position | None = None

    @property
    def status(self) -> str:
        return {None: "pending", True: "approved", False: "rejected"}[self.approved]


@dataclass(frozen=True)
class PublishedVersion:
    """A ``VersionPublished`` event."""

    version: int
    merkle_root: bytes
    contribution_count: int
    manifest_cid: str
    position: Position


@dataclass
class DatanetHistory:
    """Every contribution, review and version of one Datanet, as of ``block``."""

    datanet_id: int
    block: int
    contributions: dict[int, Contribution] = field(default_factory=dict)  # id -> contribution
    versions: dict[int, PublishedVersion] = field(default_factory=dict)  # number -> version

    def as_of(self, position: Position) -> list[Contribution]:
        """The contributions registered before ``position``, with the reviews made before it."""
        result = []
        for c in sorted(self.contributions.values(), key=lambda c: c.id):
            if c.position >= position:
                continue
            if c.reviewed_at is not None and c.reviewed_at >= position:
                c = Contribution(c.id, c.contributor, c.cid, c.size, c.bond, c.position)
            result.append(c)
        return result

    def approved(self, position: Position | None = None) -> list[Contribution]:
        """Approved contributions in id order (as of ``position`` when given)."""
        rows = (
            self.as_of(position)
            if position
            else sorted(self.contributions.values(), key=lambda c: c.id)
        )
        return [c for c in rows if c.approved]

    def pending(self) -> list[Contribution]:
        return [c for c in sorted(self.contributions.values(), key=lambda c: c.id)
                if c.approved is None]  # fmt: skip


def _topic(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _logs(contract: Any, events: tuple[str, ...], topics: list[Any], start: int, stop: int) -> list:
    """Decoded logs of ``events`` of ``contract`` matching ``topics[1:]``, in chain order."""
    abis = [getattr(contract, name).abi for name in events]
    signatures = ["0x" + keccak(text=abi.selector).hex() for abi in abis]
    provider = networks.provider
    decoded: list = []
    for page_start in range(start, stop + 1, LOG_PAGE_BLOCKS):
        page_stop = min(page_start + LOG_PAGE_BLOCKS - 1, stop)
        raw = provider.make_request(
            "eth_getLogs",
            [{
                "address": contract.address,
                "fromBlock": hex(page_start),
                "toBlock": hex(page_stop),
                "topics": [signatures, *topics],
            }],
        )  # fmt: skip
        decoded.extend(provider.network.ecosystem.decode_logs(raw, *abis))
    decoded.sort(key=lambda e: (e.block_number, e.log_index))
    return decoded


def read_history(p: ProtocolContracts, datanet_id: int, block: int | None = None) -> DatanetHistory:
    """The history of Datanet ``datanet_id`` up to ``block`` (default: the chain head)."""
    head = int(chain.blocks.height) if block is None else block
    history = DatanetHistory(datanet_id, head)
    events = _logs(p.datanets, HISTORY_EVENTS, [_topic(datanet_id)], p.deployment.block, head)
    for e in events:
        where = (int(e.block_number), int(e.log_index))
        if e.event_name == "Contributed":
            cid_id = int(e.contributionId)
            history.contributions[cid_id] = Contribution(
                id=cid_id, contributor=to_checksum_address(e.contributor), cid=str(e.cid),
                size=int(e.size), bond=int(e.bond), position=where,
            )  # fmt: skip
        elif e.event_name == "Reviewed":
            c = history.contributions[int(e.contributionId)]
            history.contributions[c.id] = Contribution(
                c.id, c.contributor, c.cid, c.size, c.bond, c.position, bool(e.approved), where
            )
        elif e.event_name == "VersionPublished":
            history.versions[int(e.version)] = PublishedVersion(
                version=int(e.version), merkle_root=bytes(e.merkleRoot),
                contribution_count=int(e.contributionCount), manifest_cid=str(e.manifestCID),
                position=where,
            )  # fmt: skip
    log.debug(
        "datanet %d to block %d: %d contributions, %d versions",
        datanet_id, head, len(history.contributions), len(history.versions),
    )  # fmt: skip
    return history


def datanets_created_by(p: ProtocolContracts, owner: str) -> Iterator[tuple[int, str]]:
    """``(datanetId, metadataCID)`` of every Datanet ``owner`` created, oldest first."""
    head = int(chain.blocks.height)
    owner_topic = "0x" + "00" * 12 + owner[2:].lower()
    for e in _logs(p.datanets, ("DatanetCreated",), [None, owner_topic], p.deployment.block, head):
        yield int(e.datanetId), str(e.metadataCID)


# --- Datanet state ---------------------------------------------------------------------------


def require_datanet(p: ProtocolContracts, datanet_id: int) -> Any:
    """The on-chain Datanet struct, or a :class:`DatanetError` naming the valid ids."""
    count = int(p.datanets.datanetCount())
    if not 1 <= datanet_id <= count:
        known = f"datanets are 1..{count}" if count else "no datanets exist yet"
        raise DatanetError(f"datanet {datanet_id} does not exist ({known})")
    return p.datanets.datanet(datanet_id)


def require_curator(p: ProtocolContracts, datanet_id: int, account: Any) -> None:
    if not p.datanets.isCurator(datanet_id, account.address):
        raise DatanetError(f"{account.address} is not a curator of datanet {datanet_id}")


def fetch_metadata(store: ContentStore, metadata_cid: str) -> DatanetMetadata:
    """The Datanet metadata stored under ``metadata_cid``, verified and parsed."""
    try:
        raw = store.get(metadata_cid)
    except ContentStoreError as why:
        raise DatanetError(f"cannot read the Datanet metadata {metadata_cid}: {why}") from None
    return DatanetMetadata.from_json(raw)


def ensure_allowance(p: ProtocolContracts, owner: Any, amount: int, send: Send) -> None:
    """Approves the DatanetRegistry for ``amount`` OPEN wei of ``owner``'s when the allowance
    is lower, after checking that ``owner`` holds that much."""
    balance = int(p.token.balanceOf(owner.address))
    if balance < amount:
        raise DatanetError(
            f"{owner.address} holds {format_open(balance)}, needs {format_open(amount)} for bonds"
        )
    if int(p.token.allowance(owner.address, p.datanets.address)) < amount:
        send(
            f"approved {format_open(amount)} of bonds to the DatanetRegistry",
            p.token.approve, p.datanets.address, amount, sender=owner,
        )  # fmt: skip
