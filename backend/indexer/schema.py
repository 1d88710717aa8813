"""The indexer's SQLite database: raw events, processed blocks, and the read model.

Amounts are OPEN wei as decimal TEXT (they exceed SQLite's 64-bit integers); ids, block numbers
and unix timestamps are INTEGER. Addresses are checksummed, hashes and roots ``0x``-hex.
The read-model tables are derived from ``events`` alone, so they can be rebuilt at any time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

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
        reviewed_block INTEGER, reviewed_log_index INTEGER, reviewed_at INTEGER""",
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
        split_protocol INTEGER NOT NULL DEFAULT 0, block_number INTEGER NOT NULL,
        created_at INTEGER, tx_hash TEXT NOT NULL""",
    "model_versions": """
        model_id INTEGER NOT NULL, version INTEGER NOT NULL, adapter_cid TEXT NOT NULL,
        training_manifest_cid TEXT NOT NULL, datanet_id INTEGER NOT NULL,
        datanet_version INTEGER NOT NULL, block_number INTEGER NOT NULL, published_at INTEGER,
        tx_hash TEXT NOT NULL, PRIMARY KEY (model_id, version)""",
    "nodes": """
        address TEXT PRIMARY KEY, bonded TEXT NOT NULL DEFAULT '0',
        unbonding TEXT NOT NULL DEFAULT '0', unbonding_unlock_at INTEGER NOT NULL DEFAULT 0,
        slashed TEXT NOT NULL DEFAULT '0', endpoint TEXT NOT NULL DEFAULT '',
        block_number INTEGER NOT NULL""",
    "payer_accounts": """
        payer TEXT PRIMARY KEY, balance TEXT NOT NULL DEFAULT '0',
        pending_withdrawal TEXT NOT NULL DEFAULT '0',
        withdrawal_unlock_at INTEGER NOT NULL DEFAULT 0, deposited TEXT NOT NULL DEFAULT '0',
        spent TEXT NOT NULL DEFAULT '0', withdrawn TEXT NOT NULL DEFAULT '0',
        block_number INTEGER NOT NULL""",
    "session_keys": """
        payer TEXT NOT NULL, signer TEXT NOT NULL, expiry INTEGER NOT NULL,
        PRIMARY KEY (payer, signer)""",
    "redemptions": """
        tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, payer TEXT NOT NULL,
        node TEXT NOT NULL, model_id INTEGER NOT NULL, cumulative_amount TEXT NOT NULL,
        paid TEXT NOT NULL, shortfall TEXT NOT NULL, usage_proof_id INTEGER,
        block_number INTEGER NOT NULL, redeemed_at INTEGER, PRIMARY KEY (tx_hash, log_index)""",
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


def create_schema(conn: sqlite3.Connection) -> None:
    """Creates every table and index that is missing (idempotent)."""
    with conn:
        conn.executescript(RAW_TABLES)
        for name, columns in READ_MODEL_TABLES.items():
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
        conn.executescript(READ_MODEL_INDEXES)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )


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
