"""Everything a running node holds: chain access, ledger, payment gate, redeemer, adapter pool,
engine, model catalog and attribution, plus the background loop that refreshes the catalog and
redeems and the attribution worker that computes answers' gradients."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from web3 import Web3

from backend.protocol.deployments import DeploymentStore
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore
from inference_node.attribution import AttributionWorker, NodeAttribution
from inference_node.engine.model import MultiLoraModel
from inference_node.engine.pool import AdapterPool
from inference_node.engine.scheduler import Scheduler
from inference_node.payments import (
    Ledger,
    PaymentsChain,
    Redeemer,
    RedeemPolicy,
    RedeemSender,
    VerifyPolicy,
    VoucherVerifier,
    Web3Sender,
)
from inference_node.payments.ledger import Redemption
from inference_node.payments.session_relay import SessionKeyRelay
from inference_node.server.catalog import ModelCatalog
from inference_node.server.payment_gate import PaymentGate
from inference_node.server.settings import DATA_DIR, NodeSettings

log = logging.getLogger(__name__)


def stop_token_ids(model: MultiLoraModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids that end a generation: the tokenizer's eos and the generation config's."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(model.model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    return ids


def connect(settings: NodeSettings) -> tuple[Web3Protocol, Web3Sender]:
    """The protocol's contracts on the configured chain, and the node's transaction sender."""
    protocol = Web3Protocol.connect(settings.rpc_url, DeploymentStore(settings.deployments))
    w3, payments = protocol.w3, protocol["InferencePayments"]
    if settings.private_key is not None:
        key = bytes.fromhex(settings.private_key.get_secret_value().removeprefix("0x"))
        return protocol, Web3Sender(w3, payments, Account.from_key(key).address, key)
    assert settings.address is not None
    return protocol, Web3Sender(w3, payments, settings.address)


def redeem_policy(settings: NodeSettings) -> RedeemPolicy:
    """The redeemer's policy from the node's settings."""
    return RedeemPolicy(
        interval=settings.redeem_interval,
        threshold=settings.redeem_threshold_wei,
        urgency=settings.redeem_urgency,
        max_batch=settings.redeem_batch,
        gas_fraction=settings.redeem_gas_fraction,
    )


class NodeRuntime:
    """One inference node's parts, wired together."""

    def __init__(
        self,
        settings: NodeSettings,
        protocol: Web3Protocol,
        sender: RedeemSender,
        store: ContentStore,
        model: MultiLoraModel,
        tokenizer: PreTrainedTokenizerBase,
        base_dir: Path | None = None,
    ) -> None:
        """``base_dir``: the base model's folder, which attribution needs (None: every answer
        gets a zero attribution digest)."""
        self.settings, self.protocol, self.store = settings, protocol, store
        self.w3: Web3 = protocol.w3
        self.address = to_checksum_address(sender.address)
        self.tokenizer = tokenizer
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        payments, models = protocol["InferencePayments"], protocol["ModelRegistry"]
        self.chain = PaymentsChain(self.w3, payments, models, self.address)
        self.ledger = Ledger(settings.ledger_path, self.address)
        policy = VerifyPolicy(
            deadline_margin=settings.deadline_margin,
            max_deadline=settings.max_deadline,
            session_key_margin=settings.session_key_margin,
        )
        relay = SessionKeyRelay(self.chain, sender) if settings.relay_session_keys else None
        self.gate = PaymentGate(VoucherVerifier(self.chain, self.ledger, policy, relay))
        self.attribution: NodeAttribution | None = None
        if base_dir is None:
            log.warning("no base model folder given: answers get zero attribution digests")
        else:
            self.attribution = NodeAttribution(
                protocol, store, base_dir, settings.attribution_dir, settings.device
            )
            self.attribution.run_torch = lambda fn: self.engine.call(fn)  # its one torch thread
        self.redeemer = Redeemer(
            self.chain,
            self.ledger,
            store,
            sender,
            redeem_policy(settings),
            self.attribution,
        )
        self.pool = AdapterPool(
            model,
            store,
            settings.adapter_cache,
            settings.cpu_cache_bytes,
            disk_capacity_bytes=settings.disk_cache_bytes,
        )
        self.engine = Scheduler(
            model,
            tokenizer,  # type: ignore[arg-type]
            self.pool,
            max_batch=settings.max_batch,
            stop_token_ids=stop_token_ids(model, tokenizer),
        )
        allow = frozenset(settings.models) if settings.models is not None else None
        self.catalog = ModelCatalog(models, self.pool, settings.base_model_cid, allow)
        self._redeem_lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self.worker: AttributionWorker | None = None
        if self.attribution is not None:
            self.worker = AttributionWorker(self.ledger, self.attribution, self._engine_idle)

    def _calibrate(self) -> None:
        model = self.engine.model
        model.calibrate_base_matmul(self.settings.max_batch)
        model.calibrate_kernels(self.settings.max_batch)

    def _engine_idle(self) -> bool:
        stats = self.engine.stats()
        return stats.running == 0 and stats.waiting == 0

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> NodeRuntime:
        """Connects to the chain, loads the base model and opens the store and ledger."""
        from backend.storage.open import open_store

        protocol, sender = connect(settings)
        base = settings.base_model
        if base is None:
            from backend.models.base_models import ensure_smollm2

            base = ensure_smollm2(DATA_DIR)
        import torch

        log.info("loading base model %s on %s (%s)", base, settings.device, settings.dtype)
        model = MultiLoraModel.from_pretrained(
            base,
            slots=settings.slots,
            max_rank=settings.max_rank,
            dtype=getattr(torch, settings.dtype),
            device=settings.device,
        )
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        store = open_store(settings.store)
        return cls(settings, protocol, sender, store, model, tokenizer, Path(base))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> NodeRuntime:
        self.engine.start()
        # measured on the engine's thread, which runs them when serving (threads.py), logged:
        # the base projections' path and each regime's LoRA kernel
        self.engine.call(self._calibrate)
        self.catalog.refresh()
        with self._redeem_lock:
            self.redeemer.reconcile()  # a redemption a crash left half-done
        self._stop.clear()
        self._loop = threading.Thread(target=self._background, name="node-loop", daemon=True)
        self._loop.start()
        if self.worker is not None:
            self.worker.start()  # resumes the rows a restart left without gradients
        log.info(
            "node %s serving models %s",
            self.address,
            [m.name for m in self.catalog.served()],
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join()
            self._loop = None
        if self.worker is not None:
            self.worker.stop()
        self.engine.close()
        self.pool.flush()  # adapters fetched this run are on disk for the next
        self.ledger.close()

    def _background(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.catalog.refresh()
                with self._redeem_lock:
                    self.redeemer.maybe_redeem(self.chain.now())
            except Exception:  # the chain may be briefly unreachable; try again next time
                log.exception("background refresh or redemption failed")

    def redeem_now(self) -> list[Redemption]:
        """Redeems everything owed now, in as many batches as it takes."""
        with self._redeem_lock:
            return self.redeemer.redeem_all()

    def status(self) -> dict[str, Any]:
        """What an operator wants to see at a glance."""
        pending = self.ledger.pending_receipts()
        redemptions = self.ledger.redemptions()
        return {
            "node": self.address,
            "chain_id": self.chain.domain.chain_id,
            "models": [m.name for m in self.catalog.served()],
            "engine": asdict(self.engine.stats()),
            "adapters": asdict(self.pool.stats()),
            "refused_adapters": self.pool.refused(),
            "payments": {
                "unredeemed_wei": str(self.ledger.unredeemed_amount()),
                "pending_receipts": len(pending),
                "unsketched_answers": self.ledger.unsketched_count(),
                "redemptions": {
                    status: sum(r.status == status for r in redemptions)
                    for status in ("pending", "confirmed", "failed")
                },
                "last_usage_proof": next(
                    (r.proof_id for r in reversed(redemptions) if r.status == "confirmed"), None
                ),
            },
        }
