"""Raw content by CID, verified by the store on read, so a browser can fetch any Datanet file,
manifest, adapter, report or receipts log and recompute its CID itself."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response

from backend.api.deps import SettingsDep, StoreDep
from backend.api.errors import APIError, ErrorResponse, responses
from backend.storage.base import (
    CIDMismatchError,
    ContentNotFoundError,
    ContentStoreError,
    ContentTooLargeError,
)
from backend.storage.cid import CID, InvalidCIDError

router = APIRouter(prefix="/content", tags=["content"])

# Content addressed: the bytes under a CID never change, so any cache may keep them for good.
IMMUTABLE = "public, max-age=31536000, immutable"
_OCTETS = "application/octet-stream"
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The bytes stored under the CID, verified against it",
    },
    304: {"description": "Not modified: the If-None-Match header names this CID's ETag"},
    **responses(404, 422, 502),
    413: {"model": ErrorResponse, "description": "The content exceeds max_content_bytes"},
}


# Exactly the canonical base32 sha2-256 CIDv1s of raw (bafkrei...) or dag-pb (bafybei...) files:
# 36 bytes, so the first free character holds 2 zero bits of the digest length and the last
# one 2 zero padding bits. A string that matches is a CID the store can verify.
CID_PATTERN = r"^baf(kre|ybe)i[a-h][a-z2-7]{50}[aeimquy4]$"


def _etag(cid: str) -> str:
    return f'"{cid}"'


@router.get(
    "/{cid}", response_class=Response, response_model=None, responses=_ANSWERS
)  # a byte body: no JSON model to validate
def get_content(
    store: StoreDep,
    settings: SettingsDep,
    cid: Annotated[
        str,
        Path(pattern=CID_PATTERN, description="CIDv1, base32 (as `ipfs add --cid-version=1`)"),
    ],
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The raw bytes stored under a CID, verified against it, up to the size cap."""
    try:
        CID.parse(cid)  # the pattern admits only CIDs: a guard should it ever admit more
    except InvalidCIDError as why:
        raise APIError(422, str(why)) from None
    headers = {"ETag": _etag(cid), "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if if_none_match is not None and _etag(cid) in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    try:
        data = store.get(cid, max_bytes=settings.max_content_bytes)
    except ContentTooLargeError:
        limit = settings.max_content_bytes
        raise APIError(
            413, f"content {cid} exceeds this API's max_content_bytes ({limit})"
        ) from None
    except ContentNotFoundError as why:  # an IPFS node's read timeout included: it says so
        raise APIError(404, str(why)) from None
    except CIDMismatchError as why:
        raise APIError(502, f"the content store returned bad bytes: {why}") from None
    except ContentStoreError as why:
        raise APIError(502, f"the content store is unreachable or failed: {why}") from None
    return Response(data, media_type=_OCTETS, headers=headers)
