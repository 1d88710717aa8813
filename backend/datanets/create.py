"""Create a Datanet from its metadata, or find the one the same owner already created with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backend.datanets.formats import DatanetMetadata
from backend.datanets.registry import DatanetError, datanets_created_by
from backend.protocol.amounts import UINT96_MAX
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedDatanet:
    datanet_id: int
    metadata_cid: str
    created_now: bool  # False: an existing Datanet of the same owner and metadata was reused


def create_datanet(
    ol: OpenLedger,
    store: ContentStore,
    metadata: DatanetMetadata,
    *,
    bond: int = 0,  # OPEN wei per contribution
    min_approved: int = 1,
    treasury: str | None = None,
) -> CreatedDatanet:
    """Stores ``metadata`` (canonical JSON) and creates a Datanet owned by the sender with it,
    unless the sender already created one with this metadata CID (then that one is returned)."""
    if not 0 <= bond <= UINT96_MAX:
        raise DatanetError(f"bond {bond} OPEN wei is outside 0..2**96-1")
    metadata_cid = store.put(metadata.to_json_bytes())
    store.pin(metadata_cid)
    for datanet_id, cid in datanets_created_by(ol.protocol, ol.address):
        if cid == metadata_cid:
            log.info("reusing datanet %d of %s (metadata %s)", datanet_id, ol.address, cid)
            return CreatedDatanet(datanet_id, metadata_cid, created_now=False)
    receipt = ol.send(
        f"created a datanet for {metadata.name!r}",
        ol.datanets.functions.createDatanet(
            metadata_cid, bond, min_approved, treasury or ol.address
        ),
    )
    event = ol.event(receipt, ol.datanets, "DatanetCreated")
    return CreatedDatanet(int(event.datanetId), metadata_cid, created_now=True)
