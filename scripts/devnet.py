"""The local stack: `ape run devnet demo` (what `make demo` runs) and `ape run devnet up`."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click
from ape import chain
from ape.logging import LogLevel, logger

from backend.devnet.datanet_demo import WRONG_FILES, DatanetDemo, run_datanet_demo
from backend.devnet.services import api_server, following_indexer, index_chain
from backend.devnet.stack import DEFAULT_DATA_DIR, LocalStack, local_stack
from backend.protocol.deployments import PROJECT_ROOT

OPEN = 10**18

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from backend.attribution.index import AttributionIndex
    from backend.attribution.record import AttributionRecord
    from backend.devnet.factory_demo import Trained
    from backend.storage.base import ContentStore


def _open(wei: int) -> str:
    whole, frac = divmod(int(wei), OPEN)
    return f"{whole:,}" + (f".{frac:018d}".rstrip("0") if frac else "") + " OPEN"


def _summary(stack: LocalStack) -> None:
    p = stack.protocol
    d = p.deployment
    state = "deployed now" if stack.deployed_now else "reused from the persisted chain state"
    click.secho(f"OpenLedger on chain {d.chain_id} at {stack.anvil.url} ({state})", bold=True)
    for name, address in d.contracts.items():
        click.echo(f"  {name:<20} {address}")
    click.echo(f"  deployed from block {d.block}; chain head is block {chain.blocks.height}")
    click.secho("Read back from the chain", bold=True)
    click.echo(f"  OPEN total supply      {_open(p.token.totalSupply())}")
    click.echo(f"  treasury balance       {_open(p.token.balanceOf(d.treasury))}")
    click.echo(f"  minimum node stake     {_open(p.nodes.minStake())}")
    click.echo(f"  withdrawal delay       {p.payments.withdrawalDelay()} s")
    click.echo(f"  challenge window       {p.rewards.challengeWindow()} s")
    click.echo(
        f"  protocol share         {p.models.protocolBps()} bps; "
        f"contributors' floor {p.models.contributorsFloorBps()} bps"
    )
    click.echo(
        f"  datanets {p.datanets.datanetCount()}, contributions {p.datanets.contributionCount()}, "
        f"models {p.models.modelCount()}, epochs {p.rewards.epochCount()}, "
        f"usage proofs {p.payments.usageProofCount()}"
    )
    click.secho("Local accounts", bold=True)
    for role, account in stack.roles.items():
        note = f"  (funded {_open(stack.funded[role])} now)" if role in stack.funded else ""
        click.echo(f"  {role:<14} {account.address}  {_open(p.token.balanceOf(account))}{note}")


def _datanet_summary(demo: DatanetDemo, stack: LocalStack) -> None:
    m, d, v = demo.metadata, demo.datanet, demo.publication
    state = "created now" if d.created_now else "reused: created by an earlier run"
    click.secho(f"Datanet {d.datanet_id}: {m.name} ({state})", bold=True)
    click.echo(f"  licence {m.license}, format {m.format.value}, metadata {d.metadata_cid}")
    click.echo(f"  content store {stack.store.root}")
    for f in demo.files:
        how = "registered now" if f.registered_now else "already registered, skipped"
        click.echo(
            f"  {f.role:<12} {f.file:<26} contribution {f.contribution_id:<3} {how}; {f.status}"
        )
    if demo.approved_now or demo.rejected_now:
        click.echo(
            f"  curator {stack.roles['governance'].address} approved {demo.approved_now or 'none'}"
            f", rejected {demo.rejected_now or 'none'} (wrong answers: {', '.join(WRONG_FILES)})"
        )
    else:
        click.echo("  review: nothing pending")
    state = "published now" if v.published_now else "unchanged, not republished"
    click.echo(
        f"  version {v.version} ({state}): {v.contribution_count} contributions, "
        f"root 0x{v.merkle_root.hex()}"
    )
    click.echo(f"  manifest {v.manifest_cid}")
    a = demo.audit
    if a.ok:
        click.secho(
            f"  audit passed: {len(a.versions)} version(s) recomputed from chain events, "
            f"manifests and roots match, {a.files_checked} files verified by CID",
            fg="green",
        )
    else:
        for finding in a.findings:
            click.echo(f"  DIFFERENCE {finding}")
        raise click.ClickException(f"the audit of datanet {d.datanet_id} found differences")


def _serve_and_query(stack: LocalStack, demo_run: DatanetDemo, data_dir: Path, port: int) -> None:
    """Indexes the chain, starts the API on it and reads the demo's Datanet back through it."""
    d = stack.protocol.deployment
    result = index_chain(data_dir / "index.db", d, stack.anvil.url)
    click.secho("Indexer and API", bold=True)
    click.echo(
        f"  indexed blocks {result.from_block}..{result.to_block} into {data_dir / 'index.db'}"
    )
    datanet_id = demo_run.datanet.datanet_id
    version = demo_run.publication.version
    with api_server(data_dir / "index.db", stack.store.root, port) as api:
        detail = api.get(f"/datanets/{datanet_id}")
        members = api.get(f"/datanets/{datanet_id}/versions/{version}/contributions?limit=1")
        first = members["items"][0]["id"]
        proof = api.get(f"/datanets/{datanet_id}/versions/{version}/proofs/{first}")
        siblings = [bytes.fromhex(h.removeprefix("0x")) for h in proof["proof"]]
        cid = proof["leaf"]["cid"]
        on_chain = stack.protocol.datanets.isInVersion(datanet_id, version, first, cid, siblings)
        click.echo(f"  API {api.url}: datanet {datanet_id} (metadata {detail['metadata_cid']}) "
                   f"has {members['total']} contributions in version {version}")  # fmt: skip
        click.echo(
            f"  Merkle proof of contribution {first} from the API verifies on-chain: {on_chain}"
        )


