"""The node's own endpoints: ``/health``, ``/node/status`` and ``/node/redeem``."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request

from inference_node.server.deps import NodeDep
from inference_node.server.errors import APIError

LOOPBACK = {"127.0.0.1", "::1"}

router = APIRouter()


@router.get("/health")
async def health(node: NodeDep) -> dict[str, Any]:
    return {"status": "ok", "node": node.address}


@router.get("/node/status")
async def status(node: NodeDep) -> dict[str, Any]:
    return await to_thread.run_sync(node.status)


@router.post("/node/redeem")
async def redeem(request: Request, node: NodeDep) -> dict[str, Any]:
    """Redeems now (operators' ``redeem-now``); accepted from loopback clients only."""
    if request.client is None or request.client.host not in LOOPBACK:
        raise APIError(403, "redeem is accepted from the node's own host only", "forbidden")
    done = await to_thread.run_sync(node.redeem_now)
    if not done:
        return {"redeemed": False, "redemptions": []}
    batches = [
        {
            "redemption_id": r.id,
            "status": r.status,
            "tx_hash": r.tx_hash,
            "usage_proof_id": r.proof_id,
            "paid": str(r.paid) if r.paid is not None else None,
            "receipts": r.receipt_count,
            "receipts_cid": r.receipts_cid,
        }
        for r in done
    ]
    # The last batch's fields at the top level too: one batch is the common case.
    redeemed = all(r.status == "confirmed" for r in done)
    return {"redeemed": redeemed, **batches[-1], "redemptions": batches}
