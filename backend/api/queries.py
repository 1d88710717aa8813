"""Paged SQL over the read model: the count and one page of rows, filters as bound parameters;
the one row (or Merkle leaf) a path names, or 404."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from backend.api.deps import PageRequest
from backend.api.errors import conflict, not_found
from backend.api.proofs import IndexedTree, ProofUnavailableError
from backend.api.schemas import Page

T = TypeVar("T")


def where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE a = ? AND b >= ?`` for the filters that are set. A key is a column (compared
    with ``=``) or a condition with one ``?``; keys come from code, values are bound."""
    used = {key: value for key, value in filters.items() if value is not None}
    if not used:
        return "", []
    conditions = [key if "?" in key else f"{key} = ?" for key in used]
    return " WHERE " + " AND ".join(conditions), list(used.values())


def fetch_page(
    conn: sqlite3.Connection,
    source: str,
    page: PageRequest,
    *,
    filters: dict[str, Any] | None = None,
    order: str,
    columns: str = "*",
) -> tuple[list[sqlite3.Row], int]:
    """One page of ``source`` (a table or join) and how many rows match in total."""
    clause, params = where(filters or {})
    total = conn.execute(f"SELECT COUNT(*) FROM {source}{clause}", params).fetchone()[0]
    rows = conn.execute(
        f"SELECT {columns} FROM {source}{clause} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, page.limit, page.offset],
    ).fetchall()
    return rows, int(total)


def page_of(
    conn: sqlite3.Connection,
    source: str,
    page: PageRequest,
    item: Callable[[sqlite3.Row], T],
    *,
    filters: dict[str, Any] | None = None,
    order: str,
    columns: str = "*",
) -> Page[T]:
    """The response of a list route: :func:`fetch_page`'s rows, each made an ``item``."""
    rows, total = fetch_page(conn, source, page, filters=filters, order=order, columns=columns)
    return Page(items=[item(r) for r in rows], total=total, limit=page.limit, offset=page.offset)


def fetch_one(conn: sqlite3.Connection, sql: str, *params: Any) -> sqlite3.Row | None:
    return conn.execute(sql, params).fetchone()


def require_one(conn: sqlite3.Connection, what: str, sql: str, *params: Any) -> sqlite3.Row:
    """The row ``sql`` selects; 404 "``what`` not found" when there is none."""
    row = fetch_one(conn, sql, *params)
    if row is None:
        raise not_found(what)
    return row


def require_leaf(build: Callable[[], IndexedTree], key: int, what: str) -> tuple[IndexedTree, int]:
    """The checked tree ``build`` gives (409 when its data cannot give one) and the row of its
    leaf ``key`` (404 "``what`` not found" when it has none)."""
    try:
        tree = build()
    except ProofUnavailableError as why:
        raise conflict(str(why)) from None
    rows = tree.positions.get(key)
    if not rows:
        raise not_found(what)
    return tree, rows[0]


def chain_time(conn: sqlite3.Connection) -> int | None:
    """The timestamp of the last indexed block (the index's notion of "now")."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'cursor_timestamp'").fetchone()
    if row is not None:
        return int(row[0])
    row = conn.execute("SELECT MAX(block_timestamp) FROM events").fetchone()
    return None if row is None or row[0] is None else int(row[0])
