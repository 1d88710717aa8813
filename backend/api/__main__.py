"""``python -m backend.api``: serve the API with uvicorn (``OPENLEDGER_API_*`` settings)."""

from __future__ import annotations

import logging

import uvicorn

from backend.api.config import Settings
from backend.api.main import create_app


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
