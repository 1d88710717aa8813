"""The API's routers, one module per resource."""

from fastapi import APIRouter

from backend.api.routes import (
    attribution,
    content,
    contributions,
    datanets,
    events,
    feedback,
    lineage,
    modelfactory,
    models,
    nodes,
    payments,
    stats,
    status,
    uploads,
    usage_proofs,
    versions,
)

api_router = APIRouter()
for module in (
    status, datanets, versions, contributions, uploads, models, nodes, payments, usage_proofs,
    attribution, events, modelfactory, feedback, lineage, stats, content,
):  # fmt: skip
    api_router.include_router(module.router)
