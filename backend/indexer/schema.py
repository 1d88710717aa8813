"""The indexer's SQLite database: raw events, processed blocks, and the read model.

Amounts are OPEN wei as decimal TEXT (they exceed SQLite's 64-bit integers); ids, block numbers
and unix timestamps are INTEGER. Addresses are checksummed, hashes and roots ``0x``-hex.
The read-model tables are derived from ``events`` alone, so they can be rebuilt at any time:
that is how a schema change is migrated. ``meta.schema_version`` records the read model's
version; opening an older database drops its read model, creates this version's and replays the
stored events into it (one transaction). A database of a newer version is refused.

Versions: 1, the first; 2, payments v2 (channels per payer and node instead of payer accounts,
session keys per channel with an allowance and a revocation that takes effect later, skipped
vouchers, a model's scheduled split change); 3, hardening (withdrawn contributions, a
node's stake held by open challenge windows and disputes, epochs swept after their claim
period).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# Read-model tables of older versions, dropped when a database is migrated.
OBSOLETE_TABLES = ("payer_accounts",)

RAW_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    block_number INTEGER NOT NULL,
    block_hash TEXT NOT NULL,
    block_timestamp INTEGER,
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    contract TEXT NOT NULL,
    address TEXT NOT NULL,
    event TEXT NOT NULL,
    args TEXT NOT NULL,
    UNIQUE (tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS events_position ON events (block_number, log_index);
CREATE INDEX IF NOT EXISTS events_name ON events (contract, event);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
"""

