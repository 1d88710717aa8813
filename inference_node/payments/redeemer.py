"""Batches the node's vouchers into on-chain redemptions with usage proofs, exactly once.

One run (:meth:`Redeemer.redeem_all`):

1. reconcile every ``pending`` redemption left by a crash (below);
2. take the latest voucher of every (payer, model) pair whose ledger ``accepted`` exceeds what
   the contract says it ``redeemed`` (pairs already covered on-chain are skipped and their
   ``redeemed`` refreshed; vouchers that expired, or whose session key stopped, are skipped
   with a warning naming what was lost);
3. cut them into batches of at most ``max_batch`` vouchers whose gas estimate fits in
   ``gas_fraction`` of a block (a batch over it, or one the estimate refuses, is halved; a
   single voucher the contract refuses is logged and left out), ordered by model;
4. per batch: put the JSONL log of its pairs' pending receipts in the content store and build
   its Merkle tree (receipts.py); put their attribution records log beside it (one line per
   receipt: the full record, after computing the gradients the background worker has not
   reached yet, else the answer record, ``null`` for a zero digest; records_log.py) and the
   usage bundle naming both, whose CID the usage proof records; record the redemption
   (``pending``: vouchers, root, bundle CID, receipts taken) *before* sending;
5. send ``redeem(vouchers, (root, count, cid))``, record the tx hash, wait, and confirm with the
   usage proof id and the pairs' on-chain ``redeemed``; vouchers the contract skipped are
   logged; a batch that reverts is marked failed and its receipts return to pending.

When: :meth:`Redeemer.due` — over the threshold, the interval passed, or some pair's
``redeem_by`` is within ``urgency``. :meth:`Redeemer.watch` shortens ``redeem_by`` from what
the chain says since the last look: a withdrawal request on a channel (its unlock), a session
key revocation (the key's end) and a split change that lowers this node's share (its effective
time). RPC errors end a run with a log line; the next run starts over.

Exactly once: the contract never pays a voucher at or below its pair's ``redeemed``, so a
voucher cannot be paid twice; a crash after step 4 leaves a ``pending`` row which the next run
matches to its ``UsageProofRecorded`` event (same node, root and CID, a proof id above the last
confirmed one) and confirms, or, when no such event exists and the node has no transaction in
flight, sends again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from eth_utils import keccak
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD

from backend.attribution.record import AttributionRecord
from backend.attribution.records_log import ZERO_DIGEST, records_log
from backend.protocol.eip712 import SignedVoucher
from backend.protocol.enums import skip_reason
from backend.protocol.receipts import Receipt, receipts_log, receipts_tree, usage_bundle
from backend.storage.base import ContentStore
from inference_node.payments.chain import PaymentsChain
from inference_node.payments.ledger import Ledger, Redemption
from inference_node.payments.sender import RedeemSender

if TYPE_CHECKING:
    from inference_node.attribution import NodeAttribution

log = logging.getLogger(__name__)

ZERO_ROOT = b"\x00" * 32


@dataclass(frozen=True)
class RedeemPolicy:
    interval: int = 3_600  # seconds between redemptions while anything is unredeemed
    threshold: int = 10 * 10**18  # OPEN wei unredeemed that triggers a redemption at once
    deadline_slack: int = 60  # seconds a voucher must still have to be worth sending
    from_block: int = 0  # first block to search for this node's usage proofs and threats
    urgency: int = 900  # seconds before a pair's redeem_by at which it is redeemed at once
    max_batch: int = 100  # vouchers per redemption at most
    gas_fraction: float = 0.5  # of the block gas limit a redemption may take


NODE_NOT_ACTIVE = "0x" + keccak(text="NodeNotActive(address)")[:4].hex()
RPC_ERRORS = (Web3Exception, requests.RequestException, ConnectionError, TimeoutError)


class Redeemer:
    """Redeems one node's vouchers; every method is safe to re-run after a crash."""

    def __init__(
        self,
        chain: PaymentsChain,
        ledger: Ledger,
        store: ContentStore,
        sender: RedeemSender,
        policy: RedeemPolicy | None = None,
        attribution: NodeAttribution | None = None,
    ) -> None:
        """``attribution``: computes the gradients of answers the background worker has not
        reached before their records are published (None: they are published spans-only)."""
        self.chain, self.ledger, self.store, self.sender = chain, ledger, store, sender
        self.attribution = attribution
        self.policy = policy or RedeemPolicy()
        # when the current interval began, on the chain's clock (the clock ``due`` is given):
        # the first ``due`` call, then each redemption. Not the wall clock: a chain's time can
        # run ahead of it (a local chain moved forward with evm_increaseTime), and mixing the
        # two made every poll look an interval late, redeeming each receipt on its own.
        self._interval_from: int | None = None
        self._watched = self.policy.from_block - 1  # the last block watch() read

    def due(self, now: int) -> bool:
        """Whether a redemption is due at ``now``: over the threshold, the interval passed, or
        a pair must be redeemed within ``urgency``."""
        unredeemed = self.ledger.unredeemed_amount()
        if unredeemed == 0:
            return False
        if unredeemed >= self.policy.threshold:
            return True
        earliest = self.ledger.earliest_redeem_by()
        if earliest is not None and earliest - now <= self.policy.urgency:
            return True
        if self._interval_from is None:  # the first interval counts from the first look
            self._interval_from = now
        return now - self._interval_from >= self.policy.interval

    def maybe_redeem(self, now: int) -> Redemption | None:
        """Watches the chain, then runs :meth:`redeem_now` when :meth:`due`. An RPC error is
        logged and ends the run (the next one starts over)."""
        try:
            self.watch()
            return self.redeem_now() if self.due(now) else None
        except RPC_ERRORS:
            log.exception("redemption run stopped by an RPC error; retrying next run")
            return None

    def redeem_now(self) -> Redemption | None:
        """:meth:`redeem_all`; returns the last batch's redemption (None: nothing to redeem)."""
        done = self.redeem_all()
        return done[-1] if done else None

    def redeem_all(self) -> list[Redemption]:
        """Reconciles, then redeems every pair with unredeemed value in gas-bounded batches;
        returns the new redemptions as recorded."""
        if not self.reconcile():
            return []  # an earlier redemption is still in flight: wait for it first
        vouchers = self._redeemable()
        if not vouchers:
            return []
        batches = self._batches(vouchers)
        pending = self.ledger.pending_receipts()
        done: list[Redemption] = []
        for n, batch in enumerate(batches):
            pairs = {(v.voucher.payer, v.voucher.model_id) for v in batch}
            # The first batch also takes receipts of pairs with nothing left to redeem (their
            # vouchers were redeemed earlier, or the credit covered them).
            batched = {(v.voucher.payer, v.voucher.model_id) for b in batches for v in b}
            taken = [
                (i, r)
                for i, r in pending
                if (r.payer, r.model_id) in pairs
                or (n == 0 and (r.payer, r.model_id) not in batched)
            ]
            receipts = [r for _, r in taken]
            root = receipts_tree(receipts).root if receipts else ZERO_ROOT
            cid = self._publish(taken)
            redemption_id = self.ledger.prepare_redemption(batch, [i for i, _ in taken], root, cid)
            done.append(self._send(self._redemption(redemption_id)))
        self._interval_from = self.chain.now()  # the next interval starts now
        return done

    def _publish(self, taken: list[tuple[int, Receipt]]) -> str:
        """Stores the receipts log, its attribution records log and the usage bundle naming
        both; returns the bundle's CID (what the usage proof records)."""
        receipts = [r for _, r in taken]
        ids = [i for i, _ in taken]
        rows = self.ledger.attribution_records(ids)
        missing = [row for row in rows.values() if row.full_record is None]
        if missing and self.attribution is not None:
            try:
                self.attribution.complete(self.ledger, missing)
            except Exception:  # published spans-only rather than not at all
                log.exception("gradients of %d answers failed: their records are published "
                              "spans-only", len(missing))  # fmt: skip
            rows = self.ledger.attribution_records(ids)
        records: list[AttributionRecord | None] = []
        for receipt_id, receipt in taken:
            row = rows.get(receipt_id)
            if receipt.attribution_digest == ZERO_DIGEST or row is None:
                if receipt.attribution_digest != ZERO_DIGEST:
                    log.error("receipt %d commits to an attribution record the ledger lacks",
                              receipt_id)  # fmt: skip
                records.append(None)
                continue
            line = row.full_record or row.attribution.answer_record
            records.append(AttributionRecord.from_json(line))
        receipts_cid = self.store.put(receipts_log(receipts))
        records_cid = self.store.put(records_log(records))
        cid = self.store.put(usage_bundle(receipts_cid, records_cid))
        for pinned in (receipts_cid, records_cid, cid):
            self.store.pin(pinned)
        return cid

    def watch(self) -> None:
        """Shortens pairs' ``redeem_by`` by what happened on-chain since the last look."""
        latest = int(self.chain.w3.eth.block_number)
        start = self._watched + 1
        if start > latest:
            return
        payments, node = self.chain.payments, self.chain.node
        window = {"from_block": start, "to_block": latest, "argument_filters": {"node": node}}
        for event in payments.events.WithdrawalRequested().get_logs(**window):
            a = event["args"]
            if self.ledger.shorten_redeem_by(a["payer"], None, int(a["unlockAt"])):
                log.info(
                    "payer %s asked to withdraw by %d: redeeming before", a["payer"], a["unlockAt"]
                )
        for event in payments.events.SessionKeyRevoked().get_logs(**window):
            a = event["args"]
            if self.ledger.shorten_redeem_by(a["payer"], None, int(a["validUntil"])):
                log.info(
                    "payer %s revoked key %s (valid until %d): redeeming before",
                    a["payer"], a["signer"], a["validUntil"],
                )  # fmt: skip
        models = {c.model_id for c in self.ledger.unredeemed_channels()}
        scheduled = self.chain.models.events.SplitScheduled().get_logs(
            from_block=start, to_block=latest
        )
        for model_id in {int(e["args"]["modelId"]) for e in scheduled} & models:
            effective_at = self.chain.split_change_at(model_id)
            if effective_at is not None:
                self.ledger.shorten_model_redeem_by(model_id, effective_at)
                log.info(
                    "model %d lowers the node's share at %d: redeeming before",
                    model_id,
                    effective_at,
                )
        self._watched = latest

    def reconcile(self) -> bool:
        """Settles the ``pending`` redemptions a crash left behind, from the chain's state;
        False when one of them still has a transaction in flight."""
        for redemption in self.ledger.redemptions("pending"):
            event = self._find_proof(redemption)
            if event is not None:
                log.info("redemption %d landed as usage proof %d", redemption.id, event["proofId"])
                self._confirm(redemption, event)
            elif self._in_flight():
                log.info("redemption %d: a transaction is still in flight", redemption.id)
                return False
            else:
                log.warning("redemption %d never landed; sending it again", redemption.id)
                self._send(redemption)
        return True

    # ------------------------------------------------------------------ steps

    def _redeemable(self) -> list[SignedVoucher]:
        now = self.chain.now()
        vouchers: list[SignedVoucher] = []
        for channel in self.ledger.unredeemed_channels():
            assert channel.voucher is not None
            on_chain = self.chain.redeemed(channel.payer, channel.model_id)
            if on_chain != channel.redeemed:
                self.ledger.set_redeemed(channel.payer, channel.model_id, on_chain)
            voucher = channel.voucher.voucher
            if voucher.cumulative_amount <= on_chain:
                continue
            if voucher.deadline < now + self.policy.deadline_slack:
                log.warning(
                    "voucher of pair (%s, %d) expired at %d unredeemed: %d wei lost",
                    channel.payer, channel.model_id, voucher.deadline,
                    voucher.cumulative_amount - on_chain,
                )  # fmt: skip
                continue
            if channel.signer and channel.signer != channel.payer:
                key = self.chain.session_key(channel.payer, channel.signer)
                if key.valid_until < now + self.policy.deadline_slack:
                    log.warning(
                        "voucher of pair (%s, %d) signed by session key %s, which stopped at "
                        "%d: %d wei lost",
                        channel.payer, channel.model_id, channel.signer, key.valid_until,
                        voucher.cumulative_amount - on_chain,
                    )  # fmt: skip
                    continue
            vouchers.append(channel.voucher)
        return vouchers  # ordered by model id: one payment split per model

    def _batches(self, vouchers: list[SignedVoucher]) -> list[list[SignedVoucher]]:
        """``vouchers`` cut into batches that fit: at most ``max_batch`` each, and a gas
        estimate within ``gas_fraction`` of a block; a single voucher the estimate refuses is
        logged and left out."""
        size = max(1, self.policy.max_batch)
        todo = [vouchers[i : i + size] for i in range(0, len(vouchers), size)]
        limit = int(self.chain.w3.eth.get_block("latest")["gasLimit"] * self.policy.gas_fraction)
        batches: list[list[SignedVoucher]] = []
        while todo:
            batch = todo.pop(0)
            try:
                fits = self.sender.estimate([v.redemption_tuple() for v in batch]) <= limit
                reason = "over the gas limit"
            except ContractLogicError as refused:
                if str(refused.data or "").startswith(NODE_NOT_ACTIVE):
                    log.error("redemptions refused: this node is not active (stake to redeem)")
                    return []
                fits, reason = False, f"refused: {refused}"
            except RPC_ERRORS as failed:  # e.g. gas required exceeds the block's
                fits, reason = False, f"estimate failed: {failed}"
            if fits:
                batches.append(batch)
            elif len(batch) > 1:
                half = len(batch) // 2
                todo[:0] = [batch[:half], batch[half:]]
            else:
                v = batch[0].voucher
                log.error("voucher of pair (%s, %d) left out: %s", v.payer, v.model_id, reason)
        return batches

    def _send(self, redemption: Redemption) -> Redemption:
        chain = self.chain
        vouchers = [
            v
            for v in redemption.vouchers
            if v.voucher.cumulative_amount > chain.redeemed(v.voucher.payer, v.voucher.model_id)
        ]
        if not vouchers:
            log.warning("redemption %d: every voucher is already redeemed", redemption.id)
            self.ledger.fail_redemption(redemption.id)
            return self._redemption(redemption.id)
        proof = (redemption.receipts_root, redemption.receipt_count, redemption.receipts_cid)
        try:
            tx_hash = self.sender.send([v.redemption_tuple() for v in vouchers], proof)
        except ContractLogicError as refused:  # rejected before broadcast: nothing was sent
            log.error("redemption %d refused by the contract: %s", redemption.id, refused)
            self.ledger.fail_redemption(redemption.id)
            return self._redemption(redemption.id)
        self.ledger.record_sent(redemption.id, tx_hash)
        receipt = self.sender.wait(tx_hash)
        if receipt["status"] != 1:
            log.error("redemption %d reverted in %s", redemption.id, tx_hash)
            self.ledger.fail_redemption(redemption.id)
            return self._redemption(redemption.id)
        for skipped in self.chain.payments.events.VoucherSkipped().process_receipt(
            receipt, errors=DISCARD
        ):
            a = skipped["args"]
            log.warning(
                "redemption %d: the contract skipped the voucher of pair (%s, %d): %s",
                redemption.id, a["payer"], a["modelId"], skip_reason(a["reason"]),
            )  # fmt: skip
        events = self.chain.payments.events.UsageProofRecorded().process_receipt(
            receipt, errors=DISCARD
        )
        self._confirm(redemption, {**events[0]["args"], "tx_hash": tx_hash})
        return self._redemption(redemption.id)

    def _confirm(self, redemption: Redemption, event: dict[str, Any]) -> None:
        redeemed = {
            (v.voucher.payer, v.voucher.model_id): self.chain.redeemed(
                v.voucher.payer, v.voucher.model_id
            )
            for v in redemption.vouchers
        }
        self.ledger.confirm_redemption(
            redemption.id,
            tx_hash=event["tx_hash"],
            proof_id=int(event["proofId"]),
            paid=int(event["amount"]),
            redeemed=redeemed,
        )
        log.info(
            "usage proof %d: %d receipts, %d wei paid, tx %s",
            event["proofId"], redemption.receipt_count, event["amount"], event["tx_hash"],
        )  # fmt: skip

    def _find_proof(self, redemption: Redemption) -> dict[str, Any] | None:
        """The ``UsageProofRecorded`` event of ``redemption``, if it landed."""
        confirmed = [r.proof_id or 0 for r in self.ledger.redemptions("confirmed")]
        after = max(confirmed, default=0)
        events = self.chain.payments.events.UsageProofRecorded().get_logs(
            from_block=self.policy.from_block, argument_filters={"node": self.chain.node}
        )
        for event in events:
            args = event["args"]
            if (
                args["proofId"] > after
                and bytes(args["receiptsRoot"]) == redemption.receipts_root
                and args["receiptsCID"] == redemption.receipts_cid
            ):
                return {**args, "tx_hash": "0x" + bytes(event["transactionHash"]).hex()}
        return None

    def _in_flight(self) -> bool:
        eth = self.chain.w3.eth
        address = self.sender.address
        return eth.get_transaction_count(address, "pending") > eth.get_transaction_count(
            address, "latest"
        )

    def _redemption(self, redemption_id: int) -> Redemption:
        return next(r for r in self.ledger.redemptions() if r.id == redemption_id)
