"""The payments v2 projections against a real anvil (channels per payer and node, session keys
per channel and their revocation, skipped vouchers, scheduled splits) and the migration of an
index of schema 1."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest

from backend.indexer import projections
from backend.indexer.schema import (
    SCHEMA_VERSION,
    SchemaError,
    clear_read_model,
    open_database,
    schema_version,
)
from tests.indexer.payments_history import (
    DAY,
    FIRST_SPLIT,
    HUGE_MODEL_ID,
    SECOND_SPLIT,
    PaymentsHistory,
    add_payments_v2,
)
from tests.indexing import dump, new_indexer
from tests.protocol_history import OPEN, History

SPLIT_COLUMNS = "split_developer, split_contributors, split_node, split_protocol"
SCHEDULED_COLUMNS = (
    "scheduled_developer, scheduled_contributors, scheduled_node, scheduled_protocol, scheduled_at"
)


@pytest.fixture(scope="module")
def payments(chain) -> PaymentsHistory:
    return add_payments_v2(chain[1])


@pytest.fixture(scope="module")
def indexed(chain, payments, decoders, tmp_path_factory) -> Iterator[sqlite3.Connection]:
    """The whole history, indexed (read-only use)."""
    anvil, history = chain
    indexer = new_indexer(tmp_path_factory.mktemp("v2") / "index.db", anvil.url, history,
                          decoders)  # fmt: skip
    indexer.sync_once()
    yield indexer.conn
    indexer.close()


def _rows(conn: sqlite3.Connection, sql: str, *params: object) -> list[tuple]:
    return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def test_the_constants_the_projections_assume_are_the_contracts(chain):
    p = chain[1].protocol
    assert p["InferencePayments"].functions.WITHDRAWAL_WINDOW().call() == (
        projections.WITHDRAWAL_WINDOW
    )
    assert p["ModelRegistry"].functions.SPLIT_CHANGE_DELAY().call() == (
        projections.SPLIT_CHANGE_DELAY
    )


def test_channels_are_indexed_per_payer_and_node(chain, payments, indexed):
    h: History = chain[1]
    r, payments_contract = h.roles, h.protocol["InferencePayments"].functions
    channels = _rows(
        indexed,
        "SELECT payer, node, balance, deposited, spent, withdrawn, pending_withdrawal,"
        " withdrawal_unlock_at, withdraw_delay FROM channels ORDER BY block_number",
    )
    assert channels == [
        (r.payer, r.node, str(82 * OPEN), str(100 * OPEN), str(13 * OPEN), str(5 * OPEN), "0",
         0, DAY),
        (r.payer, payments.other_node, str(20 * OPEN), str(20 * OPEN), "0", "0", str(3 * OPEN),
         payments.withdrawal_unlock_at, DAY),
    ]  # fmt: skip
    for payer, node, balance, *_, pending, unlock_at, delay in channels:
        on_chain = payments_contract.channel(payer, node).call()
        assert tuple(on_chain) == (int(balance), int(pending), unlock_at, delay)
    # Alice's voucher paid nothing (she has no channel): no channel appears for it.
    assert _rows(indexed, "SELECT * FROM channels WHERE payer = ?", r.alice) == []


def test_a_revoked_session_key_stays_until_valid_until(chain, payments, indexed, decoders,
                                                       tmp_path):  # fmt: skip
    anvil, h = chain
    r, payments_contract = h.roles, h.protocol["InferencePayments"].functions
    # Right after the revocation: the key is still there, revoked, valid for the delay.
    indexer = new_indexer(tmp_path / "index.db", anvil.url, h, decoders)
    indexer.sync_once(max_block=payments.revoked_block)
    key = _rows(indexer.conn, "SELECT expiry, allowance, valid_until, revoked_block FROM"
                " session_keys WHERE signer = ?", r.challenger)  # fmt: skip
    assert key == [(2**40, str(50 * OPEN), payments.revoked_valid_until, payments.revoked_block)]
    indexer.close()
    # At the end: the same, and what the contract says.
    keys = _rows(
        indexed,
        "SELECT node, signer, expiry, allowance, valid_until, revoked_block IS NOT NULL"
        " FROM session_keys ORDER BY block_number",
    )
    assert keys == [
        (r.node, r.challenger, 2**40, str(50 * OPEN), payments.revoked_valid_until, 1),
        (r.node, payments.late_key, payments.late_expiry, str(OPEN),
         payments.late_valid_until, 1),
    ]  # fmt: skip
    for node, signer, _, allowance, valid_until, _ in keys:
        on_chain = payments_contract.sessionKey(r.payer, node, signer).call()
        assert (on_chain[0], on_chain[1]) == (valid_until, int(allowance))
    # Its voucher within the delay was paid, the one after it skipped.
    paid = _rows(indexed, "SELECT usage_proof_id, paid FROM redemptions WHERE usage_proof_id"
                 " IN (?, ?)", *payments.proofs[:2])  # fmt: skip
    assert sorted(paid) == [(payments.proofs[0], str(2 * OPEN)), (payments.proofs[1], str(OPEN))]


def test_skipped_vouchers_are_recorded_with_their_reason(chain, payments, indexed):
    r = chain[1].roles
    skipped = _rows(
        indexed,
        "SELECT usage_proof_id, idx, payer, node, model_id, reason FROM skipped_vouchers"
        " ORDER BY block_number, log_index",
    )
    first, _, last = payments.proofs
    assert skipped == [
        (first, 1, r.payer, r.node, 1, "not_above_redeemed"),
        (first, 2, r.payer, r.node, 1, "expired"),
        (first, 3, r.payer, r.node, str(HUGE_MODEL_ID), "invalid_signer"),
        (last, 0, r.payer, r.node, 1, "session_key_not_live"),
    ]
    # A voucher of a payer without a channel is redeemed for nothing, whatever its model id.
    zero = _rows(indexed, "SELECT payer, model_id, paid, shortfall FROM redemptions WHERE"
                 " usage_proof_id = ?", last)  # fmt: skip
    assert zero == [(r.alice, str(HUGE_MODEL_ID), "0", str(OPEN))]
    proof = indexed.execute("SELECT amount FROM usage_proofs WHERE id = ?", (last,)).fetchone()
    assert proof[0] == "0"


def test_a_scheduled_split_takes_effect_at_its_time(chain, payments, indexed, decoders,
                                                    tmp_path):  # fmt: skip
    anvil, h = chain
    models = h.protocol["ModelRegistry"].functions
    # Scheduled, not in effect yet: the registered split stays, the change waits.
    indexer = new_indexer(tmp_path / "index.db", anvil.url, h, decoders)
    indexer.sync_once(max_block=payments.before_first_split)
    model = indexer.conn.execute(f"SELECT {SPLIT_COLUMNS}, {SCHEDULED_COLUMNS} FROM models")
    assert tuple(model.fetchone()) == (6_000, 2_000, 1_500, 500, *FIRST_SPLIT,
                                       payments.first_split_at)  # fmt: skip
    indexer.close()
    # The second change found the first in effect: it is the split; the second waits.
    model = indexed.execute(f"SELECT {SPLIT_COLUMNS}, {SCHEDULED_COLUMNS} FROM models")
    assert tuple(model.fetchone()) == (*FIRST_SPLIT, *SECOND_SPLIT, payments.second_split_at)
    assert tuple(models.model(1).call()[1]) == FIRST_SPLIT
    split, effective_at = models.pendingSplit(1).call()
    assert (tuple(split), effective_at) == (SECOND_SPLIT, payments.second_split_at)


def test_projections_without_block_timestamps_are_the_same(chain, payments, indexed, decoders,
                                                           tmp_path):  # fmt: skip
    anvil, h = chain
    db = tmp_path / "index.db"
    indexer = new_indexer(db, anvil.url, h, decoders)
    indexer.sync_once()
    splits = f"SELECT {SPLIT_COLUMNS}, {SCHEDULED_COLUMNS} FROM models"
    with indexer.conn as conn:  # a node that does not report the logs' block timestamps
        conn.execute("UPDATE events SET block_timestamp = NULL")
        clear_read_model(conn)
        projections.replay(conn)
    assert _rows(indexer.conn, splits) == _rows(indexed, splits)
    indexer.close()


# ---------------------------------------------------------------- schema migrations

# The schema-1 definitions of the tables that changed, and schema 1's payer accounts.
V1_TABLES = {
    "payer_accounts": """
        payer TEXT PRIMARY KEY, balance TEXT NOT NULL DEFAULT '0',
        pending_withdrawal TEXT NOT NULL DEFAULT '0',
        withdrawal_unlock_at INTEGER NOT NULL DEFAULT 0, deposited TEXT NOT NULL DEFAULT '0',
        spent TEXT NOT NULL DEFAULT '0', withdrawn TEXT NOT NULL DEFAULT '0',
        block_number INTEGER NOT NULL""",
    "session_keys": """
        payer TEXT NOT NULL, signer TEXT NOT NULL, expiry INTEGER NOT NULL,
        PRIMARY KEY (payer, signer)""",
    "models": """
        id INTEGER PRIMARY KEY, developer TEXT NOT NULL, metadata_cid TEXT NOT NULL,
        base_model_cid TEXT NOT NULL, attributor TEXT NOT NULL, status TEXT NOT NULL,
        version_count INTEGER NOT NULL DEFAULT 0, price_per_request TEXT NOT NULL DEFAULT '0',
        price_per_token TEXT NOT NULL DEFAULT '0', split_developer INTEGER NOT NULL DEFAULT 0,
        split_contributors INTEGER NOT NULL DEFAULT 0, split_node INTEGER NOT NULL DEFAULT 0,
        split_protocol INTEGER NOT NULL DEFAULT 0, block_number INTEGER NOT NULL,
        created_at INTEGER, tx_hash TEXT NOT NULL""",
}


def _make_schema_1(db: object) -> None:
    """Turns the read model of ``db`` back into schema 1's shape (stale rows and all)."""
    conn = sqlite3.connect(db)  # type: ignore[arg-type]
    with conn:
        for name in ("channels", "skipped_vouchers", *V1_TABLES):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
        for name, columns in V1_TABLES.items():
            conn.execute(f"CREATE TABLE {name} ({columns})")
        conn.execute("INSERT INTO payer_accounts (payer, block_number) VALUES ('0xstale', 1)")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()