# A voucher's model id is the node's calldata: a voucher that is skipped, or paid nothing, is
# never checked against the registry, so its id may exceed SQLite's 64-bit integers. Those
# ``model_id`` columns have no type (no affinity): ids that fit are stored as INTEGER, the
# others as their decimal TEXT (INTEGER affinity would turn those into lossy REALs).
READ_MODEL_TABLES = {
    "parameters": """
        contract TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
        block_number INTEGER NOT NULL, PRIMARY KEY (contract, name)""",
    "datanets": """
        id INTEGER PRIMARY KEY, owner TEXT NOT NULL, metadata_cid TEXT NOT NULL,
        contribution_bond TEXT NOT NULL, min_approved INTEGER NOT NULL, treasury TEXT NOT NULL,
        contribution_count INTEGER NOT NULL DEFAULT 0, approved_count INTEGER NOT NULL DEFAULT 0,
        rejected_count INTEGER NOT NULL DEFAULT 0, version_count INTEGER NOT NULL DEFAULT 0,
        block_number INTEGER NOT NULL, created_at INTEGER, tx_hash TEXT NOT NULL""",
    "curators": """
        datanet_id INTEGER NOT NULL, account TEXT NOT NULL, PRIMARY KEY (datanet_id, account)""",
    "contributions": """
        id INTEGER PRIMARY KEY, datanet_id INTEGER NOT NULL, contributor TEXT NOT NULL,
        cid TEXT NOT NULL, size INTEGER NOT NULL, bond TEXT NOT NULL, status TEXT NOT NULL,
        curator TEXT, block_number INTEGER NOT NULL, created_at INTEGER, tx_hash TEXT NOT NULL,
        reviewed_block INTEGER, reviewed_log_index INTEGER, reviewed_at INTEGER,
        withdrawn_at INTEGER""",
    "versions": """
        datanet_id INTEGER NOT NULL, version INTEGER NOT NULL, merkle_root TEXT NOT NULL,
        contribution_count INTEGER NOT NULL, manifest_cid TEXT NOT NULL,
        block_number INTEGER NOT NULL, log_index INTEGER NOT NULL, published_at INTEGER,
        tx_hash TEXT NOT NULL, PRIMARY KEY (datanet_id, version)""",
    "models": """
        id INTEGER PRIMARY KEY, developer TEXT NOT NULL, metadata_cid TEXT NOT NULL,
        base_model_cid TEXT NOT NULL, attributor TEXT NOT NULL, status TEXT NOT NULL,
        version_count INTEGER NOT NULL DEFAULT 0, price_per_request TEXT NOT NULL DEFAULT '0',
        price_per_token TEXT NOT NULL DEFAULT '0', split_developer INTEGER NOT NULL DEFAULT 0,
        split_contributors INTEGER NOT NULL DEFAULT 0, split_node INTEGER NOT NULL DEFAULT 0,
        split_protocol INTEGER NOT NULL DEFAULT 0, scheduled_developer INTEGER,
        scheduled_contributors INTEGER, scheduled_node INTEGER, scheduled_protocol INTEGER,
        scheduled_at INTEGER, block_number INTEGER NOT NULL, created_at INTEGER,
        tx_hash TEXT NOT NULL""",
    "model_versions": """
        model_id INTEGER NOT NULL, version INTEGER NOT NULL, adapter_cid TEXT NOT NULL,
        training_manifest_cid TEXT NOT NULL, datanet_id INTEGER NOT NULL,
        datanet_version INTEGER NOT NULL, block_number INTEGER NOT NULL, published_at INTEGER,
        tx_hash TEXT NOT NULL, PRIMARY KEY (model_id, version)""",
    "nodes": """
        address TEXT PRIMARY KEY, bonded TEXT NOT NULL DEFAULT '0',
        unbonding TEXT NOT NULL DEFAULT '0', unbonding_unlock_at INTEGER NOT NULL DEFAULT 0,
        slashed TEXT NOT NULL DEFAULT '0', endpoint TEXT NOT NULL DEFAULT '',
        held_until INTEGER NOT NULL DEFAULT 0, open_disputes INTEGER NOT NULL DEFAULT 0,
        block_number INTEGER NOT NULL""",
    "channels": """
        payer TEXT NOT NULL, node TEXT NOT NULL, balance TEXT NOT NULL DEFAULT '0',
        deposited TEXT NOT NULL DEFAULT '0', spent TEXT NOT NULL DEFAULT '0',
        withdrawn TEXT NOT NULL DEFAULT '0', pending_withdrawal TEXT NOT NULL DEFAULT '0',
        withdrawal_unlock_at INTEGER NOT NULL DEFAULT 0,
        withdraw_delay INTEGER NOT NULL DEFAULT 0, block_number INTEGER NOT NULL,
        opened_at INTEGER, tx_hash TEXT NOT NULL, PRIMARY KEY (payer, node)""",
    "session_keys": """
        payer TEXT NOT NULL, node TEXT NOT NULL, signer TEXT NOT NULL, expiry INTEGER NOT NULL,
        allowance TEXT NOT NULL, valid_until INTEGER NOT NULL, revoked_block INTEGER,
        revoked_at INTEGER, block_number INTEGER NOT NULL, authorized_at INTEGER,
        tx_hash TEXT NOT NULL, PRIMARY KEY (payer, node, signer)""",
    "redemptions": """
        tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, payer TEXT NOT NULL,
        node TEXT NOT NULL, model_id NOT NULL, cumulative_amount TEXT NOT NULL,
        paid TEXT NOT NULL, shortfall TEXT NOT NULL, usage_proof_id INTEGER,
        block_number INTEGER NOT NULL, redeemed_at INTEGER, PRIMARY KEY (tx_hash, log_index)""",
    "skipped_vouchers": """
        tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, payer TEXT NOT NULL,
        node TEXT NOT NULL, model_id NOT NULL, idx INTEGER NOT NULL, reason TEXT NOT NULL,
        usage_proof_id INTEGER, block_number INTEGER NOT NULL, skipped_at INTEGER,
        PRIMARY KEY (tx_hash, log_index)""",
    "payment_splits": """
        tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, model_id INTEGER NOT NULL,
        node TEXT NOT NULL, developer TEXT NOT NULL, amount TEXT NOT NULL,
        node_share TEXT NOT NULL, developer_share TEXT NOT NULL,
        contributors_share TEXT NOT NULL, protocol_share TEXT NOT NULL,
        usage_proof_id INTEGER, block_number INTEGER NOT NULL,
        PRIMARY KEY (tx_hash, log_index)""",
    "usage_proofs": """
        id INTEGER PRIMARY KEY, node TEXT NOT NULL, receipts_root TEXT NOT NULL,
        receipt_count INTEGER NOT NULL, receipts_cid TEXT NOT NULL, amount TEXT NOT NULL,
        block_number INTEGER NOT NULL, recorded_at INTEGER, tx_hash TEXT NOT NULL""",
    "pools": """
        model_id INTEGER PRIMARY KEY, funded TEXT NOT NULL DEFAULT '0',
        unallocated TEXT NOT NULL DEFAULT '0', claimed TEXT NOT NULL DEFAULT '0'""",
    "epochs": """
        id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL, poster TEXT NOT NULL,
        merkle_root TEXT NOT NULL, total TEXT NOT NULL, claimed TEXT NOT NULL DEFAULT '0',
        report_cid TEXT NOT NULL, challenge_ends_at INTEGER NOT NULL, status TEXT NOT NULL,
        challenger TEXT, challenge_bond TEXT, reason_cid TEXT, slashed TEXT,
        claim_ends_at INTEGER, swept TEXT, swept_at INTEGER,
        block_number INTEGER NOT NULL, posted_at INTEGER, tx_hash TEXT NOT NULL""",
    "claims": """
        epoch_id INTEGER NOT NULL, idx INTEGER NOT NULL, account TEXT NOT NULL,
        amount TEXT NOT NULL, block_number INTEGER NOT NULL, claimed_at INTEGER,
        tx_hash TEXT NOT NULL, PRIMARY KEY (epoch_id, idx)""",
}

