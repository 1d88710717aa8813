"""The web app (explorer, contributor, playground) served at ``/`` by the API process.

It is built from ``webapp/`` by ``make webapp`` (npm, esbuild: no CDN at run time). Routes are
hash routes, so ``/`` (``index.html``) serves every page and its files are under ``/assets``.
Nothing is mounted at ``/``: a catch-all mount would answer the API's paths for methods they do
not have (``OPTIONS`` on a POST route would get the static files' ``Allow: GET, HEAD``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>OpenLedger</title>
<p>The OpenLedger web app is not built in {where}: run <code>make webapp</code> (or
<code>make up</code>, which builds it), then reload. The API is at <a href="/docs">/docs</a>.</p>
"""


def mount_webapp(app: FastAPI, webapp_dir: Path | None) -> None:
    """Serves the built app from ``webapp_dir``, or a page saying how to build it."""
    if webapp_dir is None:
        return
    index = webapp_dir / "index.html"
    if index.is_file():
        app.mount("/assets", StaticFiles(directory=webapp_dir / "assets"), name="webapp")

        @app.get("/", include_in_schema=False, response_class=FileResponse)
        def webapp_index() -> FileResponse:
            # always revalidated: it names the current bundle
            return FileResponse(index, headers={"Cache-Control": "no-cache"})

        log.info("web app from %s", webapp_dir)
        return
    log.warning("the web app is not built in %s: run `make webapp`", webapp_dir)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse, status_code=503)
    def webapp_not_built() -> str:
        return NOT_BUILT.format(where=webapp_dir)
