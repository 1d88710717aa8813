"""Batches the node's vouchers into on-chain redemptions with usage proofs, exactly once.

One run (:meth:`Redeemer.redeem_now`):

1. reconcile every ``pending`` redemption left by a crash (below);
2. take the latest voucher of every channel whose ledger ``accepted`` exceeds what the contract
   says it ``redeemed`` (channels already covered on-chain are skipped and their ``redeemed``
   refreshed; expired vouchers are skipped with a warning);
3. put the JSONL log of all pending receipts in the content store and build its Merkle tree
   (receipts.py); a batch without new receipts records an empty log and a zero root;
4. record the redemption (``pending``: vouchers, root, CID, receipts taken) *before* sending;
5. send ``redeem(vouchers, (root, count, cid))``, record the tx hash, wait, and confirm with the
   usage proof id and the channels' on-chain ``redeemed``; one the contract refuses (at gas
   estimation or on-chain) is marked failed and its receipts return to pending.

Exactly once: the contract never pays a voucher at or below its channel's ``redeemed``, so a
voucher cannot be paid twice; a crash after step 4 leaves a ``pending`` row which the next run
matches to its ``UsageProofRecorded`` event (same node, root and CID, a proof id above the last
confirmed one) and confirms, or, when no such event exists and the node has no transaction in
flight, sends again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from backend.protocol.eip712 import SignedVoucher
from backend.protocol.receipts import receipts_log, receipts_tree
from backend.storage.base import ContentStore
from inference_node.payments.chain import PaymentsChain
from inference_node.payments.ledger import Ledger, Redemption
from inference_node.payments.sender import RedeemSender

log = logging.getLogger(__name__)

ZERO_ROOT = b"\x00" * 32


@dataclass(frozen=True)
class RedeemPolicy:
    interval: int = 3_600  # seconds between redemptions while anything is unredeemed
    threshold: int = 10 * 10**18  # OPEN wei unredeemed that triggers a redemption at once
    deadline_slack: int = 60  # seconds a voucher must still have to be worth sending
    from_block: int = 0  # first block to search for this node's usage proofs


class Redeemer:
    """Redeems one node's vouchers; every method is safe to re-run after a crash."""

    def __init__(
        self,
        chain: PaymentsChain,
        ledger: Ledger,
        store: ContentStore,
        sender: RedeemSender,
        policy: RedeemPolicy | None = None,
    ) -> None:
        self.chain, self.ledger, self.store, self.sender = chain, ledger, store, sender
        self.policy = policy or RedeemPolicy()
        self._started = int(time.time())

    def due(self, now: int) -> bool:
        """Whether a redemption is due at ``now``: over the threshold, or the interval passed."""
        unredeemed = self.ledger.unredeemed_amount()
        if unredeemed == 0:
            return False
        if unredeemed >= self.policy.threshold:
            return True
        last = self.ledger.last_redemption_at() or self._started  # the first: from start
        return now - last >= self.policy.interval

    def maybe_redeem(self, now: int) -> Redemption | None:
        """Runs :meth:`redeem_now` when :meth:`due`."""
        return self.redeem_now() if self.due(now) else None

    def redeem_now(self) -> Redemption | None:
        """Reconciles, then redeems every channel with unredeemed value; returns the new
        redemption as recorded, or None when there was nothing to redeem."""
        if not self.reconcile():
            return None  # an earlier redemption is still in flight: wait for it first
        vouchers = self._redeemable()
        if not vouchers:
            return None
        pending = self.ledger.pending_receipts()
        receipts = [r for _, r in pending]
        root = receipts_tree(receipts).root if receipts else ZERO_ROOT
        cid = self.store.put(receipts_log(receipts))
        self.store.pin(cid)
        redemption_id = self.ledger.prepare_redemption(vouchers, [i for i, _ in pending], root, cid)
        return self._send(self._redemption(redemption_id))

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
                    "voucher of channel (%s, %d) expired at %d unredeemed: %d wei lost",
                    channel.payer, channel.model_id, voucher.deadline,
                    voucher.cumulative_amount - on_chain,
                )  # fmt: skip
                continue
            vouchers.append(channel.voucher)
        return vouchers  # ordered by model id: one payment split per model

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
