"""The API's settings, read from ``OPENLEDGER_API_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.protocol.deployments import PROJECT_ROOT

DEVNET_DIR = PROJECT_ROOT / ".data" / "devnet"


class Settings(BaseSettings):
    """Where the index and the content are, and the service's limits."""

    model_config = SettingsConfigDict(env_prefix="OPENLEDGER_API_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    db_path: Path = DEVNET_DIR / "index.db"  # the indexer's SQLite file
    content_dir: Path = DEVNET_DIR / "store"  # the embedded content store ...
    ipfs_api: str | None = None  # ... or an IPFS node's HTTP RPC API, when set
    ipfs_read_timeout: float = 30.0  # seconds a read waits for the node's next byte
    max_upload_bytes: int = 10 * 1024 * 1024  # cap on any upload, whatever the Datanet allows
    max_content_bytes: int = 64 * 1024 * 1024  # cap on what GET /content/{cid} reads and serves
    data_dir: Path | None = None  # training jobs and feedback; default: "api" beside db_path
    rpc_url: str = "http://127.0.0.1:8545"  # the chain that training jobs read
    public_rpc_url: str | None = None  # the JSON-RPC URL a browser may read the chain from
    models_dir: Path = PROJECT_ROOT / ".data"  # the built-in base model is converted under it
    max_jobs: int = 1  # training jobs at once (each takes every core); the others wait queued
    cors_origins: list[str] = []
    webapp_dir: Path | None = PROJECT_ROOT / "webapp" / "dist"  # the built web app (None: off)
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and "*" in self.cors_origins:
            raise ValueError("cors_origins '*' is refused in production: list the origins")
        if self.max_upload_bytes <= 0:
            raise ValueError(f"max_upload_bytes must be positive, not {self.max_upload_bytes}")
        if self.max_content_bytes <= 0:
            raise ValueError(f"max_content_bytes must be positive, not {self.max_content_bytes}")
        if self.ipfs_read_timeout <= 0:
            raise ValueError(f"ipfs_read_timeout must be positive, not {self.ipfs_read_timeout}")
        if self.max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, not {self.max_jobs}")
        return self

    @property
    def state_dir(self) -> Path:
        """Where the API keeps its own state (jobs, feedback)."""
        return self.data_dir or self.db_path.parent / "api"
