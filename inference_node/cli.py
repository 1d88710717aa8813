"""The node operator's CLI: ``serve``, ``stake``, ``redeem-now``, ``attribute``, ``reveal``,
``status``.

Settings come from ``OPENLEDGER_NODE_*`` environment variables (see server/settings.py); the
options here override them. Amounts are in OPEN (decimals allowed).
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

import click
import httpx
from pydantic import ValidationError
from web3.exceptions import ContractLogicError

from inference_node.logs import configure_logging
from inference_node.server.settings import NodeSettings

log = logging.getLogger("inference_node")
OPEN = 10**18


def _settings(**overrides: Any) -> NodeSettings:
    try:
        return NodeSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise click.UsageError(f"bad node settings: {exc}") from exc


def _wei(amount: str) -> int:
    try:
        value = Decimal(amount) * OPEN
    except InvalidOperation as exc:
        raise click.BadParameter(f"{amount!r} is not a number of OPEN") from exc
    if value <= 0 or value != value.to_integral_value():
        raise click.BadParameter(f"{amount} OPEN is not a positive amount of OPEN wei")
    return int(value)


def _echo(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.pass_context
def main(ctx: click.Context, log_format: str | None) -> None:
    """OpenLedger inference node."""
    ctx.obj = {"log_format": log_format}


@main.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--base-model", default=None, help="Hugging Face model folder (default SmolLM2)")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ...")
@click.option("--slots", type=int, default=None, help="adapters resident on the device")
@click.pass_context
def serve(ctx: click.Context, **overrides: Any) -> None:
    """Serve the registered models over the OpenAI-compatible API until stopped."""
    import uvicorn

    from inference_node.engine.threads import serial_main_thread
    from inference_node.server.app import create_app
    from inference_node.server.runtime import NodeRuntime

    serial_main_thread()  # torch's CPU threads are the engine thread's (threads.py)
    settings = _settings(**overrides, log_format=ctx.obj["log_format"])
    configure_logging(settings.log_format)
    runtime = NodeRuntime.from_settings(settings).start()
    try:
        uvicorn.run(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
    finally:
        runtime.stop()


@main.command()
@click.argument("amount")
@click.option("--endpoint", default=None, help="also declare this public API URL on-chain")
@click.pass_context
def stake(ctx: click.Context, amount: str, endpoint: str | None) -> None:
    """Stake AMOUNT OPEN in the NodeRegistry (approving it first)."""
    from inference_node.server.runtime import connect

    settings = _settings(log_format=ctx.obj["log_format"])
    configure_logging(settings.log_format)
    protocol, sender = connect(settings)
    wei = _wei(amount)
    nodes, token = protocol["NodeRegistry"], protocol["OpenToken"]
    calls = [token.functions.approve(nodes.address, wei), nodes.functions.stake(wei)]
    if endpoint:
        calls.append(nodes.functions.setEndpoint(endpoint))
    for call in calls:
        try:
            call.call({"from": sender.address})  # simulate first: a revert costs no gas
        except ContractLogicError as exc:
            raise click.ClickException(f"{call.fn_name} would revert: {exc}") from exc
        receipt = sender.wait(sender.send_call(call))
        if receipt["status"] != 1:
            raise click.ClickException(f"{call.fn_name} reverted")
    info = nodes.functions.nodeInfo(sender.address).call()
    _echo({"node": sender.address, "staked_wei": str(wei), "node_info": info,
           "active": nodes.functions.isActive(sender.address).call()})  # fmt: skip


def _running_node(settings: NodeSettings) -> str | None:
    url = f"http://{settings.host}:{settings.port}"
    try:
        httpx.get(f"{url}/health", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return url


@main.command("redeem-now")
@click.pass_context
def redeem_now(ctx: click.Context) -> None:
    """Redeem every channel's latest voucher now, with the pending receipts as usage proof."""
    settings = _settings(log_format=ctx.obj["log_format"])
    configure_logging(settings.log_format)
    url = _running_node(settings)
    if url is not None:  # the serving process owns the redeemer: ask it
        response = httpx.post(f"{url}/node/redeem", timeout=300)
        if response.status_code != 200:
            raise click.ClickException(f"the node refused: {response.text}")
        _echo(response.json())
        return
    from backend.storage.open import open_store
    from inference_node.payments import Ledger, PaymentsChain, Redeemer
    from inference_node.server.runtime import connect, redeem_policy

    protocol, sender = connect(settings)
    chain = PaymentsChain(protocol.w3, protocol["InferencePayments"], protocol["ModelRegistry"],
                          sender.address)  # fmt: skip
    with Ledger(settings.ledger_path, sender.address) as ledger:
        policy = redeem_policy(settings)
        done = Redeemer(chain, ledger, open_store(settings.store), sender, policy).redeem_all()
    if not done:
        _echo({"redeemed": False, "reason": "nothing unredeemed"})
        return
    for r in done:
        _echo({"redeemed": r.status == "confirmed", "status": r.status, "tx_hash": r.tx_hash,
               "usage_proof_id": r.proof_id, "paid": str(r.paid), "receipts": r.receipt_count,
               "receipts_cid": r.receipts_cid})  # fmt: skip