def _tables(db: object) -> set[str]:
    conn = sqlite3.connect(db)  # type: ignore[arg-type]
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_an_index_of_schema_1_is_migrated_by_replaying_its_events(chain, payments, decoders,
                                                                  tmp_path):  # fmt: skip
    anvil, h = chain
    reference, db = tmp_path / "reference.db", tmp_path / "index.db"
    new_indexer(reference, anvil.url, h, decoders).sync_once()
    first = new_indexer(db, anvil.url, h, decoders)
    first.sync_once(max_block=payments.revoked_block)
    first.close()
    _make_schema_1(db)

    indexer = new_indexer(db, anvil.url, h, decoders)  # migrates, then goes on from its cursor
    assert schema_version(indexer.conn) == SCHEMA_VERSION == 3
    assert indexer.cursor == payments.revoked_block
    indexer.sync_once()
    indexer.close()
    assert "payer_accounts" not in _tables(db)
    assert dump(db) == dump(reference)


def test_an_index_whose_events_the_projections_cannot_replay_is_left_as_it_was(tmp_path):
    db = tmp_path / "index.db"
    open_database(db).close()
    conn = sqlite3.connect(db)
    with conn:  # a payments v1 deposit: no node
        args = {"payer": "0x" + "ab" * 20, "amount": OPEN, "balance": OPEN}
        conn.execute(
            "INSERT INTO events (block_number, block_hash, tx_hash, log_index, contract, address,"
            " event, args) VALUES (5, '0x05', '0xdeposit', 0, 'InferencePayments', '0x01',"
            " 'Deposited', ?)",
            (json.dumps(args),),
        )
    conn.close()
    _make_schema_1(db)
    with pytest.raises(SchemaError, match=r"InferencePayments\.Deposited at block 5.*'node'"):
        open_database(db)
    assert "payer_accounts" in _tables(db) and "channels" not in _tables(db)
    conn = sqlite3.connect(db)
    assert schema_version(conn) == 1
    conn.close()


def test_an_index_of_a_newer_schema_is_refused(tmp_path):
    db = tmp_path / "index.db"
    open_database(db).close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))  # fmt: skip
    conn.close()
    with pytest.raises(SchemaError, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_database(db)
