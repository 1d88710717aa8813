"""ModelFactory jobs: start training on a published Datanet version, and follow it.

Publishing a trained job stays in the CLI (``ape run modelfactory publish``): it signs with the
developer's key, which the API never holds.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send
from web3 import Web3

from backend.api.config import Settings
from backend.api.deps import DbDep, IdPath, PageDep, SettingsDep
from backend.api.errors import APIError, ErrorItem, ErrorResponse, conflict, not_found
from backend.api.jobs import JobInfo, JobRunner
from backend.api.queries import fetch_one
from backend.api.schemas import Page
from backend.modelfactory.spec import BUILTIN_BASE, JobSpec, JobSpecError
from backend.modelfactory.worker import JobRequest
from backend.storage.base import ContentStore
from backend.storage.ipfs import IPFSStore
from backend.storage.local import DirectoryStore

JSON = "application/json"
CHAIN_TIMEOUT = 3.0  # seconds to wait for the chain's answer before refusing a job
_ERRORS = {
    400: "The body is not JSON",
    404: "No such job; or the Datanet version, model or base model folder is not known",
    409: "The index does not know the deployment yet, or the chain jobs read does not answer",
    422: "Invalid job specification (the reason names the field and the value)",
}


class _SharedPathRoute(APIRoute):
    """A route whose 405 answer allows every method its path serves (Starlette's names only
    the first route that matched the path: POST, for ``/jobs``, hiding GET)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().handle(scope, receive, send)
        except StarletteHTTPException as exc:
            if exc.status_code != 405:
                raise
            siblings = [r for r in router.routes if isinstance(r, APIRoute) and r.path == self.path]
            allow = ", ".join(sorted({m for r in siblings for m in r.methods}))
            raise StarletteHTTPException(405, headers={"Allow": allow}) from None


router = APIRouter(
    prefix="/modelfactory",
    tags=["modelfactory"],
    responses={c: {"model": ErrorResponse, "description": d} for c, d in _ERRORS.items()},
    route_class=_SharedPathRoute,
)

# --- the job spec's JSON schema: JobSpec's own (fields, bounds, defaults), inlined


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its ``$ref``s to ``$defs`` replaced by the definitions."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _job_schema() -> dict[str, Any]:
    """JobSpec's schema as one branch per method: DPO's requires ``model_id`` (the rule
    JobSpec checks across fields, in the form a JSON schema states it)."""
    schema = TypeAdapter(JobSpec).json_schema()
    spec = _inline(schema, schema.get("$defs", {}))
    props = spec["properties"]
    model_id = next(s for s in props["model_id"]["anyOf"] if s.get("type") == "integer")
    sft = {
        **spec,
        "title": "SFTJobCreate",
        "description": "Supervised fine-tuning; with ``model_id``, the result is that model's "
        "next version.",
        "properties": {**props, "method": {"const": "sft", "default": "sft", "type": "string"}},
    }
    dpo = {
        **spec,
        "title": "DPOJobCreate",
        "description": "DPO on a Datanet of preference pairs, improving model ``model_id``'s "
        "current adapter.",
        "properties": {
            **props,
            "method": {"const": "dpo", "type": "string"},
            "model_id": {**model_id, "description": props["model_id"].get("description")},
        },
        "required": [*spec.get("required", []), "method", "model_id"],
    }
    return {"anyOf": [sft, dpo]}


# --- answers


class JobAccepted(BaseModel):
    id: int
    state: str
    status_url: str


class Progress(BaseModel):
    step: int
    total: int


class JobPublic(BaseModel):
    id: int
    state: Literal["queued", "running", "succeeded", "failed"]
    spec: dict[str, Any]
    submitted_at: float  # unix seconds
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None  # training steps done, of the total
    error: str | None = None  # why it failed
    summary: dict[str, Any] | None = None  # eval summary: data counts, losses or preferences
    artifacts: list[str] = []  # files in the job's work folder


def _public(info: JobInfo) -> JobPublic:
    return JobPublic.model_validate(info, from_attributes=True)


def get_runner(request: Request) -> JobRunner:
    return request.app.state.jobs


RunnerDep = Annotated[JobRunner, Depends(get_runner)]


# --- parsing and checking a job before it is queued: one that cannot run is refused now


