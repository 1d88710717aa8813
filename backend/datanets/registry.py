"""A Datanet's history on the DatanetRegistry, read from its events, and its state.

Every Datanet flow takes its state from the chain (events and views) and the content store,
never from local files, so any of them can be re-run after a crash. One ``eth_getLogs`` page
holds all four event types of one Datanet (each indexes ``datanetId`` first), decoded in chain
order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from backend.datanets.formats import DatanetMetadata
from backend.protocol.web3_protocol import Web3Protocol
from backend.sdk.reverts import describe_revert
from backend.storage.base import ContentStore, ContentStoreError

log = logging.getLogger(__name__)

LOG_PAGE_BLOCKS = 10_000  # blocks per eth_getLogs request (public RPCs cap the range)
HISTORY_EVENTS = ("DatanetCreated", "Contributed", "Reviewed", "VersionPublished")


class DatanetError(RuntimeError):
    """A Datanet action that cannot be done as asked; the message says why."""


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


def _logs(
    contract: Contract, events: tuple[str, ...], topics: list[Any], start: int, stop: int
) -> list:
    """Decoded logs of ``events`` of ``contract`` matching ``topics[1:]``, in chain order."""
    by_topic: dict[bytes, Any] = {}
    for name in events:
        event = getattr(contract.events, name)()
        by_topic[bytes(HexBytes(event.topic))] = event
    w3 = contract.w3
    decoded: list = []
    for page_start in range(start, stop + 1, LOG_PAGE_BLOCKS):
        page_stop = min(page_start + LOG_PAGE_BLOCKS - 1, stop)
        raw = w3.eth.get_logs({
            "address": contract.address,
            "fromBlock": page_start,
            "toBlock": page_stop,
            "topics": [["0x" + t.hex() for t in by_topic], *topics],
        })  # fmt: skip
        decoded.extend(by_topic[bytes(e["topics"][0])].process_log(e) for e in raw)
    decoded.sort(key=lambda e: (e.blockNumber, e.logIndex))
    return decoded


def read_history(p: Web3Protocol, datanet_id: int, block: int | None = None) -> DatanetHistory:
    """The history of Datanet ``datanet_id`` up to ``block`` (default: the chain head)."""
    head = int(p.w3.eth.block_number) if block is None else block
    history = DatanetHistory(datanet_id, head)
    registry = p["DatanetRegistry"]
    events = _logs(registry, HISTORY_EVENTS, [_topic(datanet_id)], p.deployment.block, head)
    for event in events:
        e, where = event.args, (int(event.blockNumber), int(event.logIndex))
        if event.event == "Contributed":
            cid_id = int(e.contributionId)
            history.contributions[cid_id] = Contribution(
                id=cid_id, contributor=to_checksum_address(e.contributor), cid=str(e.cid),
                size=int(e.size), bond=int(e.bond), position=where,
            )  # fmt: skip
        elif event.event == "Reviewed":
            c = history.contributions[int(e.contributionId)]
            history.contributions[c.id] = Contribution(
                c.id, c.contributor, c.cid, c.size, c.bond, c.position, bool(e.approved), where
            )
        elif event.event == "VersionPublished":
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


def datanets_created_by(p: Web3Protocol, owner: str) -> Iterator[tuple[int, str]]:
    """``(datanetId, metadataCID)`` of every Datanet ``owner`` created, oldest first."""
    head = int(p.w3.eth.block_number)
    owner_topic = "0x" + "00" * 12 + owner[2:].lower()
    registry = p["DatanetRegistry"]
    for e in _logs(registry, ("DatanetCreated",), [None, owner_topic], p.deployment.block, head):
        yield int(e.args.datanetId), str(e.args.metadataCID)


# --- Datanet state ---------------------------------------------------------------------------


def read_datanet(p: Web3Protocol, datanet_id: int) -> Any:
    """The on-chain Datanet struct; an unknown id raises :class:`DatanetError` with the
    contract's own error (``UnknownDatanet(datanetId=7)``)."""
    try:
        return p["DatanetRegistry"].functions.datanet(datanet_id).call()
    except ContractLogicError as err:
        raise DatanetError(f"cannot read datanet {datanet_id}: {describe_revert(err)}") from None


def fetch_metadata(store: ContentStore, metadata_cid: str) -> DatanetMetadata:
    """The Datanet metadata stored under ``metadata_cid``, verified and parsed."""
    try:
        raw = store.get(metadata_cid)
    except ContentStoreError as why:
        raise DatanetError(f"cannot read the Datanet metadata {metadata_cid}: {why}") from None
    return DatanetMetadata.from_json(raw)
