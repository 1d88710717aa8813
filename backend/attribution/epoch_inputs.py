"""The public inputs of a model's next attribution epoch, read from the chain and the content
store alone (what the attributor and every auditor start from).

- The usage proofs that paid for the model: every ``UsageProofRecorded`` whose redemption has a
  ``PaymentSplit`` of the model, with that transaction's ``VoucherRedeemed`` (paid > 0) and
  ``PaymentSplit`` events in log order.
- Not yet covered: an epoch's report lists the proofs it paid for; the proofs of the model's
  epochs that were not rejected are covered (a rejected epoch's total went back to the pool, so
  its proofs are paid again by the next epoch).
- Each proof's receipts (its usage log: a bundle or an older plain receipts log) and the
  attribution records log the bundle names (None per receipt when there is none).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from eth_utils import event_abi_to_log_topic

from backend.attribution.corpus import Contribution
from backend.attribution.epoch import (
    Lineage,
    LineageContribution,
    ModelRun,
    PaidVoucher,
    RedemptionInput,
)
from backend.attribution.epoch_report import ReportError, UsageProofInput, extra_of
from backend.attribution.index import AttributionIndex
from backend.attribution.lineage import (
    LineageError,
    chain_lineage,
    member_examples,
    training_manifest,
)
from backend.attribution.record import AttributionRecord
from backend.attribution.records_log import (
    ZERO_DIGEST,
    RecordsLogError,
    parse_records_log,
    verify_record,
)
from backend.modelfactory.chain import model_version
from backend.protocol.enums import EpochStatus
from backend.protocol.receipts import ReceiptLogError, read_usage_log
from backend.protocol.web3_protocol import Web3Protocol
from backend.storage.base import ContentStore, ContentStoreError
from backend.storage.cid import InvalidCIDError

log = logging.getLogger(__name__)

MAX_LOG_BYTES = 256 << 20  # a usage log, a records log or a report


class EpochInputsError(RuntimeError):
    """Public inputs that cannot be read or do not fit together; the message names them."""


@dataclass(frozen=True)
class ProofEvents:
    """A usage proof and the payment events of its redemption."""

    proof: UsageProofInput
    node: str
    block: int
    vouchers: tuple[PaidVoucher, ...]
    runs: tuple[ModelRun, ...]


def _events(p: Web3Protocol, contract: str, event: str, from_block: int, **where: Any) -> list:
    return list(
        getattr(p[contract].events, event).get_logs(
            from_block=from_block, argument_filters=where or None
        )
    )


def decode_events(contract: Any, name: str, receipt: Any) -> list[Any]:
    """The ``name`` events ``contract`` logged in a transaction (its other events and other
    contracts' logs skipped by topic, not decoded and discarded with a warning)."""
    event = getattr(contract.events, name)()
    topic = event_abi_to_log_topic(event.abi)
    return [
        event.process_log(entry)
        for entry in receipt["logs"]
        if entry["address"] == contract.address and entry["topics"] and entry["topics"][0] == topic
    ]


def usage_proofs(p: Web3Protocol, model_id: int) -> list[ProofEvents]:
    """Every usage proof whose redemption paid ``model_id``, in proof order (found through the
    model's ``PaymentSplit`` events, indexed by model id)."""
    payments = p["InferencePayments"]
    found: list[ProofEvents] = []
    splits_of_model = _events(p, "InferencePayments", "PaymentSplit", p.deployment.block,
                              modelId=model_id)  # fmt: skip
    for tx_hash in dict.fromkeys(e.transactionHash for e in splits_of_model):
        receipt = p.w3.eth.get_transaction_receipt(tx_hash)
        (recorded,) = decode_events(payments, "UsageProofRecorded", receipt)
        splits = decode_events(payments, "PaymentSplit", receipt)
        redeemed = decode_events(payments, "VoucherRedeemed", receipt)
        a = recorded.args
        found.append(
            ProofEvents(
                proof=UsageProofInput(a.proofId, a.receiptsCID, bytes(a.receiptsRoot), None),
                node=a.node,
                block=recorded.blockNumber,
                vouchers=tuple(
                    PaidVoucher(v.args.payer, v.args.modelId, v.args.paid)
                    for v in sorted(redeemed, key=lambda e: e.logIndex)
                    if v.args.paid
                ),
                runs=tuple(
                    ModelRun(s.args.modelId, s.args.amount, s.args.contributorsShare)
                    for s in sorted(splits, key=lambda e: e.logIndex)
                ),
            )
        )
    return sorted(found, key=lambda e: e.proof.proof_id)


def covered_proofs(
    p: Web3Protocol, get: Callable[[str], bytes], model_id: int, before: int | None = None
) -> set[int]:
    """The usage proofs the model's epochs that were not rejected already paid for (only the
    epochs before epoch ``before``, when given)."""
    rewards = p["AttributionRewards"]
    covered: set[int] = set()
    for posted in _events(p, "AttributionRewards", "EpochPosted", p.deployment.block,
                          modelId=model_id):  # fmt: skip
        epoch_id, report_cid = posted.args.epochId, posted.args.reportCID
        if before is not None and epoch_id >= before:
            continue
        if rewards.functions.epoch(epoch_id).call().status == EpochStatus.REJECTED:
            continue
        try:
            report = json.loads(get(report_cid))
            ids = [int(u["id"]) for u in report["inputs"]["usage_proofs"]]
        except (ValueError, KeyError, TypeError) as why:
            raise EpochInputsError(
                f"epoch {epoch_id}'s report {report_cid} does not list its usage proofs: {why}"
            ) from None
        covered.update(ids)
    return covered


def pool_extra_available(
    p: Web3Protocol, get: Callable[[str], bytes], model_id: int, before_epoch: int | None = None
) -> int:
    """What the model's pool holds beyond what redemptions owe, from events alone (no
    historical state needed): funds put in by anyone but InferencePayments (``PoolFunded``)
    and expired epochs' rest (``EpochExpired``), less the extra every epoch that was not
    rejected already paid (its report's ``extra``). With ``before_epoch``: as it stood just
    before that epoch was posted (events logged before its ``EpochPosted``)."""
    rewards = p["AttributionRewards"]
    posted = _events(p, "AttributionRewards", "EpochPosted", p.deployment.block,
                     modelId=model_id)  # fmt: skip
    cutoff: tuple[int, int] | None = None
    if before_epoch is not None:
        mark = [e for e in posted if e.args.epochId == before_epoch]
        if not mark:
            raise EpochInputsError(f"epoch {before_epoch} was not posted for model {model_id}")
        cutoff = (mark[0].blockNumber, mark[0].logIndex)

    def earlier(event: Any) -> bool:
        return cutoff is None or (event.blockNumber, event.logIndex) < cutoff

    payments = p["InferencePayments"].address
    fundings = _events(p, "AttributionRewards", "PoolFunded", p.deployment.block,
                       modelId=model_id)  # fmt: skip
    expiries = _events(p, "AttributionRewards", "EpochExpired", p.deployment.block,
                       modelId=model_id)  # fmt: skip
    funded = sum(e.args.amount for e in fundings if e.args.funder != payments and earlier(e))
    expired = sum(e.args.amount for e in expiries if earlier(e))
    paid = 0
    for e in posted:
        if (
            not earlier(e)
            or rewards.functions.epoch(e.args.epochId).call().status == EpochStatus.REJECTED
        ):
            continue
        try:
            paid += extra_of(json.loads(get(e.args.reportCID)))
        except (ValueError, ReportError, ContentStoreError) as why:
            raise EpochInputsError(
                f"epoch {e.args.epochId}'s report {e.args.reportCID}: {why}"
            ) from None
    return max(funded + expired - paid, 0)


def redemption_input(
    get: Callable[[str], bytes], events: ProofEvents
) -> tuple[RedemptionInput, UsageProofInput]:
    """The receipts and records of one usage proof (records unchecked: see records_log)."""
    proof = events.proof
    try:
        usage = read_usage_log(get, proof.cid)
    except (ReceiptLogError, ContentStoreError, InvalidCIDError) as why:
        raise EpochInputsError(f"usage proof {proof.proof_id}: {why}") from None
    records: list[AttributionRecord | None] = [None] * len(usage.receipts)
    if usage.records_cid is not None:
        try:
            records = parse_records_log(
                get(usage.records_cid), f"attribution records log {usage.records_cid}"
            )
        except (RecordsLogError, ContentStoreError, InvalidCIDError) as why:
            raise EpochInputsError(f"usage proof {proof.proof_id}: {why}") from None
        if len(records) != len(usage.receipts):
            raise EpochInputsError(
                f"usage proof {proof.proof_id}: {len(records)} records for "
                f"{len(usage.receipts)} receipts"
            )
    redemption = RedemptionInput(
        proof.proof_id, tuple(usage.receipts), tuple(records), events.vouchers, events.runs
    )
    with_records = UsageProofInput(
        proof.proof_id, proof.cid, proof.receipts_root, usage.records_cid
    )
    return redemption, with_records


def next_epoch_inputs(
    p: Web3Protocol, get: Callable[[str], bytes], model_id: int
) -> tuple[list[RedemptionInput], list[UsageProofInput]]:
    """The redemptions of ``model_id`` no epoch has paid for yet, with their proofs."""
    covered = covered_proofs(p, get, model_id)
    pending = [e for e in usage_proofs(p, model_id) if e.proof.proof_id not in covered]
    return unzip(redemption_input(get, e) for e in pending)


def unzip(
    pairs: Iterable[tuple[RedemptionInput, UsageProofInput]],
) -> tuple[list[RedemptionInput], list[UsageProofInput]]:
    redemptions: list[RedemptionInput] = []
    proofs: list[UsageProofInput] = []
    for redemption, proof in pairs:
        redemptions.append(redemption)
        proofs.append(proof)
    return redemptions, proofs


def version_lineage(
    p: Web3Protocol, store: ContentStore, model_id: int, version: int
) -> tuple[Lineage, str | None]:
    """The contributions of an adapter version's lineage with their training examples, and
    the attribution index CID they were read from: the version's index when its training
    manifest names one, else the training manifests' own examples (their contributors read
    from the DatanetRegistry)."""
    manifest_cid = model_version(p, model_id, version).training_manifest_cid
    if not manifest_cid:
        raise EpochInputsError(f"model {model_id} has no version {version}")
    try:
        manifest = training_manifest(store, manifest_cid)
        if manifest.attribution is not None:
            index = AttributionIndex.read(
                lambda c, n: store.get(c, max_bytes=n), manifest.attribution
            )
            counts = index.examples_per_contribution()
            lineage = tuple(
                LineageContribution(c, n)
                for c, n in zip(index.corpus.contributions, counts, strict=True)
            )
            return lineage, manifest.attribution
        members = member_examples(p, store, chain_lineage(p, store, model_id, version))
    except (LineageError, ContentStoreError, InvalidCIDError) as why:
        raise EpochInputsError(f"model {model_id} version {version}: {why}") from None
    datanets = p["DatanetRegistry"].functions
    counts: dict[tuple[int, int], int] = {}
    for member in members:
        for _, example in member.examples:
            key = (member.member.datanet_id, example.contribution_id)
            counts[key] = counts.get(key, 0) + 1
    lineage = tuple(
        LineageContribution(Contribution(d, c, datanets.contribution(c).call()[0]), n)
        for (d, c), n in sorted(counts.items())
    )
    return lineage, None


def checked_records(
    redemption: RedemptionInput,
    indexes: dict[int, str | None],
    refuted: Mapping[bytes, list[str]] | None = None,
) -> tuple[RedemptionInput, int]:
    """``redemption`` with every record its receipt does not commit to replaced by None (that
    receipt is then paid by training examples, as one without a record), and how many were
    replaced. An answer record must hash to the receipt's digest; a full record must name the
    receipt's model, version and the version's index (it is bound to the digest by the
    answer's token ids, which are revealed only on a challenge: docs/attribution-epochs.md), and
    is refused when revealed token ids disprove it (``refuted``: by request hash, from
    :func:`.reveal.refute_full_records`).
    """
    refuted = refuted or {}
    kept: list[AttributionRecord | None] = []
    refused = 0
    for receipt, record in zip(redemption.receipts, redemption.records, strict=True):
        if record is None:
            kept.append(None)
            continue
        try:
            if record.query_sketch is None:
                kept.append(verify_record(receipt, record))
                continue
            if receipt.attribution_digest == ZERO_DIGEST:
                raise RecordsLogError("the receipt commits to no record")
            index_cid = indexes.get(receipt.adapter_version)
            if (record.model_id, record.version) != (receipt.model_id, receipt.adapter_version):
                raise RecordsLogError("the record names another model version")
            if index_cid is None or record.index != index_cid:
                raise RecordsLogError(f"the record is of index {record.index}, not {index_cid}")
            if receipt.request_hash in refuted:
                why = "; ".join(refuted[receipt.request_hash])
                raise RecordsLogError(f"its revealed token ids disprove its full record: {why}")
            kept.append(record)
        except RecordsLogError as why:
            log.warning(
                "usage proof %d, receipt 0x%s: %s: paid by training examples",
                redemption.usage_proof_id, receipt.request_hash.hex(), why,
            )  # fmt: skip
            kept.append(None)
            refused += 1
    return replace(redemption, records=tuple(kept)), refused
