"""Node and payment commands: stake, channels, session keys, vouchers, redemption."""

from __future__ import annotations

import json
from pathlib import Path

import click

from backend.cli.params import (
    ADDRESS,
    AMOUNT,
    BYTES32,
    ID,
    UINT64,
    resolve_timestamp,
    timestamp_option,
)
from backend.cli.registry import command
from backend.protocol.amounts import format_open
from backend.protocol.eip712 import SignedVoucher
from backend.protocol.enums import SkipReason
from backend.sdk import OpenLedger


@command("stake", "Stake OPEN as a node (and declare its endpoint)")
@click.argument("amount", type=AMOUNT)
@click.option("--endpoint", help="Public URL of the node's OpenAI-compatible API.")
def stake(ol: OpenLedger, amount: int, endpoint: str | None) -> None:
    """Bond AMOUNT OPEN (approved first) in the NodeRegistry."""
    if endpoint is not None and len(endpoint.encode()) > 256:
        raise click.BadParameter("longer than 256 bytes", param_hint="--endpoint")
    staked = ol.stake(amount, endpoint)
    active = ol.nodes.functions.isActive(ol.address).call()
    minimum = int(ol.nodes.functions.minStake().call())
    state = "active" if active else f"inactive (min {format_open(minimum)})"
    click.echo(f"bonded {format_open(staked.bonded)}: {state}")


@command("unbond", "Start unbonding staked OPEN")
@click.argument("amount", type=AMOUNT)
def unbond(ol: OpenLedger, amount: int) -> None:
    """Move AMOUNT of bonded stake to unbonding (withdraw it later: withdraw unbonded)."""
    click.echo(f"unlocks at {ol.unbond(amount).unlockAt}")


@command("deposit", "Deposit OPEN into a payment channel with a node")
@click.argument("node", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
def deposit(ol: OpenLedger, node: str, amount: int) -> None:
    """Deposit AMOUNT OPEN (approved first) into the sender's channel with NODE; only NODE can
    redeem it, and a withdrawal waits the channel's delay."""
    click.echo(f"channel balance {format_open(ol.deposit(node, amount).balance)}")


@command("request-withdrawal", "Ask to withdraw part of a channel's deposit")
@click.argument("node", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
def request_withdrawal(ol: OpenLedger, node: str, amount: int) -> None:
    """Ask to withdraw AMOUNT from the sender's channel with NODE, payable after the channel's
    delay and for a day after that."""
    click.echo(f"unlocks at {ol.request_withdrawal(node, amount).unlockAt}")


@command("authorize-session-key", "Let a session key sign vouchers on a channel")
@click.argument("node", type=ADDRESS)
@click.argument("signer", type=ADDRESS)
@click.option(
    "--allowance", type=AMOUNT, required=True, help="The most OPEN its vouchers may draw."
)
@timestamp_option("expiry", "expires-in", "key's expiry", 86_400)
def authorize_session_key(
    ol: OpenLedger,
    node: str,
    signer: str,
    allowance: int,
    expires_in: int | None,
    expiry: int | None,
) -> None:
    """Let SIGNER sign vouchers for the sender on its channel with NODE until the expiry,
    drawing at most the allowance."""
    until = resolve_timestamp(expiry, expires_in, 86_400, "expiry", ol.now())
    ol.authorize_session_key(node, signer, until, allowance)


@command("revoke-session-key", "Revoke a session key of a channel")
@click.argument("node", type=ADDRESS)
@click.argument("signer", type=ADDRESS)
def revoke_session_key(ol: OpenLedger, node: str, signer: str) -> None:
    """Revoke SIGNER on the sender's channel with NODE: its vouchers stay redeemable for the
    channel's delay (what the node already served), then the key stops."""
    click.echo(f"valid until {ol.revoke_session_key(node, signer).validUntil}")


@command("sign-voucher", "Sign a payment voucher (no transaction)")
@click.argument("node", type=ADDRESS)
@click.argument("model_id", type=ID)
@click.argument("cumulative_amount", type=AMOUNT)
@timestamp_option("deadline", "deadline-in", "voucher's deadline", 3_600)
@click.option(
    "--payer",
    type=ADDRESS,
    help="Pay from this account, the sender being its session key [default: the sender].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also add the voucher to the JSON list in this file (created if missing).",
)
def sign_voucher(
    ol: OpenLedger,
    node: str,
    model_id: int,
    cumulative_amount: int,
    deadline_in: int | None,
    deadline: int | None,
    payer: str | None,
    out: Path | None,
) -> None:
    """Sign a voucher promising NODE CUMULATIVE_AMOUNT OPEN in total for MODEL_ID; prints its
    JSON (what `redeem` reads)."""
    until = resolve_timestamp(deadline, deadline_in, 3_600, "deadline", ol.now())
    data = ol.sign_voucher(node, model_id, cumulative_amount, until, payer).to_json()
    if out is not None:
        existing = json.loads(out.read_text()) if out.exists() else []
        if not isinstance(existing, list):
            raise click.ClickException(f"{out} does not hold a JSON list of vouchers")
        out.write_text(json.dumps([*existing, data], indent=2) + "\n")
    click.echo(json.dumps(data, indent=2))


def read_vouchers(path: Path) -> list[SignedVoucher]:
    """The signed vouchers in ``path`` (a JSON list, or one voucher), or a clear error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as why:
        raise click.BadParameter(f"cannot read vouchers from {path}: {why}") from None
    items = data if isinstance(data, list) else [data]
    vouchers = []
    for i, item in enumerate(items):
        try:
            vouchers.append(SignedVoucher.from_json(item))
        except (KeyError, TypeError, ValueError) as why:
            raise click.BadParameter(f"voucher {i} in {path} is malformed: {why!r}") from None
    if not vouchers:
        raise click.BadParameter(f"{path} holds no vouchers")
    return vouchers


@command("redeem", "Redeem signed vouchers as the node")
@click.argument("vouchers_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--receipts-root",
    type=BYTES32,
    default="0x" + "00" * 32,
    help="Merkle root of the receipts paid for.",
)
@click.option("--receipt-count", type=UINT64, help="Receipts paid for [default: vouchers].")
@click.option("--receipts-cid", default="", help="CID of the receipts log.")
def redeem(
    ol: OpenLedger,
    vouchers_file: Path,
    receipts_root: bytes,
    receipt_count: int | None,
    receipts_cid: str,
) -> None:
    """Redeem the vouchers in VOUCHERS_FILE (a JSON list, as sign-voucher writes) for the
    sender, which must be the vouchers' node, recording the usage proof."""
    vouchers = read_vouchers(vouchers_file)
    count = len(vouchers) if receipt_count is None else receipt_count
    paid, skipped, proof = ol.redeem(vouchers, receipts_root, count, receipts_cid)
    for log in paid:
        click.echo(
            f"  payer {log.payer} model {log.modelId}: paid {format_open(log.paid)}"
            + (f", shortfall {format_open(log.shortfall)}" if log.shortfall else "")
        )
    for log in skipped:
        reason = SkipReason(int(log.reason)).label.replace("_", " ")
        click.echo(f"  voucher {log.index} (payer {log.payer}) skipped: {reason}")
    click.echo(f"usage proof {proof.proofId}: paid {format_open(proof.amount)} in total")
