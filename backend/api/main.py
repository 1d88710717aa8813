"""The FastAPI application: routers under ``/api/v1``, JSON errors, OpenAPI at ``/openapi.json``
(docs at ``/docs``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from backend.api import errors
from backend.api.config import Settings
from backend.api.deps import Database
from backend.api.feedback import FeedbackService
from backend.api.jobs import JobRunner
from backend.api.proofs import ProofCache
from backend.api.routes import api_router
from backend.api.webapp import mount_webapp
from backend.storage.base import ContentStore
from backend.storage.ipfs import IPFSStore
from backend.storage.local import DirectoryStore

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)


def content_store(settings: Settings) -> ContentStore:
    """The IPFS node's store when ``ipfs_api`` is set, else the embedded directory store."""
    if settings.ipfs_api:
        return IPFSStore(settings.ipfs_api, read_timeout=settings.ipfs_read_timeout)
    return DirectoryStore(settings.content_dir)


def create_app(settings: Settings | None = None, store: ContentStore | None = None) -> FastAPI:
    """The API over the index at ``settings.db_path`` and the configured content store."""
    settings = settings or Settings()
    app = FastAPI(
        title="OpenLedger API",
        version="1",
        summary="Datanets, models, nodes, payments and attribution, read from the chain's index",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.db = Database(str(settings.db_path))
    app.state.store = store or content_store(settings)
    app.state.proofs = ProofCache()
    app.state.metadata = {}
    app.state.jobs = JobRunner(settings.state_dir / "jobs", max_jobs=settings.max_jobs)
    app.state.feedback = FeedbackService(
        settings.state_dir / "feedback", app.state.db, app.state.store
    )
    errors.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"]
        )
    app.include_router(api_router, prefix=API_PREFIX)
    mount_webapp(app, settings.webapp_dir)
    log.info("API over %s", settings.db_path)
    return app