def _inference(
    stack: LocalStack, demo_run: DatanetDemo, data_dir: Path, port: int, train_steps: int
) -> None:
    """ModelFactory trains (or reuses) an adapter on the Datanet's version and registers it; a
    node serves it and is paid per answer; the payer's preferences become a Datanet; DPO on it
    publishes the model's next version."""
    from backend.devnet.factory_demo import (
        HELD_OUT,
        check_facts,
        dpo_model,
        dpo_verdict,
        feedback_datanet,
        index_summary,
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
               f"{_open(node_demo.deposited_now)} now")  # fmt: skip
    log_file = data_dir / "node" / "node.log"
    click.echo(f"  starting the node on 127.0.0.1:{port} (log in {log_file}); the payer asks "
               f"{len(QUESTIONS)} questions {ASKED} times each, paying every answer")  # fmt: skip

    def answered(a: dict) -> None:
        click.echo(f"  Q: {a['question']}")
        click.echo(f"  A: {a['answer']!r}  [{a['tokens'][0]}+{a['tokens'][1]} tokens, "
                   f"{_open(a['price'])}, receipt {a['receipt']}]")  # fmt: skip

    def redeeming() -> None:
        click.echo("  redeeming: the node adds each answer's gradients to its attribution "
                   "record, stores receipts and records, sends the usage proof ...")  # fmt: skip

    serve_and_pay(node_demo, p, store, roles, stack.anvil.url, data_dir, port, answered, redeeming)
    click.echo(f"  node served at {node_demo.node_url}")
    r, checks = node_demo.redemption, node_demo.checks
    if not r.get("redeemed"):
        raise click.ClickException(f"the redemption did not land: {r}")
    click.echo(f"  redeemed in tx {r['tx_hash']}: usage proof {r['usage_proof_id']}, "
               f"{r['receipts']} receipts, {_open(int(r['paid']))} paid")  # fmt: skip
    click.echo(f"  receipts log {r['receipts_cid']}: Merkle root {checks['root_on_chain']} "
               f"recomputed from the log matches the chain: {checks['root_matches']}")  # fmt: skip
    if not checks["root_matches"]:
        raise click.ClickException("the usage proof's root does not match its receipts log")
    _attribution(stack, demo_run, r["receipts_cid"], node_demo.answers)
    _epoch(stack, demo_run, model_id, node_demo.answers)
    model = p.models.model(model_id)
    funded = p.rewards.pool(model_id).funded
    click.echo(f"  model {model_id}'s contributors' pool: {_open(funded)} funded in all; "
               f"developer earnings {_open(p.payments.earnings(model.developer))}, node earnings "
               f"{_open(p.payments.earnings(roles['node operator']))}")  # fmt: skip

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
    epoch = run_epoch_demo(p.as_web3(), stack.store, stack.roles, model_id)
    t = epoch.tampered
    if t is not None:
        victim = names.get(t.victim, t.victim)
        click.echo(f"  the node first posts a tampered epoch {t.epoch_id}: {_open(t.moved)} of "
                   f"the {victim}'s amount moved to itself")  # fmt: skip
        changes = ", ".join(f"{names.get(d.account, d.account)} {'+' if d.delta > 0 else '-'}"
                            f"{_open(abs(d.delta))}" for d in t.audit.differences)  # fmt: skip
        click.secho(f"  audit FAILED: posted vs recomputed from public inputs: {changes}; "
                    f"evidence {t.evidence_cid}", fg="red")  # fmt: skip
        click.echo(f"  the {victim} challenges epoch {t.epoch_id} with the evidence; governance "
                   f"upholds: the node's stake {_open(t.stake_before)} -> "
                   f"{_open(t.stake_after)} (slashed {_open(t.slashed)}), the {victim} "
                   f"withdraws {_open(t.challenger_paid)} (its bond back and the slashed "
                   f"stake), the epoch's total is back in the pool; the operator stakes "
                   f"{_open(t.slashed)} again")  # fmt: skip
    prepared = epoch.prepared
    if prepared is None:
        click.echo("  no redemption of the model is left to attribute (an earlier run's epoch "
                   "paid for them)")  # fmt: skip
    else:
        click.echo(f"  epoch {epoch.epoch_id} posted by the node (the model's attributor): "
                   f"{_open(prepared.total)} over {len(prepared.allocation.receipts)} receipts "
                   f"of usage proofs {[x.proof_id for x in prepared.proofs]}; report "
                   f"{epoch.report_cid}")  # fmt: skip
        text = {a["request_hash"]: a["question"] for a in answers}
        for row in prepared.document["contributors"]:
            account = row["account"]
            parts = ", ".join(f"{files.get(c, f'datanet {d} contribution {c}')} "
                              f"{_open(int(amount))}"
                              for d, c, amount in row["contributions"])  # fmt: skip
            click.echo(f"  {names.get(account, account):<14} earns {_open(int(row['amount']))}: "
                       f"{parts}")  # fmt: skip
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
                click.echo(f"      {_open(amount)} from the answer to {question!r} ({how})")
        audit = epoch.audit
        if audit is not None and audit.passed:
            click.secho(f"  audit passed: epoch {audit.epoch_id} recomputed from public inputs "
                        f"alone gives the same root 0x{audit.posted_root.hex()[:16]} and "
                        f"total", fg="green")  # fmt: skip
        elif audit is not None:
            raise click.ClickException(f"the audit of epoch {audit.epoch_id} failed: "
                                       f"{audit.evidence()}")  # fmt: skip
    for account, (claimed, owed) in epoch.claims.items():
        gained = int(p.token.balanceOf(account)) - before.get(account, 0)
        sign = "+" if gained >= 0 else "-"
        from_challenge = ""
        if t is not None and account == t.victim:  # its bond came back with the slashed stake
            from_challenge = f", {_open(t.slashed)} of it the slashed stake it won"
        click.echo(f"  {names.get(account, account):<14} claimed {_open(claimed)} now "
                   f"({_open(owed)} earned over all epochs); OPEN balance {sign}"
                   f"{_open(abs(gained))} in this step{from_challenge}")  # fmt: skip


