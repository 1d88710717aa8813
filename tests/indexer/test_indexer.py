"""The indexer against a real anvil: complete, resumable, idempotent, confirmations, reorgs,
and a node that goes away mid-sync."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest
from web3 import Web3

from backend.devnet.anvil import Anvil, free_port, rpc
from backend.indexer.sync import IndexerError
from tests.indexing import chain_logs, dump, new_indexer
from tests.protocol_history import contribute, make_history


def test_sync_indexes_every_event_of_the_six_contracts(chain, decoders, tmp_path):
    anvil, history = chain
    indexer = new_indexer(tmp_path / "index.db", anvil.url, history, decoders)
    result = indexer.sync_once()
    logs = chain_logs(anvil.url, history)
    assert result.events == len(logs) > 50
    contracts = {row[0] for row in indexer.conn.execute("SELECT DISTINCT contract FROM events")}
    assert contracts == set(history.protocol.deployment.contracts)
    c = indexer.conn
    counts = c.execute(
        "SELECT contribution_count, approved_count, rejected_count, version_count FROM datanets"
    ).fetchone()
    assert tuple(counts) == (6, 5, 1, 2)
    statuses = dict(c.execute("SELECT id, status FROM contributions").fetchall())
    assert statuses == {1: "approved", 2: "approved", 3: "approved", 4: "approved",
                        5: "rejected", 6: "approved"}  # fmt: skip
    versions = c.execute("SELECT version, contribution_count FROM versions").fetchall()
    assert [tuple(v) for v in versions] == [(1, 4), (2, 5)]
    model = c.execute("SELECT status, version_count, split_developer, split_contributors,"
                      " split_node, split_protocol FROM models").fetchone()  # fmt: skip
    assert tuple(model) == ("active", 2, 6_000, 2_000, 1_500, 500)
    open_ = 10**18
    node = c.execute("SELECT bonded, unbonding, slashed, endpoint FROM nodes").fetchone()
    assert tuple(node) == (str(1_400 * open_), str(100 * open_), str(500 * open_),
                           "http://127.0.0.1:9000")  # fmt: skip
    channels = c.execute(
        "SELECT payer, node, balance, deposited, spent, withdrawn, pending_withdrawal,"
        " withdraw_delay FROM channels"
    ).fetchall()
    assert [tuple(ch) for ch in channels] == [
        (history.roles.payer, history.roles.node, str(85 * open_), str(100 * open_),
         str(10 * open_), str(5 * open_), "0", 86_400),
    ]  # fmt: skip
    key = c.execute("SELECT node, signer, expiry, allowance, valid_until, revoked_block"
                    " FROM session_keys").fetchone()  # fmt: skip
    assert tuple(key) == (history.roles.node, history.roles.challenger, 2**40, str(50 * open_),
                          2**40, None)  # fmt: skip
    assert c.execute("SELECT usage_proof_id FROM redemptions").fetchone()[0] == 1
    pool = c.execute("SELECT funded, unallocated, claimed FROM pools").fetchone()
    assert tuple(pool) == (str(3 * open_), str(open_), str(3 * open_ // 2))
    epochs = c.execute("SELECT id, status, claimed FROM epochs ORDER BY id").fetchall()
    assert [tuple(e) for e in epochs] == [(1, "posted", str(3 * open_ // 2)), (2, "rejected", "0")]
    claims = c.execute("SELECT epoch_id, idx, account FROM claims").fetchall()
    assert [tuple(row) for row in claims] == [(1, 0, history.roles.alice)]
    indexer.close()


def test_restart_resumes_from_the_last_block_without_duplicates(chain, decoders, tmp_path):
    anvil, history = chain
    db = tmp_path / "index.db"
    first = new_indexer(db, anvil.url, history, decoders, batch_blocks=7)
    middle = history.protocol.deployment.block + 20
    first.sync_once(max_block=middle)
    assert first.cursor == middle
    first.close()

    second = new_indexer(db, anvil.url, history, decoders, batch_blocks=7)
    assert second.cursor == middle
    result = second.sync_once()
    assert result.from_block == middle
    second.close()
    reference = tmp_path / "reference.db"
    new_indexer(reference, anvil.url, history, decoders).sync_once()
    assert dump(db) == dump(reference)
    assert len(dump(db)["events"]) == len(chain_logs(anvil.url, history))


def test_reprocessing_blocks_is_idempotent(chain, decoders, tmp_path):
    anvil, history = chain
    db = tmp_path / "index.db"
    indexer = new_indexer(db, anvil.url, history, decoders)
    indexer.sync_once()
    before = dump(db)
    with indexer.conn:  # as if the cursor had been lost: every block is processed again
        indexer.conn.execute("UPDATE meta SET value = '0' WHERE key = 'cursor'")
    assert indexer.sync_once().events == 0
    assert dump(db) == before
    indexer.close()


def test_blocks_wait_for_their_confirmations(chain, decoders, tmp_path):
    anvil, history = chain
    indexer = new_indexer(tmp_path / "index.db", anvil.url, history, decoders, confirmations=3)
    head = int(str(rpc(anvil.url, "eth_blockNumber")), 16)
    indexer.sync_once()
    assert indexer.cursor == head - 3
    last_events = [log for log in chain_logs(anvil.url, history)
                   if int(log["blockNumber"], 16) > head - 3]  # fmt: skip
    assert last_events  # the history's last blocks have events
    stored = indexer.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert stored == len(chain_logs(anvil.url, history)) - len(last_events)

    rpc(anvil.url, "anvil_mine", ["0x3"])
    indexer.sync_once()
    assert indexer.cursor == head
    assert indexer.conn.execute("SELECT MAX(block_number) FROM events").fetchone()[0] == head
    indexer.close()


def test_a_reorg_is_rolled_back_to_the_fork_point_and_reindexed(decoders, tmp_path, caplog):
    with Anvil(port=free_port()) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        history = make_history(w3)
        fork_block = w3.eth.block_number
        snapshot = rpc(anvil.url, "evm_snapshot")
        contribute(history, history.roles.alice, ["orphan-a", "orphan-b"])
        contribute(history, history.roles.bob, ["orphan-c"])
        db = tmp_path / "index.db"
        indexer = new_indexer(db, anvil.url, history, decoders)
        indexer.sync_once()
        orphans = indexer.conn.execute("SELECT COUNT(*) FROM contributions WHERE id > 6")
        assert orphans.fetchone()[0] == 3

        assert rpc(anvil.url, "evm_revert", [snapshot]) is True
        history.contributions[:] = history.contributions[:6]
        contribute(history, history.roles.bob, ["canonical-a"])
        rpc(anvil.url, "anvil_mine", ["0x4"])  # the new branch is longer than the old one
        with caplog.at_level(logging.WARNING, logger="backend.indexer"):
            result = indexer.sync_once()
        assert result.rolled_back_to == fork_block
        assert "reorg" in caplog.text

        cids = [r[0] for r in indexer.conn.execute("SELECT cid FROM contributions WHERE id > 6")]
        assert cids == [history.contributions[6][2]]
        assert indexer.conn.execute("SELECT contribution_count FROM datanets").fetchone()[0] == 7
        indexer.close()
        reference = tmp_path / "reference.db"
        new_indexer(reference, anvil.url, history, decoders).sync_once()
        assert dump(db) == dump(reference)


def test_the_node_going_away_mid_sync_is_waited_for(decoders, tmp_path, caplog):
    state = tmp_path / "anvil-state.json"
    port = free_port()
    anvil = Anvil(port=port, state_file=state)
    anvil.start()
    restarted: list[Anvil] = []
    try:
        history = make_history(Web3(Web3.HTTPProvider(anvil.url)))
        head = int(str(rpc(anvil.url, "eth_blockNumber")), 16)
        expected = len(chain_logs(anvil.url, history))
        db = tmp_path / "index.db"
        ranges: list[int] = []

        def outage(cursor: int, _events: int) -> None:
            ranges.append(cursor)
            if len(ranges) == 2:  # after two committed ranges, the node goes away for a while
                anvil.stop()

                def come_back() -> None:
                    time.sleep(1.5)
                    restarted.append(Anvil(port=port, state_file=state).start())

                threading.Thread(target=come_back, daemon=True).start()

        indexer = new_indexer(db, anvil.url, history, decoders, batch_blocks=5)
        indexer.on_progress = outage
        runner = threading.Thread(target=indexer.run_forever, kwargs={"retry_delay": 0.2})
        with caplog.at_level(logging.WARNING, logger="backend.indexer"):
            runner.start()
            deadline = time.monotonic() + 60
            while indexer.cursor < head and time.monotonic() < deadline:
                time.sleep(0.1)
            indexer.stop()
            runner.join(timeout=10)
        assert indexer.cursor == head
        assert "unreachable" in caplog.text and "is back" in caplog.text
        count = indexer.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert count == expected
        indexer.close()
    finally:
        anvil.stop()
        for node in restarted:
            node.stop()


def test_a_database_of_another_deployment_is_refused(chain, decoders, tmp_path):
    anvil, history = chain
    db = tmp_path / "index.db"
    new_indexer(db, anvil.url, history, decoders).close()
    contracts = {**history.protocol.deployment.contracts, "OpenToken": "0x" + "11" * 20}
    other = replace(history.protocol.deployment, contracts=contracts)
    history_other = replace(history, protocol=replace(history.protocol, deployment=other))
    with pytest.raises(IndexerError, match="use another database file"):
        new_indexer(db, anvil.url, history_other, decoders)
