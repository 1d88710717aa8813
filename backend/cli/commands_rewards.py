"""Attribution rewards, withdrawals, transfers and governance commands."""

from __future__ import annotations

import click

from backend.cli.commands_datanets import nonzero_root
from backend.cli.params import ADDRESS, AMOUNT, BYTES32, CID, ID, store_option
from backend.cli.registry import command
from backend.protocol.amounts import format_open
from backend.sdk import WITHDRAWALS, OpenLedger


@command("post-epoch", "Post an attribution epoch for a model")
@click.argument("model_id", type=ID)
@click.argument("merkle_root", type=BYTES32)
@click.argument("total", type=AMOUNT)
@click.argument("report_cid", type=CID)
def post_epoch(
    ol: OpenLedger, model_id: int, merkle_root: bytes, total: int, report_cid: str
) -> None:
    """Allocate TOTAL OPEN of MODEL_ID's pool by MERKLE_ROOT over (index, account, amount)
    leaves, as the attribution report REPORT_CID details."""
    log = ol.post_epoch(model_id, nonzero_root(merkle_root, "MERKLE_ROOT"), total, report_cid)
    click.echo(
        f"epoch {log.epochId}: {format_open(log.total)}, challengeable until {log.challengeEndsAt}"
    )


@command("challenge", "Dispute an attribution epoch with a bond")
@click.argument("epoch_id", type=ID)
@click.option("--reason-cid", default="", help="CID of the evidence.")
def challenge(ol: OpenLedger, epoch_id: int, reason_cid: str) -> None:
    """Dispute EPOCH_ID, posting the challenge bond (approved first)."""
    ol.challenge(epoch_id, reason_cid)


@command("resolve", "Rule on a challenged epoch (governance)")
@click.argument("epoch_id", type=ID)
@click.option(
    "--upheld/--dismissed",
    "upheld",
    default=None,
    help="Upheld: the poster is slashed; dismissed: the bond goes to the poster.",
)
def resolve(ol: OpenLedger, epoch_id: int, upheld: bool | None) -> None:
    """Resolve the dispute of EPOCH_ID."""
    if upheld is None:
        raise click.UsageError("say how the dispute ends: --upheld or --dismissed")
    log = ol.resolve(epoch_id, upheld)
    poster = ol.rewards.functions.epoch(epoch_id).call().poster
    click.echo(f"slashed {format_open(log.slashed)} from {poster}")


@command("sweep-epoch", "Return an expired epoch's unclaimed rest to its pool")
@click.argument("epoch_id", type=ID)
def sweep_epoch(ol: OpenLedger, epoch_id: int) -> None:
    """Sweep EPOCH_ID after its claim period: what nobody claimed goes back to the model's
    pool for a later epoch (anyone may send it)."""
    log = ol.sweep_epoch(epoch_id)
    click.echo(f"returned {format_open(log.amount)} to the pool of model {log.modelId}")


@command("claim-all", "Claim everything attribution epochs owe an account")
@click.option("--for", "claimant", type=ADDRESS, help="Whose rewards [default: the sender].")
@store_option
def claim_all(ol: OpenLedger, claimant: str | None, store_spec: str) -> None:
    """Claim every leaf the epochs' reports pay to the sender (or --for ACCOUNT), with proofs
    rebuilt from each report and checked against the posted root; list what waits for a
    challenge window."""
    from backend.storage.open import open_store

    store = open_store(store_spec)
    who = claimant or ol.address
    owed = ol.owed(lambda cid: store.get(cid, max_bytes=256 << 20), who)
    claimed_now = 0
    for o in owed:
        if o.claimed:
            continue
        if not o.claimable_now:
            click.echo(f"epoch {o.epoch_id} (model {o.model_id}): {format_open(o.amount)} "
                       "waits for its challenge window")  # fmt: skip
            continue
        ol.claim(o.epoch_id, o.index, o.account, o.amount, o.proof, o.model_id)
        claimed_now += o.amount
    earned = sum(o.amount for o in owed)
    click.echo(f"{who}: claimed {format_open(claimed_now)} now; {format_open(earned)} earned "
               f"in {len({o.epoch_id for o in owed})} open epoch(s)")  # fmt: skip


@command("claim", "Claim attribution rewards with a Merkle proof")
@click.argument("epoch_id", type=ID)
@click.argument("index", type=click.IntRange(min=0))
@click.argument("claimant", metavar="ACCOUNT", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
@click.argument("proof", nargs=-1, type=BYTES32)
def claim(
    ol: OpenLedger, epoch_id: int, index: int, claimant: str, amount: int, proof: tuple[bytes, ...]
) -> None:
    """Pay leaf INDEX of EPOCH_ID, AMOUNT to ACCOUNT, proven by the PROOF hashes."""
    ol.claim(epoch_id, index, claimant, amount, list(proof))


@command("withdraw", "Withdraw what a contract owes the sender")
@click.argument("which", type=click.Choice(list(WITHDRAWALS)))
@click.option("--node", type=ADDRESS, help="The channel's node (payments-deposit only).")
def withdraw(ol: OpenLedger, which: str, node: str | None) -> None:
    """Withdraw WHICH: payments-deposit (a requested, unlocked withdrawal of the channel with
    --node), earnings (node, developer, treasury), datanet (refunded bonds), rewards (bonds,
    slashings), unbonded stake."""
    if which == "payments-deposit" and node is None:
        raise click.UsageError("payments-deposit needs --node: the channel to withdraw from")
    click.echo(f"received {format_open(ol.withdraw(which, node))}")


@command("transfer", "Send OPEN to an account")
@click.argument("to", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
def transfer(ol: OpenLedger, to: str, amount: int) -> None:
    """Send AMOUNT OPEN to TO."""
    ol.transfer(to, amount)


@command("accept-governance", "Accept ownership offered by a deployment")
def accept_governance(ol: OpenLedger) -> None:
    """Accept ownership of every contract whose pending owner is the sender."""
    ol.accept_governance()