def _trained(t: Trained, how: str) -> None:
    what = "registered as" if t.published.registered_now else "published as"
    if not t.published.sent_now:
        what = "already on-chain as"
    click.echo(f"  {how} in {t.workdir}; {what} model {t.published.model_id} version "
               f"{t.published.version}, adapter {t.adapter_cid}")  # fmt: skip


@click.group()
def cli() -> None:
    """The local OpenLedger stack (anvil on 127.0.0.1, state under .data/)."""


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Chain state, deployment record and content store.",
)
@click.option("--port", type=int, default=8545, show_default=True)
@click.option("--api-port", type=int, default=8000, show_default=True)
@click.option("--node-port", type=int, default=8100, show_default=True)
@click.option(
    "--train-steps", type=int, default=60, show_default=True,
    help="SFT steps (batch 8) of the demo model when it is trained; DPO takes a quarter.",
)  # fmt: skip
@click.option(
    "--inference/--no-inference", default=True, show_default=True,
    help="Also train, register, serve and pay for the demo model.",
)  # fmt: skip
def demo(
    data_dir: Path, port: int, api_port: int, node_port: int, train_steps: int, inference: bool
) -> None:
    """Start the chain, deploy or reuse the protocol, fund accounts, run the Datanet flow on the
    project's dataset (create, contribute, review, publish, audit), then train or reuse a LoRA
    adapter on it, serve it on an inference node and pay for answers; summarise, stop."""
    with local_stack(data_dir, port) as stack:
        _summary(stack)
        logger.set_level(LogLevel.WARNING)  # not a line per confirmed transaction
        demo_run = run_datanet_demo(stack.protocol, stack.store, stack.roles)
        _datanet_summary(demo_run, stack)
        _serve_and_query(stack, demo_run, data_dir, api_port)
        if inference:
            _inference(stack, demo_run, data_dir, node_port, train_steps)
    click.echo("Stopped the node, the API and the local chain; state is kept in " + str(data_dir))


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Chain state and deployment record.",
)
@click.option("--port", type=int, default=8545, show_default=True)
@click.option("--api-port", type=int, default=8000, show_default=True)
def up(data_dir: Path, port: int, api_port: int) -> None:
    """Start the local stack (chain, indexer following it, API) and keep it running until
    interrupted (Ctrl-C)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with local_stack(data_dir, port) as stack:
        _summary(stack)
        d = stack.protocol.deployment
        with (
            following_indexer(data_dir / "index.db", d, stack.anvil.url),
            api_server(data_dir / "index.db", stack.store.root, api_port) as api,
        ):
            click.secho(
                f"Running: RPC {stack.anvil.url} (chain id {d.chain_id}), API {api.url} "
                f"(docs at http://127.0.0.1:{api_port}/docs), deployments in "
                f"{data_dir / 'deployments.json'}, content in {stack.store.root}. Ctrl-C stops it.",
                bold=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    click.echo("Stopped.")