def _parse(raw: bytes) -> JobSpec:
    """The spec in ``raw``; 422 naming each field JobSpec refuses, the first in the reason."""
    try:
        body = json.loads(raw)
    except ValueError as why:
        raise APIError(400, f"the body is not JSON: {why}") from None
    try:
        return JobSpec.from_json(body)
    except JobSpecError as why:
        items = [ErrorItem(reason=r, loc=f.split(".") if f else None) for f, r in why.problems]
        raise APIError(422, str(why), items) from None


def _deployment(db: sqlite3.Connection) -> tuple[int, dict[str, str]]:
    """The chain id and contract addresses the index follows."""
    row = db.execute("SELECT value FROM meta WHERE key = 'deployment'").fetchone()
    deployment = json.loads(row[0]) if row is not None else {}
    if "chain_id" not in deployment or not deployment.get("contracts"):
        raise conflict("the index does not know the deployment yet: run the indexer first")
    return int(deployment["chain_id"]), dict(deployment["contracts"])


def _check_inputs(db: sqlite3.Connection, spec: JobSpec) -> None:
    """404 unless the index knows the Datanet version and model, and the base model exists;
    409 for a CUDA job on a server without a GPU."""
    datanet = db.execute(
        "SELECT version_count FROM datanets WHERE id = ?", (spec.datanet_id,)
    ).fetchone()
    if datanet is None:
        raise not_found(f"Datanet {spec.datanet_id}")
    published = int(datanet[0])
    if spec.version > published:
        raise APIError(
            404,
            f"Datanet {spec.datanet_id} version {spec.version} is not published (published "
            f"versions: {f'1..{published}' if published else 'none'})",
        )
    model = spec.model_id
    if model is not None and fetch_one(db, "SELECT 1 FROM models WHERE id = ?", model) is None:
        raise not_found(f"model {model}")
    if spec.base_model != BUILTIN_BASE and not (Path(spec.base_model) / "config.json").is_file():
        raise APIError(
            404, f"base model folder {spec.base_model!r} not found on the server (no config.json)"
        )
    if spec.train.device == "cuda":
        import torch  # only here: the API process has no other use for it

        if not torch.cuda.is_available():
            raise conflict("train.device is 'cuda' but this server has no CUDA device")


def _check_chain(rpc_url: str, chain_id: int) -> None:
    """Refuses a job now if its worker could not read the chain (down, or another chain)."""
    try:
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": CHAIN_TIMEOUT}))
        actual = w3.eth.chain_id
    except Exception as why:  # connection errors of requests, bad URLs, JSON-RPC errors
        raise conflict(
            f"the chain at {rpc_url} does not answer ({type(why).__name__}); a job reads it, "
            "so none can start"
        ) from None
    if actual != chain_id:
        raise conflict(
            f"the chain at {rpc_url} is chain {actual}, not the indexed chain {chain_id}"
        )


def _store_spec(store: ContentStore, settings: Settings) -> str:
    """The app's content store as the worker opens it."""
    if isinstance(store, DirectoryStore):
        return str(store.root.resolve())
    if isinstance(store, IPFSStore):
        return store.api
    return settings.ipfs_api or str(settings.content_dir.resolve())


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": _job_schema()}}}},
)
async def start_job(
    request: Request, db: DbDep, runner: RunnerDep, settings: SettingsDep, response: Response
) -> JobAccepted:
    """Starts training on a published Datanet version (queued while other jobs run)."""
    spec = _parse(await request.body())
    chain_id, contracts = _deployment(db)
    _check_inputs(db, spec)
    await run_in_threadpool(_check_chain, settings.rpc_url, chain_id)
    job = JobRequest(
        spec, settings.rpc_url, chain_id, contracts,
        _store_spec(request.app.state.store, settings), settings.models_dir.resolve(),
    )  # fmt: skip
    info = await run_in_threadpool(runner.submit, job)
    url = str(request.url_for("get_job", job_id=info.id).path)
    response.headers["location"] = url
    return JobAccepted(id=info.id, state=info.state, status_url=url)


@router.get("/jobs", response_model=Page[JobPublic])
def list_jobs(runner: RunnerDep, page: PageDep) -> Page[JobPublic]:
    """Training jobs, oldest first."""
    jobs = runner.list()
    items = [_public(j) for j in jobs[page.offset : page.offset + page.limit]]
    return Page(items=items, total=len(jobs), limit=page.limit, offset=page.offset)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(runner: RunnerDep, job_id: IdPath) -> JobPublic:
    """One job: state, training progress, eval summary, artifact files, or why it failed."""
    info = runner.get(job_id)
    if info is None:
        raise not_found(f"job {job_id}")
    return _public(info)
