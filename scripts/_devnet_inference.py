"""What `ape run devnet demo` prints of its inference half (`scripts/devnet.py` runs it):
ModelFactory's SFT, the paid node and its redemption, each paid answer's attribution record,
the attribution epoch (a tampered one slashed, the honest one claimed), the payer's feedback
as a Datanet and DPO on it. Kept apart from the chain and Datanet half, and from the
commands; a leading underscore keeps `ape run` from listing it as a script.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from backend.devnet.datanet_demo import DatanetDemo
from backend.devnet.stack import LocalStack
from backend.protocol.deployments import PROJECT_ROOT

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from backend.attribution.index import AttributionIndex
    from backend.attribution.record import AttributionRecord
    from backend.devnet.factory_demo import Trained
    from backend.storage.base import ContentStore

OPEN = 10**18
# The roles whose attribution rewards the demo does not claim: the contributor claims in the
# web app (its Contributor page), from the local test account the demo names.
LEFT_FOR_THE_WEB_APP = ("contributor",)


def open_text(wei: int) -> str:
    """``wei`` in OPEN, with thousands separators and no trailing zeros."""
    whole, frac = divmod(int(wei), OPEN)
    return f"{whole:,}" + (f".{frac:018d}".rstrip("0") if frac else "") + " OPEN"


def run_inference(
    stack: LocalStack, demo_run: DatanetDemo, data_dir: Path, port: int, train_steps: int
) -> None:
    """ModelFactory trains (or reuses) an adapter on the Datanet's version and registers it; a
    node serves it and is paid per answer; the payer's preferences become a Datanet; DPO on it
    publishes the model's next version."""
    from backend.devnet.factory_demo import (
        HELD_OUT,
        HELD_OUT_FILE,
        check_facts,
        dpo_model,
        dpo_verdict,
        feedback_datanet,
        index_summary,
        save_fact_checks,
        sft_model,
    )
    from backend.devnet.node_demo import ASKED, QUESTIONS, prepare, serve_and_pay

    p, pub, store, roles = stack.protocol, demo_run.publication, stack.store, stack.roles
    datanet_id = demo_run.datanet.datanet_id
    click.secho("ModelFactory: LoRA SFT on the Datanet's version", bold=True)
    sft = sft_model(p, store, roles, data_dir, datanet_id, pub.version, train_steps)
    _trained(sft, "trained now" if sft.trained_now else "reused the finished job")
    report = sft.eval_report
    click.echo(f"  held-out loss {report['base_loss']:.3f} (SmolLM2) -> "
               f"{report['adapter_loss']:.3f} (adapter), {report['examples']} examples, "
               f"{report['build']['skipped']} malformed rows skipped")  # fmt: skip
    cid, examples, contributions, _ = index_summary(sft)
    click.echo(f"  attribution index {cid}: {examples} training examples of {contributions} "
               f"contributions (span index + gradient sketches)")  # fmt: skip
    model_id = sft.published.model_id

    click.secho("Inference node (OpenLoRA)", bold=True)
    node_demo = prepare(p, roles, model_id)
    click.echo(f"  model {model_id} v{node_demo.adapter_version} (adapter "
               f"{node_demo.adapter_cid}); node {roles['node operator'].address} "
               f"{'staked now' if node_demo.staked_now else 'already staked'}; payer deposited "
               f"{open_text(node_demo.deposited_now)} now")  # fmt: skip
    log_file = data_dir / "node" / "node.log"
    click.echo(f"  starting the node on 127.0.0.1:{port} (log in {log_file}); the payer asks "
               f"{len(QUESTIONS)} questions {ASKED} times each, paying every answer")  # fmt: skip

    def answered(a: dict) -> None:
        click.echo(f"  Q: {a['question']}")
        click.echo(f"  A: {a['answer']!r}  [{a['tokens'][0]}+{a['tokens'][1]} tokens, "
                   f"{open_text(a['price'])}, receipt {a['receipt']}]")  # fmt: skip

    def redeeming() -> None:
        click.echo("  redeeming: the node adds each answer's gradients to its attribution "
                   "record, stores receipts and records, sends the usage proof ...")  # fmt: skip

    serve_and_pay(node_demo, p, store, roles, stack.anvil.url, data_dir, port, answered, redeeming)
    click.echo(f"  node served at {node_demo.node_url}")
    r, checks = node_demo.redemption, node_demo.checks
    if not r.get("redeemed"):
        raise click.ClickException(f"the redemption did not land: {r}")
    click.echo(f"  redeemed in tx {r['tx_hash']}: usage proof {r['usage_proof_id']}, "
               f"{r['receipts']} receipts, {open_text(int(r['paid']))} paid")  # fmt: skip
    click.echo(f"  receipts log {r['receipts_cid']}: Merkle root {checks['root_on_chain']} "
               f"recomputed from the log matches the chain: {checks['root_matches']}")  # fmt: skip
    if not checks["root_matches"]:
        raise click.ClickException("the usage proof's root does not match its receipts log")
    _attribution(stack, demo_run, r["receipts_cid"], node_demo.answers)
    _epoch(stack, demo_run, model_id, node_demo.answers)
    model = p.models.model(model_id)
    funded = p.rewards.pool(model_id).funded
    click.echo(f"  model {model_id}'s contributors' pool: {open_text(funded)} funded in all; "
               f"developer earnings {open_text(p.payments.earnings(model.developer))}, "
               f"node earnings "
               f"{open_text(p.payments.earnings(roles['node operator']))}")  # fmt: skip

    click.secho("Feedback -> preference Datanet -> DPO", bold=True)
    feedback = feedback_datanet(p, store, roles, data_dir, model_id, node_demo.answers,
                                QUESTIONS, [r["receipts_cid"]])  # fmt: skip
    click.echo(f"  the payer signed {feedback.signed_now} preferences now (EIP-712, checked "
               f"against the redeemed receipts: the answer stating the true fact, else the "
               f"one closer to it, is better; equal answers get none)")  # fmt: skip
    if feedback.publication is None or feedback.pairs < 2:
        click.echo(f"  DPO skipped: {feedback.pairs} preference pair(s) so far, a job needs 2 "
                   f"(the two answers to each question agreed); no gain to measure")  # fmt: skip
        return
    click.echo(f"  {feedback.pairs} pairs exported to Datanet {feedback.datanet_id} version "
               f"{feedback.publication.version} (manifest "
               f"{feedback.publication.manifest_cid})")  # fmt: skip
    dpo = dpo_model(p, store, roles, data_dir, model_id, feedback, max(2, train_steps // 4))
    _trained(dpo, "trained now" if dpo.trained_now else "reused the finished job")
    held = dpo.eval_report["held_out_preferences"]
    click.echo(f"  the job's held-out split: preference accuracy "
               f"{held['before']['accuracy']:.2f} -> {held['after']['accuracy']:.2f} on "
               f"{held['after']['pairs']} pair(s) (implicit reward vs SmolLM2)")  # fmt: skip
    click.echo(f"  held-out questions ({len(HELD_OUT)} that nobody trained on or asked: the "
               f"paid facts reworded, and general knowledge), SFT version -> DPO "
               f"version ...")  # fmt: skip
    before, after = check_facts(sft), check_facts(dpo)
    gained, verdict = dpo_verdict(before, after, feedback.pairs)
    save_fact_checks(data_dir / HELD_OUT_FILE, before, after, gained, verdict)
    click.echo(f"  {before.summary()} -> {after.summary()} (greedy); true answer more likely "
               f"than a confused one {before.likelihood_accuracy:.2f} -> "
               f"{after.likelihood_accuracy:.2f}; reward margin vs SmolLM2 "
               f"{before.reward_margin:+.2f} -> {after.reward_margin:+.2f}")  # fmt: skip
    click.secho(f"  {verdict}", fg="green" if gained else "yellow")
    cid, examples, contributions, members = index_summary(dpo)
    click.echo(f"  attribution index {cid}: {examples} examples of {contributions} "
               f"contributions from {members} lineage members (the SFT parent's Datanet and "
               f"the preference Datanet)")  # fmt: skip


def _attribution(
    stack: LocalStack, demo_run: DatanetDemo, usage_cid: str, answers: list[dict]
) -> None:
    """The attribution records the node published with the redemption, one per paid answer
    (each receipt commits to its record's digest)."""
    from backend.attribution.records_log import parse_records_log
    from backend.protocol.receipts import read_usage_log

    click.secho("Proof of Attribution: which contributions shaped each paid answer", bold=True)
    usage = read_usage_log(stack.store.get, usage_cid)
    if usage.records_cid is None:
        click.echo("  the node published no attribution records with this redemption")
        return
    records = parse_records_log(stack.store.get(usage.records_cid))
    click.echo(f"  records log {usage.records_cid}: {len(records)} records for "
               f"{len(usage.receipts)} receipts (node-scored: spans, then gradients)")  # fmt: skip
    files = {f.contribution_id: f.file for f in demo_run.files}
    text = {a["request_hash"]: a["answer"] for a in answers}
    spans = _SpanReader(stack.store)
    for receipt, r in zip(usage.receipts, records, strict=True):
        answer = text.get("0x" + receipt.request_hash.hex(), "(an earlier run's answer)")
        if r is None:
            click.echo(f"  {answer[:48]!r}: no record (model version without an index)")
            continue
        top = [f"{files.get(c.contribution_id, c.contribution_id)} {c.share / 10_000:.0f}%"
               for c in r.contributions[:3]]  # fmt: skip
        masses = (r.span_mass, r.gradient_mass, r.unattributed)
        click.echo(f"  {answer[:48]!r}: {', '.join(top) or 'nothing'}; spans/gradients/"
                   f"unattributed {'/'.join(f'{m / 10_000:.0f}%' for m in masses)}; digest "
                   f"0x{r.digest().hex()[:16]} = receipt's")  # fmt: skip
        for span, owners in spans.longest(r, answer)[:1]:
            where = ", ".join(files.get(c.contribution_id, str(c.contribution_id))
                              for c in owners)  # fmt: skip
            click.echo(f"      longest span found in training data: {span!r} ({where})")


class _SpanReader:
    """The spans of a record in words: its index fetched once per CID, the answer re-encoded
    with the base model's tokenizer (shown only when it hashes to the record's answer)."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.indexes: dict[str, AttributionIndex] = {}
        self.tokenizer: PreTrainedTokenizerBase | None = None

    def longest(self, record: AttributionRecord, answer: str) -> list[tuple[str, tuple]]:
        from transformers import AutoTokenizer

        from backend.attribution.explain import earning_spans
        from backend.attribution.index import AttributionIndex
        from backend.models.base_models import ensure_smollm2

        if record.index not in self.indexes:
            self.indexes[record.index] = AttributionIndex.read(self.store.get, record.index)
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(ensure_smollm2(PROJECT_ROOT / ".data"))
        ids = self.tokenizer.encode(answer, add_special_tokens=False)
        index = self.indexes[record.index]
        for candidate in (ids, [*ids, self.tokenizer.eos_token_id]):
            found = earning_spans(record, index, candidate)
            if found:
                return [(self.tokenizer.decode(list(e.tokens)), e.contributions) for e in found]
        return []


def _epoch(stack: LocalStack, demo_run: DatanetDemo, model_id: int, answers: list[dict]) -> None:
    """The node posts the attribution epoch of the redemptions, an auditor recomputes it, the
    contributors claim."""
    from backend.devnet.epoch_demo import run_epoch_demo

    click.secho("Attribution epoch: a tampered one slashed; the honest one posted, audited, "
                "claimed", bold=True)  # fmt: skip
    p = stack.protocol
    names = {a.address: role for role, a in stack.roles.items()}
    files = {f.contribution_id: f.file for f in demo_run.files}
    before = {a: int(p.token.balanceOf(a)) for a in names}
    epoch = run_epoch_demo(
        p.as_web3(), stack.store, stack.roles, model_id, unclaimed=LEFT_FOR_THE_WEB_APP
    )
    t = epoch.tampered
    if t is not None:
        victim = names.get(t.victim, t.victim)
        click.echo(f"  the node first posts a tampered epoch {t.epoch_id}: {open_text(t.moved)} of "
                   f"the {victim}'s amount moved to itself")  # fmt: skip
        changes = ", ".join(f"{names.get(d.account, d.account)} {'+' if d.delta > 0 else '-'}"
                            f"{open_text(abs(d.delta))}" for d in t.audit.differences)  # fmt: skip
        click.secho(f"  audit FAILED: posted vs recomputed from public inputs: {changes}; "
                    f"evidence {t.evidence_cid}", fg="red")  # fmt: skip
        click.echo(f"  the {victim} challenges epoch {t.epoch_id} with the evidence; governance "
                   f"upholds: the node's stake {open_text(t.stake_before)} -> "
                   f"{open_text(t.stake_after)} (slashed {open_text(t.slashed)}), the {victim} "
                   f"withdraws {open_text(t.challenger_paid)} (its bond back and the slashed "
                   f"stake), the epoch's total is back in the pool; the operator stakes "
                   f"{open_text(t.slashed)} again")  # fmt: skip
    prepared = epoch.prepared
    if prepared is None:
        click.echo("  no redemption of the model is left to attribute (an earlier run's epoch "
                   "paid for them)")  # fmt: skip
    else:
        click.echo(f"  epoch {epoch.epoch_id} posted by the node (the model's attributor): "
                   f"{open_text(prepared.total)} over {len(prepared.allocation.receipts)} receipts "
                   f"of usage proofs {[x.proof_id for x in prepared.proofs]}; report "
                   f"{epoch.report_cid}")  # fmt: skip
        text = {a["request_hash"]: a["question"] for a in answers}
        for row in prepared.document["contributors"]:
            account = row["account"]
            parts = ", ".join(f"{files.get(c, f'datanet {d} contribution {c}')} "
                              f"{open_text(int(amount))}"
                              for d, c, amount in row["contributions"])  # fmt: skip
            click.echo(f"  {names.get(account, account):<14} earns "
                       f"{open_text(int(row['amount']))}: {parts}")  # fmt: skip
            best = sorted(
                ((amount, r) for r in prepared.allocation.receipts
                 for c, amount in r.to_contributions if c.contributor == account),
                key=lambda x: -x[0],
            )[:2]  # fmt: skip
            for amount, r in best:
                question = text.get("0x" + r.receipt.request_hash.hex(), "an earlier question")
                how = "its record names it" if r.record and any(
                    c.contributor == account for c in r.record.contributions
                ) else "by training examples"  # fmt: skip
                click.echo(f"      {open_text(amount)} from the answer to {question!r} ({how})")
        audit = epoch.audit
        if audit is not None and audit.passed:
            click.secho(f"  audit passed: epoch {audit.epoch_id} recomputed from public inputs "
                        f"alone gives the same root 0x{audit.posted_root.hex()[:16]} and "
                        f"total", fg="green")  # fmt: skip
        elif audit is not None:
            raise click.ClickException(f"the audit of epoch {audit.epoch_id} failed: "
                                       f"{audit.evidence()}")  # fmt: skip
    left = {stack.roles[role].address: role for role in LEFT_FOR_THE_WEB_APP}
    for account, (claimed, owed) in epoch.claims.items():
        if account in left:
            number = list(stack.roles).index(left[account])
            click.echo(f"  {left[account]:<14} has {open_text(owed - claimed)} to claim: left "
                       f"for you to claim in the web app (Contributor page, local test account "
                       f"#{number})")  # fmt: skip
            continue
        gained = int(p.token.balanceOf(account)) - before.get(account, 0)
        sign = "+" if gained >= 0 else "-"
        from_challenge = ""
        if t is not None and account == t.victim:  # its bond came back with the slashed stake
            from_challenge = f", {open_text(t.slashed)} of it the slashed stake it won"
        click.echo(f"  {names.get(account, account):<14} claimed {open_text(claimed)} now "
                   f"({open_text(owed)} earned over all epochs); OPEN balance {sign}"
                   f"{open_text(abs(gained))} in this step{from_challenge}")  # fmt: skip


def _trained(t: Trained, how: str) -> None:
    what = "registered as" if t.published.registered_now else "published as"
    if not t.published.sent_now:
        what = "already on-chain as"
    click.echo(f"  {how} in {t.workdir}; {what} model {t.published.model_id} version "
               f"{t.published.version}, adapter {t.adapter_cid}")  # fmt: skip
