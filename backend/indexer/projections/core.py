"""The projections' registry and what every family shares: ``@on`` registers a handler per
(contract, event), :func:`apply` runs it (or records a governance parameter), :func:`replay`
rebuilds the read model from the stored events, and the helpers keep amounts (TEXT) and
uint64 values within SQLite's integers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable

from backend.indexer.abi import DecodedLog

Handler = Callable[[sqlite3.Connection, DecodedLog], None]
HANDLERS: dict[tuple[str, str], Handler] = {}

MAX_SQL_INTEGER = 2**63 - 1
PARAMETER_EVENTS = {
    "MinStakeSet": "minStake",
    "UnbondingDelaySet": "unbondingDelay",
    "SlasherSet": "slasher",
    "WithdrawalDelaySet": "withdrawalDelay",
    "TreasurySet": "treasury",
    "ProtocolBpsSet": "protocolBps",
    "ContributorsFloorBpsSet": "contributorsFloorBps",
    "ChallengeWindowSet": "challengeWindow",
    "ChallengeBondSet": "challengeBond",
    "SlashAmountSet": "slashAmount",
    "ClaimPeriodSet": "claimPeriod",
}


def on(contract: str, *events: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for event in events:
            HANDLERS[(contract, event)] = handler
        return handler

    return register


class ProjectionError(ValueError):
    """A stored event that this code's projections cannot apply (say, one logged by an older
    version of its contract, with other arguments)."""


def apply(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    """Applies ``ev`` to the read model (events without a projection only stay raw)."""
    handler = HANDLERS.get((ev.contract, ev.event))
    if handler is not None:
        handler(conn, ev)
    elif ev.event in PARAMETER_EVENTS:
        _set_parameter(conn, ev)


def stored_events(conn: sqlite3.Connection) -> Iterable[DecodedLog]:
    """The stored raw events in chain order."""
    rows = conn.execute(
        "SELECT block_number, block_hash, block_timestamp, tx_hash, log_index, contract,"
        " address, event, args FROM events ORDER BY block_number, log_index"
    )
    for row in rows.fetchall():
        yield DecodedLog(*row[:8], args=json.loads(row[8]))


def replay(conn: sqlite3.Connection) -> None:
    """Applies every stored event to the (empty) read model, in chain order, inside the
    caller's transaction; raises :class:`ProjectionError` for an event it cannot apply."""
    for ev in stored_events(conn):
        try:
            apply(conn, ev)
        except (KeyError, TypeError, ValueError) as why:
            raise ProjectionError(
                f"{ev.contract}.{ev.event} at block {ev.block_number} (tx {ev.tx_hash}, log "
                f"{ev.log_index}) does not fit this version's projection "
                f"({type(why).__name__}: {why})"
            ) from why


def _set_parameter(conn: sqlite3.Connection, ev: DecodedLog) -> None:
    (value,) = ev.args.values()
    conn.execute(
        "INSERT INTO parameters (contract, name, value, block_number) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (contract, name) DO UPDATE SET value = excluded.value, "
        "block_number = excluded.block_number",
        (ev.contract, PARAMETER_EVENTS[ev.event], str(value), ev.block_number),
    )


def _match(where: str | tuple[str, ...], key: object) -> tuple[str, tuple[object, ...]]:
    if isinstance(where, str):
        return f"{where} = ?", (key,)
    assert isinstance(key, tuple) and len(key) == len(where)
    return " AND ".join(f"{column} = ?" for column in where), key


def read_amount(
    conn: sqlite3.Connection, table: str, column: str, where: str | tuple[str, ...], key: object
) -> int:
    condition, params = _match(where, key)
    row = conn.execute(f"SELECT {column} FROM {table} WHERE {condition}", params).fetchone()
    return int(row[0]) if row else 0


def add_amount(
    conn: sqlite3.Connection,
    table: str,
    column: str,
    where: str | tuple[str, ...],
    key: object,
    delta: int,
) -> None:
    """``table.column += delta`` for the row whose ``where`` is ``key`` (amounts are TEXT;
    ``where`` is a column, or a tuple of columns with ``key`` the tuple of their values)."""
    value = read_amount(conn, table, column, where, key) + delta
    condition, params = _match(where, key)
    conn.execute(f"UPDATE {table} SET {column} = ? WHERE {condition}", (str(value), *params))


def sql_time(value: int) -> int:
    """A uint64 time as an SQLite integer: times past 2^63 - 1 s (never, in practice) are
    stored as 2^63 - 1."""
    return min(value, MAX_SQL_INTEGER)


def sql_model_id(value: int) -> int | str:
    """A model id from a voucher: the integer when SQLite can hold it, else its decimal text
    (see ``schema.READ_MODEL_TABLES``)."""
    return value if value <= MAX_SQL_INTEGER else str(value)
