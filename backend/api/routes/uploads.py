"""Contribution uploads: validated against the Datanet's format, stored, pinned -> CID.

The upload only puts the file in the content store; registering it on-chain
(``contribute(datanetId, cid, size)``) is signed by the contributor's own wallet.
"""

import logging

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from backend.api.deps import IdPath, SettingsDep, StoreDep
from backend.api.errors import APIError, ErrorItem, conflict, responses
from backend.api.queries import fetch_one
from backend.api.routes.datanets import require_datanet
from backend.api.schemas import UploadResult
from backend.api.uploads import UploadError, UploadTooLargeError, read_file_part
from backend.datanets.formats import (
    ContributionFormatError,
    DatanetMetadata,
    MetadataError,
    validate_contribution,
)
from backend.storage.base import ContentStore, ContentStoreError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/datanets", tags=["uploads"])
UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def datanet_metadata(request: Request, store: ContentStore, cid: str) -> DatanetMetadata:
    """The Datanet's metadata from the content store (verified; cached by CID)."""
    cache: dict[str, DatanetMetadata] = request.app.state.metadata
    if cid not in cache:
        try:
            cache[cid] = DatanetMetadata.from_json(store.get(cid))
        except (ContentStoreError, ValueError, MetadataError) as why:
            raise conflict(f"the Datanet's metadata {cid} cannot be used: {why}") from None
    return cache[cid]


def _prepare(request: Request, store: ContentStore, datanet_id: int) -> DatanetMetadata:
    with request.app.state.db.borrow() as db:
        datanet = require_datanet(db, datanet_id)
    return datanet_metadata(request, store, datanet["metadata_cid"])


def _keep(
    request: Request, store: ContentStore, datanet_id: int, metadata: DatanetMetadata, data: bytes
) -> tuple[int, str, int | None]:
    """Validates, stores and pins ``data``: (records, CID, contribution id if registered)."""
    try:
        records = validate_contribution(metadata, data)
    except ContributionFormatError as why:
        errors = [ErrorItem(line=e.line, reason=e.reason) for e in why.errors]
        raise APIError(422, str(why), errors) from None
    cid = store.put(data)
    store.pin(cid)
    with request.app.state.db.borrow() as db:
        existing = fetch_one(
            db, "SELECT id FROM contributions WHERE datanet_id = ? AND cid = ?", datanet_id, cid
        )
    return records, cid, existing[0] if existing else None


@router.post(
    "/{datanet_id}/uploads",
    response_model=UploadResult,
    status_code=201,
    responses=responses(400, 404, 409, 413, 422),
    openapi_extra=UPLOAD_FORM,
)
async def upload_contribution(
    request: Request, store: StoreDep, settings: SettingsDep, datanet_id: IdPath
) -> UploadResult:
    """Checks a file (multipart field ``file``) against the Datanet's format and size limit
    while it streams in, stores and pins it, and returns its CID for ``contribute``."""
    metadata = await run_in_threadpool(_prepare, request, store, datanet_id)
    limit = min(metadata.max_file_bytes, settings.max_upload_bytes)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise APIError(413, f"the upload is larger than the limit of {limit} bytes")
    try:
        upload = await read_file_part(
            request.headers.get("content-type"), request.stream(), "file", limit
        )
    except UploadTooLargeError as why:
        raise APIError(413, str(why)) from None
    except UploadError as why:
        raise APIError(400, str(why)) from None
    records, cid, contribution_id = await run_in_threadpool(
        _keep, request, store, datanet_id, metadata, upload.data
    )
    log.info("stored upload %s (%s) for datanet %d", cid, upload.filename, datanet_id)
    return UploadResult(
        datanet_id=datanet_id, cid=cid, size=len(upload.data), records=records, pinned=True,
        contribution_id=contribution_id,
    )  # fmt: skip
