"""Dependencies of the routes, as ``Annotated`` aliases: settings, the index, the content store,
the Merkle proof cache, paging, and validated path values."""

from __future__ import annotations

import queue
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator

from backend.api.config import Settings
from backend.api.proofs import ProofCache
from backend.indexer.schema import connect, create_schema
from backend.protocol.amounts import INT64_MAX
from backend.storage.base import ContentStore

MAX_PAGE_LIMIT = 200
MAX_OFFSET = 2**31 - 1
MAX_ID = INT64_MAX  # SQLite integers
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


class Database:
    """A pool of read-only connections to the index (WAL: never blocked by the indexer's
    writes). Each request borrows one for itself, whichever thread runs it."""

    def __init__(self, path: str) -> None:
        self.path = path
        writer = connect(path)  # creates the file and its tables if the indexer has not yet
        create_schema(writer)
        writer.close()
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()

    @contextmanager
    def borrow(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = connect(self.path, readonly=True)
        try:
            yield conn
        finally:
            self._idle.put(conn)


async def get_db(request: Request) -> AsyncIterator[sqlite3.Connection]:
    with request.app.state.db.borrow() as conn:
        yield conn


DbDep = Annotated[sqlite3.Connection, Depends(get_db)]


async def get_store(request: Request) -> ContentStore:
    return request.app.state.store


StoreDep = Annotated[ContentStore, Depends(get_store)]


async def get_proofs(request: Request) -> ProofCache:
    return request.app.state.proofs


ProofsDep = Annotated[ProofCache, Depends(get_proofs)]


@dataclass(frozen=True)
class PageRequest:
    """``limit`` and ``offset`` of a list request (the response is ``schemas.Page``)."""

    limit: int
    offset: int


async def get_page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")] = 0,
) -> PageRequest:
    return PageRequest(limit, offset)


PageDep = Annotated[PageRequest, Depends(get_page)]


@lru_cache(maxsize=4_096)
def checksum(address: str) -> str:
    """``address`` checksummed; raises ValueError unless it is 0x and 40 hex digits."""
    if not re.fullmatch(ADDRESS_PATTERN, address):
        raise ValueError(f"{address!r} is not an address (0x and 40 hex digits)")
    return to_checksum_address(address)


AddressPath = Annotated[
    str, Path(pattern=ADDRESS_PATTERN, description="0x address"), AfterValidator(checksum)
]
# A filter: "" (the default) matches any address. Not Optional, so the schema stays a plain
# patterned string (a nullable one is sent as "" by clients that cannot send null).
AddressQuery = Annotated[
    str, Query(pattern=ADDRESS_PATTERN, description="0x address"), AfterValidator(checksum)
]
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=0, le=MAX_ID)]