READ_MODEL_INDEXES = """
CREATE INDEX IF NOT EXISTS contributions_datanet ON contributions (datanet_id, id);
CREATE INDEX IF NOT EXISTS contributions_contributor ON contributions (contributor, id);
CREATE INDEX IF NOT EXISTS contributions_status ON contributions (datanet_id, status, id);
CREATE INDEX IF NOT EXISTS contributions_cid ON contributions (datanet_id, cid);
CREATE INDEX IF NOT EXISTS datanets_owner ON datanets (owner, id);
CREATE INDEX IF NOT EXISTS models_developer ON models (developer, id);
CREATE INDEX IF NOT EXISTS redemptions_payer ON redemptions (payer, block_number);
CREATE INDEX IF NOT EXISTS redemptions_node ON redemptions (node, block_number);
CREATE INDEX IF NOT EXISTS redemptions_position ON redemptions (block_number, log_index);
CREATE INDEX IF NOT EXISTS channels_position ON channels (block_number, payer, node);
CREATE INDEX IF NOT EXISTS channels_node ON channels (node, block_number, payer);
CREATE INDEX IF NOT EXISTS skipped_node ON skipped_vouchers (node, block_number, log_index);
CREATE INDEX IF NOT EXISTS skipped_payer ON skipped_vouchers (payer, block_number, log_index);
CREATE INDEX IF NOT EXISTS skipped_position ON skipped_vouchers (block_number, log_index);
CREATE INDEX IF NOT EXISTS skipped_proof ON skipped_vouchers (usage_proof_id);
CREATE INDEX IF NOT EXISTS usage_proofs_node ON usage_proofs (node, id);
CREATE INDEX IF NOT EXISTS epochs_model ON epochs (model_id, id);
CREATE INDEX IF NOT EXISTS claims_account ON claims (account, epoch_id);
"""


def connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer), rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class SchemaError(RuntimeError):
    """The database's schema cannot be used or migrated by this code."""


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The read model's version recorded in ``conn``'s database (None: not recorded yet)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _create_read_model(conn: sqlite3.Connection) -> None:
    for name, columns in READ_MODEL_TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
    for statement in READ_MODEL_INDEXES.split(";"):
        if statement.strip():
            conn.execute(statement)


def create_schema(conn: sqlite3.Connection) -> None:
    """Creates every table and index that is missing (idempotent), migrating the read model of
    an older schema version (see the module's docstring); raises :class:`SchemaError` for a
    newer version, or for stored events this code's projections cannot replay."""
    conn.execute("BEGIN IMMEDIATE")  # one writer decides and migrates; the others wait
    try:
        version = schema_version(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaError(
                f"the index has schema version {version}; this code reads up to "
                f"{SCHEMA_VERSION}: upgrade it, or index into another database file"
            )
        for statement in RAW_TABLES.split(";"):
            if statement.strip():
                conn.execute(statement)
        if version is not None and version < SCHEMA_VERSION:
            _migrate(conn, version)
        _create_read_model(conn)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Replaces a version-``version`` read model by this version's, rebuilt from the stored
    events (inside the caller's transaction)."""
    from backend.indexer import projections  # projections need this module's tables

    log.warning(
        "index schema %d -> %d: rebuilding the read model from the stored events",
        version, SCHEMA_VERSION,
    )  # fmt: skip
    for name in (*READ_MODEL_TABLES, *OBSOLETE_TABLES):
        conn.execute(f"DROP TABLE IF EXISTS {name}")
    _create_read_model(conn)
    try:
        projections.replay(conn)
    except projections.ProjectionError as why:
        raise SchemaError(
            f"cannot migrate the index from schema {version} to {SCHEMA_VERSION}: {why}; "
            "index the deployment into a new database file"
        ) from why


def clear_read_model(conn: sqlite3.Connection) -> None:
    """Empties the read-model tables (inside the caller's transaction)."""
    for name in READ_MODEL_TABLES:
        conn.execute(f"DELETE FROM {name}")


def open_database(path: Path | str) -> sqlite3.Connection:
    """A writable connection to the database at ``path``, created with its schema if new."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    create_schema(conn)
    return conn