@main.command()
@click.option("--model", "model_id", type=click.IntRange(min=1), required=True)
@click.option("--dry-run", is_flag=True, help="compute and show the epoch; post nothing")
@click.pass_context
def attribute(ctx: click.Context, model_id: int, dry_run: bool) -> None:
    """Post MODEL's next attribution epoch: every redemption no epoch paid for, allocated to
    the contributions its answers used (the node must be the model's attributor)."""
    from backend.attribution.epoch_inputs import EpochInputsError
    from backend.attribution.epoch_service import post_epoch, prepare_epoch
    from backend.storage.open import open_store
    from inference_node.server.runtime import connect

    settings = _settings(log_format=ctx.obj["log_format"])
    configure_logging(settings.log_format)
    protocol, sender = connect(settings)
    store = open_store(settings.store)
    try:
        prepared = prepare_epoch(protocol, store, model_id)
    except EpochInputsError as why:
        raise click.ClickException(str(why)) from None
    if prepared is None:
        _echo({"posted": False, "reason": f"no redemption of model {model_id} left to pay for"})
        return
    summary = {
        "model": model_id,
        "usage_proofs": [p.proof_id for p in prepared.proofs],
        "receipts": len(prepared.allocation.receipts),
        "total_wei": str(prepared.total),
        "contributors": {a: str(v) for a, v in prepared.allocation.by_account().items()},
        "merkle_root": "0x" + prepared.root.hex(),
        "refused_records": prepared.refused_records,
    }
    if dry_run:
        _echo({"posted": False, **summary})
        return
    try:
        epoch_id, cid = post_epoch(
            protocol, store, lambda call: sender.wait(sender.send_call(call)), prepared
        )
    except (EpochInputsError, ContractLogicError) as why:
        raise click.ClickException(f"posting the epoch failed: {why}") from None
    _echo({"posted": True, "epoch": epoch_id, "report_cid": cid, **summary})


@main.command()
@click.option("--proof", "proof_id", type=click.IntRange(min=1), required=True,
              help="the usage proof whose answers to reveal")  # fmt: skip
@click.option("--receipt", "receipts", multiple=True, metavar="0xREQUEST_HASH",
              help="reveal only these receipts (repeatable; default: every one)")  # fmt: skip
@click.pass_context
def reveal(ctx: click.Context, proof_id: int, receipts: tuple[str, ...]) -> None:
    """Publish the token ids of a usage proof's answers, to settle a challenge of an epoch
    that paid them: anyone can then check their full attribution records (`ape run audit
    attribution MODEL EPOCH --reveal CID`). Token ids are the prompt's text: reveal only the
    disputed receipts."""
    from backend.storage.open import open_store
    from inference_node.attribution import RevealRefusedError, reveal_of
    from inference_node.payments import Ledger

    settings = _settings(log_format=ctx.obj["log_format"])
    configure_logging(settings.log_format)
    hashes = []
    for text in receipts:
        try:
            value = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            value = b""
        if len(value) != 32:
            raise click.BadParameter(f"{text!r} is not a request hash (0x and 64 hex digits)",
                                     param_hint="--receipt")  # fmt: skip
        hashes.append(value)
    if not settings.ledger_path.is_file():
        raise click.ClickException(f"no ledger at {settings.ledger_path}: nothing was served")
    with Ledger(settings.ledger_path, settings.node_address) as ledger:
        try:
            data = reveal_of(ledger, proof_id, hashes)
        except RevealRefusedError as why:
            raise click.ClickException(str(why)) from None
    cid = open_store(settings.store).put(data)
    _echo({"usage_proof_id": proof_id, "revealed": data.count(b"\n"), "reveal_cid": cid})


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """The node's stake and payments on-chain, its ledger, and its engine if it is serving."""
    from inference_node.payments import Ledger
    from inference_node.server.runtime import connect

    settings = _settings(log_format=ctx.obj["log_format"])
    protocol, sender = connect(settings)
    nodes = protocol["NodeRegistry"]
    out: dict[str, Any] = {
        "node": sender.address,
        "active": nodes.functions.isActive(sender.address).call(),
        "node_info": nodes.functions.nodeInfo(sender.address).call(),
    }
    if settings.ledger_path.exists():
        with Ledger(settings.ledger_path, sender.address) as ledger:
            out["ledger"] = {
                "unredeemed_wei": str(ledger.unredeemed_amount()),
                "pending_receipts": len(ledger.pending_receipts()),
                "redemptions": len(ledger.redemptions()),
            }
    url = _running_node(settings)
    out["serving"] = httpx.get(f"{url}/node/status", timeout=10).json() if url else None
    _echo(out)
