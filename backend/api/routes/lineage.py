"""A model version's lineage: the data it trained on and what its training produced."""

from fastapi import APIRouter

from backend.api.deps import DbDep, IdPath, StoreDep
from backend.api.errors import not_found, responses
from backend.api.lineage import find_artifacts
from backend.api.queries import chain_time, fetch_one
from backend.api.routes.models import require_model, to_model, to_model_version
from backend.api.routes.versions import to_version
from backend.api.schemas_webapp import ModelLineage

router = APIRouter(prefix="/models", tags=["models"], responses=responses(404, 422))


@router.get("/{model_id}/versions/{version}/lineage", response_model=ModelLineage)
def get_lineage(db: DbDep, store: StoreDep, model_id: IdPath, version: IdPath) -> ModelLineage:
    """One adapter version's lineage: Datanet version, manifest, adapter, evaluation and loss
    curve, with the model's split, pricing and status."""
    model = require_model(db, model_id)
    row = fetch_one(
        db, "SELECT * FROM model_versions WHERE model_id = ? AND version = ?", model_id, version
    )
    if row is None:
        raise not_found(f"version {version} of model {model_id}")
    datanet_version = fetch_one(
        db, "SELECT * FROM versions WHERE datanet_id = ? AND version = ?",
        row["datanet_id"], row["datanet_version"],
    )  # fmt: skip
    found = find_artifacts(store, model, row)
    notes = list(found.notes)
    if datanet_version is None:
        notes.append(f"datanet {row['datanet_id']} version {row['datanet_version']} is not indexed")
    return ModelLineage(
        model=to_model(model, chain_time(db)),
        version=to_model_version(row),
        datanet_version=None if datanet_version is None else to_version(datanet_version),
        metadata_cid=model["metadata_cid"],
        evaluation=found.evaluation,
        loss_curve=found.loss_curve,
        attribution_index_cid=found.attribution_index,
        notes=notes,
    )
