"""Gas of the protocol's main operations, measured on ape's in-process EVM (gas is the same on
any conforming EVM). Writes bench/results/gas.json and prints a table.

Redemption is measured per voucher in batches of 1, 10 and 100 payers (one channel each, payer
-> node), first-time (pairs never redeemed) and steady-state (the same pairs redeemed again):
one voucher pays for any number of inferences, so the cost per inference falls with use. The
vouchers of a session key are measured apart (steady state and first time, batch of 100): a
key's voucher also reads the key and writes what it spent. Vouchers a batch skips (expired, and
stale: not above what their pair redeemed) are measured too: they must cost little, since they
pay nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import chain_env  # noqa: F401  (first: sets where ape and solc live)
from ape import accounts, chain, networks
from ape.logging import LogLevel, logger
from common import table, write_results
from eth_account import Account

from backend.protocol.contracts import Protocol, deploy_protocol
from backend.protocol.eip712 import (
    Permit,
    SessionKeyAuthorization,
    Voucher,
    sign_permit,
    sign_session_key,
    sign_voucher,
    token_domain,
)
from backend.protocol.merkle import StandardMerkleTree
from backend.protocol.web3_protocol import contract

OPEN = 10**18
TARGETS = {  # gas ceilings from the issue
    "redeem per voucher, steady state, batch of 100": 35_000,
    "redeem per voucher, first time, batch of 100": 45_000,
    "claim": 80_000,
    "contribute": 150_000,
}
log = logging.getLogger("bench.gas")


def _permit(protocol: Protocol, key: Any, amount: int, deadline: int) -> tuple[int, bytes, bytes]:
    token = protocol.token
    permit = Permit(
        key.address, protocol.payments.address, amount, token.nonces(key.address), deadline
    )
    sig = sign_permit(key.key, token_domain(chain.chain_id, token.address), permit)
    return sig.v, sig.r, sig.s


def measure() -> dict[str, dict[str, Any]]:
    governance, treasury, developer, node, contributor, curator = accounts.test_accounts[:6]
    protocol = deploy_protocol(governance, treasury=treasury.address, network="test")
    token, datanets, models = protocol.token, protocol.datanets, protocol.models
    nodes, payments, rewards = protocol.nodes, protocol.payments, protocol.rewards
    results: dict[str, dict[str, Any]] = {}

    def record(name: str, gas: int, per: int = 1, note: str = "") -> None:
        results[name] = {"gas": gas // per, "total_gas": gas, "items": per, "note": note}
        log.info("%s: %s", name, gas // per)

    for account in (developer, node, contributor, curator):
        token.transfer(account, 1_000_000 * OPEN, sender=treasury)
    token.approve(datanets, 2**256 - 1, sender=contributor)

    tx = datanets.createDatanet("bafkreimetadata", 10 * OPEN, 1, curator, sender=curator)
    record("createDatanet", tx.gas_used)
    datanet_id = 1
    datanets.contribute(datanet_id, "bafkreifirst", 1000, sender=contributor)  # warms balances
    tx = datanets.contribute(datanet_id, "bafkreisecond-contribution-cid", 2048, sender=contributor)
    record("contribute", tx.gas_used, note="a contributor's second contribution")
    cids = [f"bafkreibatchcontribution{i:04d}" for i in range(50)]
    tx = datanets.contributeBatch(datanet_id, cids, [4096] * 50, sender=contributor)
    record("contributeBatch, per item (batch of 50)", tx.gas_used, 50)
    first = 3
    ids = list(range(first, first + 50))
    tx = datanets.review(datanet_id, ids, [i % 10 != 0 for i in ids], sender=curator)
    record("review, per item (batch of 50)", tx.gas_used, 50, "90% approved, 10% rejected")
    datanets.review(datanet_id, [1, 2], [True, True], sender=curator)
    tx = datanets.publishVersion(
        datanet_id,
        b"\x01" * 32,
        "bafkreimanifest",
        datanets.datanet(datanet_id).approvedCount,
        sender=curator,
    )
    record("publishVersion", tx.gas_used)

    spec = (
        "bafkreimodelmeta", "bafkreibasemodel", "bafkreiadapter", "bafkreitrainingmanifest",
        datanet_id, 1, (10**15, 10**12), (3_000, 3_000, 3_500, 500), node.address,
    )  # fmt: skip
    tx = models.registerModel(spec, sender=developer)
    record("registerModel", tx.gas_used)
    model_id = 1
    token.approve(nodes, 2**256 - 1, sender=node)
    nodes.stake(10_000 * OPEN, sender=node)

    # 111 payers signing their own vouchers and 100 whose session keys sign: keys made here,
    # funded by the treasury, each depositing into its channel with the node by permit (one
    # transaction, no approve; a payer sends it itself, signed here with its key).
    keys = [Account.from_key((i + 1).to_bytes(32, "big")) for i in range(211)]
    session_keys = [Account.from_key((i + 10_001).to_bytes(32, "big")) for i in range(100)]
    deadline = chain.pending_timestamp + 10 * 365 * 86_400
    w3 = chain.provider.web3
    payments_w3 = contract(w3, "InferencePayments", payments.address)
    for i, key in enumerate(keys):
        token.transfer(key.address, 1_000 * OPEN, sender=treasury)
        treasury.transfer(key.address, 10**17)  # gas money
        v, r, s = _permit(protocol, key, 100 * OPEN, deadline)
        call = payments_w3.functions.depositWithPermit(node.address, 100 * OPEN, deadline, v, r, s)
        tx = call.build_transaction(
            {"from": key.address, "nonce": w3.eth.get_transaction_count(key.address)}
        )
        sent = w3.eth.send_raw_transaction(key.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(sent)
        assert receipt["status"] == 1, f"depositWithPermit of payer {i} reverted"
        if i == 0:
            record("depositWithPermit", receipt["gasUsed"], note="first deposit: opens the channel")
    token.approve(payments, 2**256 - 1, sender=developer)
    payments.deposit(node, 10 * OPEN, sender=developer)
    tx = payments.deposit(node, 10 * OPEN, sender=developer)
    record("deposit", tx.gas_used, note="a payer's second deposit into a channel")

    # Session keys of the last 100 payers, authorized by signature (the treasury submits).
    allowance = 50 * OPEN
    for i, (key, session) in enumerate(zip(keys[111:], session_keys, strict=True)):
        authorization = SessionKeyAuthorization(
            key.address,
            node.address,
            session.address,
            deadline,
            allowance,
            payments.nonces(key.address),
            deadline,
        )
        sig = sign_session_key(key.key, protocol.domain, authorization)
        tx = payments.authorizeSessionKeyWithSig(
            key.address,
            node.address,
            session.address,
            deadline,
            allowance,
            deadline,
            sig.v,
            sig.r,
            sig.s,
            sender=treasury,
        )
        if i == 0:
            record("authorizeSessionKeyWithSig", tx.gas_used, note="a new key, relayed")
    spare = Account.from_key((99_999).to_bytes(32, "big")).address
    tx = payments.authorizeSessionKey(node, spare, deadline, allowance, sender=developer)
    record("authorizeSessionKey", tx.gas_used, note="a new key, by the payer")
    tx = payments.revokeSessionKey(node, spare, sender=developer)
    record("revokeSessionKey", tx.gas_used, note="keeps its power for the channel's delay")
    tx = payments.requestWithdrawal(node, OPEN, sender=developer)
    record("requestWithdrawal", tx.gas_used)
    chain.pending_timestamp += payments.withdrawalDelay()
    tx = payments.withdraw(node, sender=developer)
    record("withdraw", tx.gas_used, note="a payer's withdrawal from its channel")

    cumulative = [0] * len(keys)
    proof_count = 0

    def redeem_batch(payer_keys: list[Any], offset: int, signers: list[Any] | None = None) -> int:
        """Redeems one voucher per payer (signed by the payer, or by `signers`)."""
        nonlocal proof_count
        vouchers = []
        for j, key in enumerate(payer_keys):
            cumulative[offset + j] += OPEN // 100
            v = Voucher(key.address, node.address, model_id, cumulative[offset + j], deadline)
            signer = key if signers is None else signers[j]
            vouchers.append(sign_voucher(signer.key, protocol.domain, v).redemption_tuple())
        proof_count += 1
        usage = (
            proof_count.to_bytes(32, "big"),
            4 * len(vouchers),
            f"bafkreireceipts{proof_count}",
        )
        tx = payments.redeem(vouchers, usage, sender=node)
        skipped = tx.events.filter(payments.VoucherSkipped)
        if skipped:
            raise RuntimeError(f"vouchers skipped: {skipped}")
        return tx.gas_used

    # Disjoint payers per batch size, so every first-time batch meets fresh pairs.
    for size, offset in ((1, 0), (10, 1), (100, 11)):
        batch = keys[offset : offset + size]
        record(
            f"redeem per voucher, first time, batch of {size}", redeem_batch(batch, offset), size
        )
        steady = redeem_batch(batch, offset)
        record(f"redeem per voucher, steady state, batch of {size}", steady, size)
    keyed = keys[111:]
    first = redeem_batch(keyed, 111, session_keys)
    record(
        "redeem per voucher, session key, first time, batch of 100",
        first,
        100,
        "signed by the payers' session keys",
    )
    steady = redeem_batch(keyed, 111, session_keys)
    record(
        "redeem per voucher, session key, steady state, batch of 100",
        steady,
        100,
        "signed by the payers' session keys",
    )
    # Skipped vouchers: 100 expired ones, then 100 stale ones (signed, not above what their
    # pair redeemed), each batch beside one paid voucher; their gas less a redemption of one.
    one = results["redeem per voucher, steady state, batch of 1"]["total_gas"]
    for reason, note in (
        ("expired", "deadline passed: skipped before the signature is recovered"),
        ("stale", "signature recovered, pair read: nothing above what it redeemed"),
    ):
        now = chain.pending_timestamp
        vouchers = []
        for j, key in enumerate(keys[11:111]):
            v = Voucher(key.address, node.address, model_id, cumulative[11 + j], deadline)
            if reason == "expired":
                v = Voucher(key.address, node.address, model_id, 2 * OPEN, now - 1)
            vouchers.append(sign_voucher(key.key, protocol.domain, v).redemption_tuple())
        cumulative[0] += OPEN // 100
        paid = Voucher(keys[0].address, node.address, model_id, cumulative[0], deadline)
        vouchers.append(sign_voucher(keys[0].key, protocol.domain, paid).redemption_tuple())
        proof_count += 1
        usage = (proof_count.to_bytes(32, "big"), 4, f"bafkreireceipts{proof_count}")
        tx = payments.redeem(vouchers, usage, sender=node)
        if len(tx.events.filter(payments.VoucherSkipped)) != 100:
            raise RuntimeError(f"expected 100 {reason} vouchers skipped")
        record(f"redeem per voucher skipped ({reason}), batch of 100", tx.gas_used - one, 100, note)

    pool = rewards.pool(model_id).unallocated
    leaves = [(i, keys[i].address, pool // 200) for i in range(64)]
    tree = StandardMerkleTree.of(leaves, ["uint256", "address", "uint256"])
    tx = rewards.postEpoch(
        model_id, tree.root, sum(a for *_, a in leaves), "bafkreireport", sender=node
    )
    record("postEpoch", tx.gas_used)
    chain.pending_timestamp += rewards.challengeWindow() + 1
    epoch_id = 1
    i0, acct0, amount0 = leaves[0]
    tx = rewards.claim(epoch_id, i0, acct0, amount0, tree.proof(0), sender=treasury)
    record("claim, first in its bitmap word", tx.gas_used, note="64-leaf epoch; holder of OPEN")
    i1, acct1, amount1 = leaves[1]
    tx = rewards.claim(epoch_id, i1, acct1, amount1, tree.proof(1), sender=treasury)
    record("claim", tx.gas_used, note="64-leaf epoch; claimant already holds OPEN")
    return results


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.set_level(LogLevel.WARNING)
    started = time.time()
    with networks.parse_network_choice("ethereum:local:test"):
        results = measure()
    checks = {}
    for name, ceiling in TARGETS.items():
        gas = results[name]["gas"]
        checks[name] = {"gas": gas, "target": ceiling, "met": gas <= ceiling}
    path = write_results(
        "gas",
        {"evm": "ape ethereum:local:test (py-evm), solc 0.8.28, optimizer 10,000 runs, cancun",
         "operations": results, "targets": checks, "seconds": round(time.time() - started, 1)},
    )  # fmt: skip
    rows = [[name, f"{r['gas']:,}", r["items"], r["note"]]
            for name, r in results.items()]  # fmt: skip
    print(table(["operation", "gas", "items", "note"], rows))
    print()
    print(table(["target", "gas", "ceiling", "met"],
                [[n, f"{c['gas']:,}", f"{c['target']:,}", "yes" if c["met"] else "NO"]
                 for n, c in checks.items()]))  # fmt: skip
    print(f"\nwrote {path}")
    return 0 if all(c["met"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
