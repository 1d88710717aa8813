"""OpenLedger from the command line: one command per protocol action, on any ape network.

    ape run ol create-datanet bafy...meta --bond 1.5 --network ethereum:local:foundry \
        --account TEST::0
    ape run ol status --network ethereum:local:foundry --account TEST::0

Every command reads the deployment recorded by ``ape run deploy`` for the connected chain, checks
its input against the chain before sending anything, and prints what it did with the transaction
hash. Amounts are OPEN with up to 18 decimals (``1.5``) or wei (``1500wei``); a revert is shown
as the contract's custom error with its arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from ape.cli import ConnectedProviderCommand, account_option
from eth_utils import to_checksum_address

from backend.protocol.cli_support import (
    ADDRESS,
    AMOUNT,
    AMOUNT_OR_ZERO,
    BYTES32,
    CID,
    ID,
    IDS,
    ZERO_BYTES32,
    chain_now,
    ensure_allowance,
    fail,
    format_open,
    load_protocol,
    one_event,
    send_challenge,
    transact,
    unique,
)
from backend.protocol.contracts import Protocol
from backend.protocol.deployments import CONTRACT_NAMES
from backend.protocol.eip712 import (
    VOUCHER_TYPE,
    Signature,
    SignedVoucher,
    Voucher,
    recover_voucher_signer,
    sign_voucher,
    typed_message,
)
from backend.protocol.merkle import leaf_hash, process_proof
from backend.storage.open import STORE_ENV, default_store_spec, open_store

CONTRIBUTION_STATUS = ("None", "Pending", "Approved", "Rejected", "Withdrawn")
MODEL_STATUS = ("None", "Active", "Paused", "Retired")
EPOCH_STATUS = ("None", "Posted", "Challenged", "Rejected", "Expired")
CLAIM_LEAF_TYPES = ("uint256", "address", "uint256")  # (index, account, amount)
UINT64 = click.IntRange(min=0, max=2**64 - 1)
UINT96_MAX = 2**96 - 1
BPS = click.IntRange(min=0, max=10_000)
SKIP_REASONS = {1: "expired", 2: "invalid signer", 3: "session key not live", 4: "already redeemed"}
WITHDRAWALS = ("payments-deposit", "earnings", "datanet", "rewards", "unbonded")


@click.group()
def cli() -> None:
    """OpenLedger protocol actions: Datanets, models, nodes, payments and attribution rewards."""


def action(name: str, short_help: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A subcommand bound to an ape network (``--network``) and sender (``--account``)."""

    def decorate(f: Callable[..., Any]) -> click.Command:
        return cli.command(name, cls=ConnectedProviderCommand, short_help=short_help)(
            account_option()(f)
        )

    return decorate


# --- reads that turn bad input into clear errors ---------------------------------------------


def _ids(count: int, plural: str) -> str:
    return f"{plural} are 1..{count}" if count else f"no {plural} exist yet"


def require_datanet(p: Protocol, datanet_id: int) -> Any:
    count = int(p.datanets.datanetCount())
    if not 1 <= datanet_id <= count:
        raise fail(f"datanet {datanet_id} does not exist ({_ids(count, 'datanets')})")
    return p.datanets.datanet(datanet_id)


def require_curator(p: Protocol, datanet_id: int, account: Any) -> None:
    if not p.datanets.isCurator(datanet_id, account.address):
        raise fail(f"{account.address} is not a curator of datanet {datanet_id}")


def require_datanet_version(p: Protocol, datanet_id: int, version: int) -> None:
    published = int(require_datanet(p, datanet_id).versionCount)
    if not 1 <= version <= published:
        raise fail(
            f"datanet {datanet_id} has no published version {version} ({published} published)"
        )


def require_model(p: Protocol, model_id: int) -> Any:
    count = int(p.models.modelCount())
    if not 1 <= model_id <= count:
        raise fail(f"model {model_id} does not exist ({_ids(count, 'models')})")
    return p.models.model(model_id)


def require_epoch(p: Protocol, epoch_id: int) -> Any:
    count = int(p.rewards.epochCount())
    if not 1 <= epoch_id <= count:
        raise fail(f"epoch {epoch_id} does not exist ({_ids(count, 'epochs')})")
    return p.rewards.epoch(epoch_id)


def require_owner(contract: Any, account: Any, what: str) -> None:
    owner = contract.owner()
    if owner.lower() != account.address.lower():
        raise fail(f"{account.address} is not governance of {what} (governance is {owner})")


def timestamp_option(name: str, relative: str, what: str, default_in: int) -> Callable:
    """``--<relative> SECONDS`` (from now, default ``default_in``) or ``--<name> TIMESTAMP``."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option(
            f"--{name}",
            type=click.IntRange(min=1),
            help=f"The {what} as a unix timestamp (instead of --{relative}).",
        )(f)
        return click.option(
            f"--{relative}",
            type=click.IntRange(min=1),
            help=f"Seconds from now to the {what}  [default: {default_in}].",
        )(f)

    return decorate


def resolve_timestamp(
    absolute: int | None, relative: int | None, default_in: int, what: str
) -> int:
    if absolute is not None and relative is not None:
        raise click.UsageError(f"give the {what} as a timestamp or as seconds from now, not both")
    if absolute is not None:
        if absolute <= chain_now():
            raise fail(f"the {what} {absolute} is not in the future (now is {chain_now()})")
        return absolute
    return chain_now() + (relative if relative is not None else default_in)


# --- Datanets --------------------------------------------------------------------------------


@action("create-datanet", "Create a Datanet")
@click.argument("metadata_cid", type=CID)
@click.option("--bond", type=AMOUNT_OR_ZERO, default="0", help="OPEN taken per contribution.")
@click.option(
    "--min-approved",
    type=UINT64,
    default=1,
    show_default=True,
    help="Approved contributions needed before the first version.",
)
@click.option("--treasury", type=ADDRESS, help="Receives rejected bonds [default: the sender].")
def create_datanet(
    account: Any, metadata_cid: str, bond: int, min_approved: int, treasury: str | None
) -> None:
    """Create a Datanet described by METADATA_CID; the sender owns it."""
    if bond > UINT96_MAX:
        raise fail(f"--bond {format_open(bond)} is above the largest bond (uint96)")
    p = load_protocol()
    receipt = transact(
        "created datanet",
        p.datanets.createDatanet,
        metadata_cid,
        bond,
        min_approved,
        treasury or account.address,
        sender=account,
        protocol=p,
    )
    log = one_event(receipt, p.datanets.DatanetCreated)
    click.echo(
        f"datanet {log.datanetId}: bond {format_open(log.contributionBond)}, "
        f"min approved {log.minApproved}, treasury {log.treasury}"
    )


@action("add-curator", "Let an account review and publish a Datanet")
@click.argument("datanet_id", type=ID)
@click.argument("curator", type=ADDRESS)
def add_curator(account: Any, datanet_id: int, curator: str) -> None:
    """Make CURATOR a curator of DATANET_ID (the sender must own it)."""
    p = load_protocol()
    datanet = require_datanet(p, datanet_id)
    if datanet.owner.lower() != account.address.lower():
        raise fail(f"{account.address} does not own datanet {datanet_id} ({datanet.owner} does)")
    transact(
        f"added curator {curator} to datanet {datanet_id}",
        p.datanets.addCurator,
        datanet_id,
        curator,
        sender=account,
        protocol=p,
    )


@action("contribute", "Register a file (by CID) in a Datanet")
@click.argument("datanet_id", type=ID)
@click.argument("cid", type=CID)
@click.argument("size", type=UINT64)
def contribute(account: Any, datanet_id: int, cid: str, size: int) -> None:
    """Contribute CID (SIZE bytes) to DATANET_ID, paying its bond (approved first)."""
    p = load_protocol()
    datanet = require_datanet(p, datanet_id)
    # A CID held by a pending or approved contribution reverts (DuplicateContribution, decoded
    # by transact); a rejected or withdrawn one is free to contribute again.
    bond = int(datanet.contributionBond)
    if bond:
        ensure_allowance(p, account, p.datanets, bond)
    receipt = transact(
        f"contributed {cid} to datanet {datanet_id}",
        p.datanets.contribute,
        datanet_id,
        cid,
        size,
        sender=account,
        protocol=p,
    )
    log = one_event(receipt, p.datanets.Contributed)
    click.echo(f"contribution {log.contributionId}: {size} bytes, bond {format_open(log.bond)}")


@action("withdraw-contribution", "Take back a contribution nobody reviewed in 30 days")
@click.argument("contribution_id", type=ID)
def withdraw_contribution(account: Any, contribution_id: int) -> None:
    """Withdraw CONTRIBUTION_ID, left pending past the review timeout: its bond is credited
    back (then `withdraw datanet`) and its CID released."""
    p = load_protocol()
    receipt = transact(
        f"withdrew contribution {contribution_id}",
        p.datanets.withdrawContribution,
        contribution_id,
        sender=account,
        protocol=p,
    )
    bond = one_event(receipt, p.datanets.ContributionWithdrawn).bond
    click.echo(f"bond {format_open(bond)} credited: ape run ol withdraw datanet")


@action("review", "Approve or reject pending contributions")
@click.argument("datanet_id", type=ID)
@click.option("--approve", "approved", type=IDS, multiple=True, help="Contribution ids: 1,2,3.")
@click.option("--reject", "rejected", type=IDS, multiple=True, help="Contribution ids: 4,5.")
def review(
    account: Any, datanet_id: int, approved: tuple[list[int], ...], rejected: tuple[list[int], ...]
) -> None:
    """Approve (bond refunded) or reject (bond to the treasury) contributions of DATANET_ID."""
    approve_ids = unique(i for ids in approved for i in ids)
    reject_ids = unique(i for ids in rejected for i in ids)
    if not approve_ids and not reject_ids:
        raise click.UsageError("nothing to review: give --approve and/or --reject ids")
    both = sorted(set(approve_ids) & set(reject_ids))
    if both:
        raise click.UsageError(f"contributions {both} are both approved and rejected")
    p = load_protocol()
    require_datanet(p, datanet_id)
    require_curator(p, datanet_id, account)
    count = int(p.datanets.contributionCount())
    for cid_id in (*approve_ids, *reject_ids):
        if cid_id > count:
            raise fail(f"contribution {cid_id} does not exist ({_ids(count, 'contributions')})")
        c = p.datanets.contribution(cid_id)
        if int(c.datanetId) != datanet_id:
            raise fail(f"contribution {cid_id} belongs to datanet {c.datanetId}, not {datanet_id}")
        if CONTRIBUTION_STATUS[int(c.status)] != "Pending":
            raise fail(
                f"contribution {cid_id} was already reviewed "
                f"({CONTRIBUTION_STATUS[int(c.status)].lower()})"
            )
    ids = [*approve_ids, *reject_ids]
    verdicts = [True] * len(approve_ids) + [False] * len(reject_ids)
    transact(
        f"reviewed datanet {datanet_id}: approved {approve_ids or 'none'}, "
        f"rejected {reject_ids or 'none'}",
        p.datanets.review,
        datanet_id,
        ids,
        verdicts,
        sender=account,
        protocol=p,
    )


@action("publish-version", "Publish a Datanet version")
@click.argument("datanet_id", type=ID)
@click.argument("merkle_root", type=BYTES32)
@click.argument("manifest_cid", type=CID)
@click.argument("contribution_count", type=click.IntRange(min=1))
def publish_version(
    account: Any, datanet_id: int, merkle_root: bytes, manifest_cid: str, contribution_count: int
) -> None:
    """Publish the next version of DATANET_ID: MERKLE_ROOT over its CONTRIBUTION_COUNT approved
    contributions (leaves: contributionId, contributor, cid) and MANIFEST_CID listing them."""
    if merkle_root == ZERO_BYTES32:
        raise click.BadParameter("the Merkle root is zero", param_hint="MERKLE_ROOT")
    p = load_protocol()
    datanet = require_datanet(p, datanet_id)
    require_curator(p, datanet_id, account)
    if int(datanet.approvedCount) < int(datanet.minApproved):
        raise fail(
            f"datanet {datanet_id} has {datanet.approvedCount} approved contributions; "
            f"a version needs {datanet.minApproved}"
        )
    if contribution_count != int(datanet.approvedCount):
        raise fail(
            f"datanet {datanet_id} has {datanet.approvedCount} approved contributions now, not "
            f"{contribution_count}: rebuild the manifest and root over the current set"
        )
    receipt = transact(
        f"published a version of datanet {datanet_id}",
        p.datanets.publishVersion,
        datanet_id,
        merkle_root,
        manifest_cid,
        contribution_count,
        sender=account,
        protocol=p,
    )
    log = one_event(receipt, p.datanets.VersionPublished)
    click.echo(
        f"datanet {datanet_id} version {log.version}: {log.contributionCount} contributions, "
        f"root 0x{bytes(log.merkleRoot).hex()}"
    )


# --- models ----------------------------------------------------------------------------------


@action("register-model", "Register a LoRA model with its first adapter version")
@click.option("--metadata-cid", type=CID, required=True, help="Name, description, license.")
@click.option("--base-model-cid", type=CID, required=True, help="The base model.")
@click.option("--adapter-cid", type=CID, required=True, help="Version 1's PEFT adapter.")
@click.option(
    "--training-manifest-cid",
    type=CID,
    required=True,
    help="Version 1's training examples -> contributions.",
)
@click.option("--datanet-id", type=ID, required=True, help="Datanet version 1 was trained on.")
@click.option("--datanet-version", type=ID, required=True, help="Its published version.")
@click.option("--price-per-request", type=AMOUNT_OR_ZERO, default="0", help="OPEN per inference.")
@click.option("--price-per-token", type=AMOUNT_OR_ZERO, default="0", help="OPEN per token.")
@click.option("--developer-bps", type=BPS, required=True, help="Developer's share of payments.")
@click.option("--contributors-bps", type=BPS, required=True, help="Data contributors' share.")
@click.option("--node-bps", type=BPS, required=True, help="Serving node's share.")
@click.option("--protocol-bps", type=BPS, help="Protocol's share [default: governance's].")
@click.option("--attributor", type=ADDRESS, help="Posts attribution epochs [default: sender].")
def register_model(
    account: Any,
    metadata_cid: str,
    base_model_cid: str,
    adapter_cid: str,
    training_manifest_cid: str,
    datanet_id: int,
    datanet_version: int,
    price_per_request: int,
    price_per_token: int,
    developer_bps: int,
    contributors_bps: int,
    node_bps: int,
    protocol_bps: int | None,
    attributor: str | None,
) -> None:
    """Register a model; the sender is its developer."""
    for option, price in (
        ("--price-per-request", price_per_request),
        ("--price-per-token", price_per_token),
    ):
        if price > UINT96_MAX:
            raise fail(f"{option} {format_open(price)} is above the largest price (uint96)")
    p = load_protocol()
    required_protocol = int(p.models.protocolBps())
    floor = int(p.models.contributorsFloorBps())
    protocol_bps = required_protocol if protocol_bps is None else protocol_bps
    total = developer_bps + contributors_bps + node_bps + protocol_bps
    if total != 10_000:
        raise fail(f"the split adds up to {total} bps, not 10000")
    if protocol_bps != required_protocol:
        raise fail(f"--protocol-bps is {protocol_bps}; governance requires {required_protocol}")
    if contributors_bps < floor:
        raise fail(f"--contributors-bps {contributors_bps} is below the floor of {floor}")
    require_datanet_version(p, datanet_id, datanet_version)
    spec = (
        metadata_cid,
        base_model_cid,
        adapter_cid,
        training_manifest_cid,
        datanet_id,
        datanet_version,
        (price_per_request, price_per_token),
        (developer_bps, contributors_bps, node_bps, protocol_bps),
        attributor or account.address,
    )
    receipt = transact("registered model", p.models.registerModel, spec, sender=account, protocol=p)
    log = one_event(receipt, p.models.ModelRegistered)
    click.echo(f"model {log.modelId}: attributor {log.attributor}")


@action("publish-model-version", "Publish the next adapter version of a model")
@click.argument("model_id", type=ID)
@click.argument("adapter_cid", type=CID)
@click.argument("training_manifest_cid", type=CID)
@click.option("--datanet-id", type=ID, required=True, help="Datanet it was trained on.")
@click.option("--datanet-version", type=ID, required=True, help="Its published version.")
def publish_model_version(
    account: Any,
    model_id: int,
    adapter_cid: str,
    training_manifest_cid: str,
    datanet_id: int,
    datanet_version: int,
) -> None:
    """Publish ADAPTER_CID (trained as TRAINING_MANIFEST_CID lists) as MODEL_ID's next version."""
    p = load_protocol()
    model = require_model(p, model_id)
    if model.developer.lower() != account.address.lower():
        raise fail(f"{account.address} is not the developer of model {model_id}")
    if MODEL_STATUS[int(model.status)] == "Retired":
        raise fail(f"model {model_id} is retired")
    require_datanet_version(p, datanet_id, datanet_version)
    receipt = transact(
        f"published a version of model {model_id}",
        p.models.publishVersion,
        model_id,
        adapter_cid,
        training_manifest_cid,
        datanet_id,
        datanet_version,
        sender=account,
        protocol=p,
    )
    log = one_event(receipt, p.models.ModelVersionPublished)
    click.echo(f"model {model_id} version {log.version}")


# --- nodes -----------------------------------------------------------------------------------


@action("stake", "Stake OPEN as a node (and declare its endpoint)")
@click.argument("amount", type=AMOUNT)
@click.option("--endpoint", help="Public URL of the node's OpenAI-compatible API.")
def stake(account: Any, amount: int, endpoint: str | None) -> None:
    """Bond AMOUNT OPEN (approved first) in the NodeRegistry."""
    p = load_protocol()
    if endpoint is not None and len(endpoint.encode()) > 256:
        raise click.BadParameter("longer than 256 bytes", param_hint="--endpoint")
    ensure_allowance(p, account, p.nodes, amount)
    receipt = transact(
        f"staked {format_open(amount)}", p.nodes.stake, amount, sender=account, protocol=p
    )
    bonded = int(one_event(receipt, p.nodes.Staked).bonded)
    minimum = int(p.nodes.minStake())
    state = (
        "active" if p.nodes.isActive(account.address) else f"inactive (min {format_open(minimum)})"
    )
    click.echo(f"bonded {format_open(bonded)}: {state}")
    if endpoint is not None:
        transact(
            f"set endpoint {endpoint}", p.nodes.setEndpoint, endpoint, sender=account, protocol=p
        )


@action("unbond", "Start unbonding staked OPEN")
@click.argument("amount", type=AMOUNT)
def unbond(account: Any, amount: int) -> None:
    """Move AMOUNT of bonded stake to unbonding (withdraw it later: withdraw unbonded)."""
    p = load_protocol()
    bonded = int(p.nodes.nodeInfo(account.address).bonded)
    if amount > bonded:
        raise fail(
            f"{account.address} has {format_open(bonded)} bonded, less than {format_open(amount)}"
        )
    receipt = transact(
        f"unbonding {format_open(amount)}",
        p.nodes.requestUnbonding,
        amount,
        sender=account,
        protocol=p,
    )
    click.echo(f"unlocks at {one_event(receipt, p.nodes.UnbondingRequested).unlockAt}")


# --- payments --------------------------------------------------------------------------------


@action("deposit", "Deposit OPEN into a payment channel with a node")
@click.argument("node", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
def deposit(account: Any, node: str, amount: int) -> None:
    """Deposit AMOUNT OPEN (approved first) into the sender's channel with NODE; only NODE can
    redeem it, and a withdrawal waits the channel's delay."""
    p = load_protocol()
    ensure_allowance(p, account, p.payments, amount)
    receipt = transact(
        f"deposited {format_open(amount)} for node {node}",
        p.payments.deposit,
        node,
        amount,
        sender=account,
        protocol=p,
    )
    click.echo(f"channel balance {format_open(one_event(receipt, p.payments.Deposited).balance)}")


@action("request-withdrawal", "Ask to withdraw part of a channel's deposit")
@click.argument("node", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
def request_withdrawal(account: Any, node: str, amount: int) -> None:
    """Ask to withdraw AMOUNT from the sender's channel with NODE, payable after the channel's
    delay and for a day after that."""
    p = load_protocol()
    balance = int(p.payments.channel(account.address, node).balance)
    if amount > balance:
        raise fail(
            f"the channel of {account.address} with {node} holds {format_open(balance)}, "
            f"less than {format_open(amount)}"
        )
    receipt = transact(
        f"requested a withdrawal of {format_open(amount)}",
        p.payments.requestWithdrawal,
        node,
        amount,
        sender=account,
        protocol=p,
    )
    click.echo(f"unlocks at {one_event(receipt, p.payments.WithdrawalRequested).unlockAt}")


@action("authorize-session-key", "Let a session key sign vouchers on a channel")
@click.argument("node", type=ADDRESS)
@click.argument("signer", type=ADDRESS)
@click.option(
    "--allowance", type=AMOUNT, required=True, help="The most OPEN its vouchers may draw."
)
@timestamp_option("expiry", "expires-in", "key's expiry", 86_400)
def authorize_session_key(
    account: Any,
    node: str,
    signer: str,
    allowance: int,
    expires_in: int | None,
    expiry: int | None,
) -> None:
    """Let SIGNER sign vouchers for the sender on its channel with NODE until the expiry,
    drawing at most the allowance."""
    until = resolve_timestamp(expiry, expires_in, 86_400, "expiry")
    p = load_protocol()
    transact(
        f"authorized session key {signer} for node {node} until {until}, "
        f"allowance {format_open(allowance)}",
        p.payments.authorizeSessionKey,
        node,
        signer,
        until,
        allowance,
        sender=account,
        protocol=p,
    )


@action("revoke-session-key", "Revoke a session key of a channel")
@click.argument("node", type=ADDRESS)
@click.argument("signer", type=ADDRESS)
def revoke_session_key(account: Any, node: str, signer: str) -> None:
    """Revoke SIGNER on the sender's channel with NODE: its vouchers stay redeemable for the
    channel's delay (what the node already served), then the key stops."""
    p = load_protocol()
    receipt = transact(
        f"revoked session key {signer}",
        p.payments.revokeSessionKey,
        node,
        signer,
        sender=account,
        protocol=p,
    )
    click.echo(f"valid until {one_event(receipt, p.payments.SessionKeyRevoked).validUntil}")


def _sign(account: Any, p: Protocol, voucher: Voucher) -> SignedVoucher:
    """Signs with the account's key, or through the account (a wallet) when it holds none."""
    key = getattr(account, "private_key", None)
    if key:
        return sign_voucher(key, p.domain, voucher)
    signable = typed_message(p.domain, "Voucher", VOUCHER_TYPE, voucher.message())
    signed = account.sign_message(signable)
    if signed is None:
        raise fail(f"{account.alias or account.address} declined to sign the voucher")
    v = signed.v if signed.v >= 27 else signed.v + 27
    return SignedVoucher(voucher, Signature(v=v, r=bytes(signed.r), s=bytes(signed.s)))


@action("sign-voucher", "Sign a payment voucher (no transaction)")
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
def sign_voucher_command(
    account: Any,
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
    until = resolve_timestamp(deadline, deadline_in, 3_600, "deadline")
    p = load_protocol()
    require_model(p, model_id)
    payer = payer or account.address
    if payer.lower() != account.address.lower():
        key = p.payments.sessionKey(payer, node, account.address)
        if int(key.validUntil) <= chain_now():
            raise fail(f"{account.address} is not a live session key of {payer} for {node}")
    redeemed = int(p.payments.redeemed(payer, node, model_id))
    if cumulative_amount <= redeemed:
        raise fail(
            f"the channel ({payer}, {node}, model {model_id}) already redeemed "
            f"{format_open(redeemed)}; a voucher must promise more in total"
        )
    voucher = Voucher(
        payer=to_checksum_address(payer),
        node=node,
        model_id=model_id,
        cumulative_amount=cumulative_amount,
        deadline=until,
    )
    signed = _sign(account, p, voucher)
    if recover_voucher_signer(p.domain, signed).lower() != account.address.lower():
        raise fail("the signature does not recover to the sender; the wallet signed other data")
    data = signed.to_json()
    if out is not None:
        existing = json.loads(out.read_text()) if out.exists() else []
        if not isinstance(existing, list):
            raise fail(f"{out} does not hold a JSON list of vouchers")
        out.write_text(json.dumps([*existing, data], indent=2) + "\n")
    click.echo(json.dumps(data, indent=2))


def _read_vouchers(path: Path) -> list[SignedVoucher]:
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


@action("redeem", "Redeem signed vouchers as the node")
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
    account: Any,
    vouchers_file: Path,
    receipts_root: bytes,
    receipt_count: int | None,
    receipts_cid: str,
) -> None:
    """Redeem the vouchers in VOUCHERS_FILE (a JSON list, as sign-voucher writes) for the
    sender, which must be the vouchers' node, recording the usage proof."""
    vouchers = _read_vouchers(vouchers_file)
    p = load_protocol()
    if not p.nodes.isActive(account.address):
        raise fail(f"{account.address} is not an active node; stake first")
    for i, signed in enumerate(vouchers):
        v = signed.voucher
        if v.node.lower() != account.address.lower():
            raise fail(f"voucher {i} is for node {v.node}, not the sender {account.address}")
        require_model(p, v.model_id)
    receipt = transact(
        f"redeemed {len(vouchers)} voucher(s)",
        p.payments.redeem,
        [s.redemption_tuple() for s in vouchers],
        (receipts_root, len(vouchers) if receipt_count is None else receipt_count, receipts_cid),
        sender=account,
        protocol=p,
    )
    for log in p.payments.VoucherRedeemed.from_receipt(receipt):
        click.echo(
            f"  payer {log.payer} model {log.modelId}: paid {format_open(log.paid)}"
            + (f", shortfall {format_open(log.shortfall)}" if log.shortfall else "")
        )
    for log in p.payments.VoucherSkipped.from_receipt(receipt):
        reason = SKIP_REASONS.get(int(log.reason), str(log.reason))
        click.echo(f"  voucher {log.index} (payer {log.payer}) skipped: {reason}")
    proof = one_event(receipt, p.payments.UsageProofRecorded)
    click.echo(f"usage proof {proof.proofId}: paid {format_open(proof.amount)} in total")


# --- attribution rewards ---------------------------------------------------------------------


@action("post-epoch", "Post an attribution epoch for a model")
@click.argument("model_id", type=ID)
@click.argument("merkle_root", type=BYTES32)
@click.argument("total", type=AMOUNT)
@click.argument("report_cid", type=CID)
def post_epoch(
    account: Any, model_id: int, merkle_root: bytes, total: int, report_cid: str
) -> None:
    """Allocate TOTAL OPEN of MODEL_ID's pool by MERKLE_ROOT over (index, account, amount)
    leaves, as the attribution report REPORT_CID details."""
    if merkle_root == ZERO_BYTES32:
        raise click.BadParameter("the Merkle root is zero", param_hint="MERKLE_ROOT")
    p = load_protocol()
    model = require_model(p, model_id)
    if model.attributor.lower() != account.address.lower():
        raise fail(
            f"{account.address} is not the attributor of model {model_id} ({model.attributor} is)"
        )
    if not p.nodes.isActive(account.address):
        raise fail(f"{account.address} is not staked; the attributor must be an active node")
    unallocated = int(p.rewards.pool(model_id).unallocated)
    if total > unallocated:
        raise fail(
            f"total {format_open(total)} exceeds the pool of model {model_id}: "
            f"{format_open(unallocated)} unallocated"
        )
    receipt = transact(
        f"posted an epoch for model {model_id}",
        p.rewards.postEpoch,
        model_id,
        merkle_root,
        total,
        report_cid,
        sender=account,
        protocol=p,
    )
    log = one_event(receipt, p.rewards.EpochPosted)
    click.echo(
        f"epoch {log.epochId}: {format_open(log.total)}, challengeable until {log.challengeEndsAt}"
    )


@action("challenge", "Dispute an attribution epoch with a bond")
@click.argument("epoch_id", type=ID)
@click.option("--reason-cid", default="", help="CID of the evidence.")
def challenge(account: Any, epoch_id: int, reason_cid: str) -> None:
    """Dispute EPOCH_ID, posting the challenge bond (approved first)."""
    p = load_protocol()
    epoch = require_epoch(p, epoch_id)
    status = EPOCH_STATUS[int(epoch.status)]
    if status != "Posted":
        raise fail(f"epoch {epoch_id} is {status.lower()}; only a posted epoch can be challenged")
    send_challenge(p, account, epoch_id, reason_cid)


@action("resolve", "Rule on a challenged epoch (governance)")
@click.argument("epoch_id", type=ID)
@click.option(
    "--upheld/--dismissed",
    "upheld",
    default=None,
    help="Upheld: the poster is slashed; dismissed: the bond goes to the poster.",
)
def resolve(account: Any, epoch_id: int, upheld: bool | None) -> None:
    """Resolve the dispute of EPOCH_ID."""
    if upheld is None:
        raise click.UsageError("say how the dispute ends: --upheld or --dismissed")
    p = load_protocol()
    require_owner(p.rewards, account, "AttributionRewards")
    epoch = require_epoch(p, epoch_id)
    status = EPOCH_STATUS[int(epoch.status)]
    if status != "Challenged":
        raise fail(f"epoch {epoch_id} is {status.lower()}, not challenged")
    receipt = transact(
        f"{'upheld' if upheld else 'dismissed'} the challenge of epoch {epoch_id}",
        p.rewards.resolveChallenge,
        epoch_id,
        upheld,
        sender=account,
        protocol=p,
    )
    slashed = int(one_event(receipt, p.rewards.ChallengeResolved).slashed)
    click.echo(f"slashed {format_open(slashed)} from {epoch.poster}")


@action("sweep-epoch", "Return an expired epoch's unclaimed rest to its pool")
@click.argument("epoch_id", type=ID)
def sweep_epoch(account: Any, epoch_id: int) -> None:
    """Sweep EPOCH_ID after its claim period: what nobody claimed goes back to the model's
    pool for a later epoch (anyone may send it)."""
    p = load_protocol()
    receipt = transact(
        f"swept epoch {epoch_id}", p.rewards.sweepExpired, epoch_id, sender=account, protocol=p
    )
    log = one_event(receipt, p.rewards.EpochExpired)
    click.echo(f"returned {format_open(log.amount)} to the pool of model {log.modelId}")


@action("claim-all", "Claim everything attribution epochs owe an account")
@click.option("--for", "claimant", type=ADDRESS, help="Whose rewards [default: the sender].")
@click.option(
    "--store",
    "store_spec",
    default=default_store_spec,
    envvar=STORE_ENV,
    show_default=".data/devnet/store",
    help="Where the epochs' reports are: a directory, or an IPFS HTTP RPC API.",
)
def claim_all(account: Any, claimant: str | None, store_spec: str) -> None:
    """Claim every leaf the epochs' reports pay to the sender (or --for ACCOUNT), with proofs
    rebuilt from each report and checked against the posted root; list what waits for a
    challenge window."""
    from backend.attribution.claims import owed_to

    p = load_protocol()
    store = open_store(store_spec)
    who = claimant or account.address
    owed = owed_to(p.as_web3(), lambda cid: store.get(cid, max_bytes=256 << 20), who)
    claimed_now = 0
    for o in owed:
        if o.claimed:
            continue
        if not o.claimable_now:
            click.echo(f"epoch {o.epoch_id} (model {o.model_id}): {format_open(o.amount)} "
                       "waits for its challenge window")  # fmt: skip
            continue
        transact(
            f"claimed {format_open(o.amount)} for {who} from epoch {o.epoch_id} "
            f"(model {o.model_id})",
            p.rewards.claim,
            o.epoch_id,
            o.index,
            o.account,
            o.amount,
            o.proof,
            sender=account,
            protocol=p,
        )
        claimed_now += o.amount
    earned = sum(o.amount for o in owed)
    click.echo(f"{who}: claimed {format_open(claimed_now)} now; {format_open(earned)} earned "
               f"in {len({o.epoch_id for o in owed})} open epoch(s)")  # fmt: skip


@action("claim", "Claim attribution rewards with a Merkle proof")
@click.argument("epoch_id", type=ID)
@click.argument("index", type=click.IntRange(min=0))
@click.argument("claimant", metavar="ACCOUNT", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
@click.argument("proof", nargs=-1, type=BYTES32)
def claim(
    account: Any, epoch_id: int, index: int, claimant: str, amount: int, proof: tuple[bytes, ...]
) -> None:
    """Pay leaf INDEX of EPOCH_ID, AMOUNT to ACCOUNT, proven by the PROOF hashes."""
    p = load_protocol()
    epoch = require_epoch(p, epoch_id)
    if p.rewards.isClaimed(epoch_id, index):
        raise fail(f"leaf {index} of epoch {epoch_id} was already claimed")
    leaf = leaf_hash(CLAIM_LEAF_TYPES, (index, claimant, amount))
    if process_proof(leaf, list(proof)) != bytes(epoch.merkleRoot):
        raise fail(
            f"the proof does not show ({index}, {claimant}, {format_open(amount)}) "
            f"in epoch {epoch_id}"
        )
    receipt = transact(
        f"claimed {format_open(amount)} for {claimant} from epoch {epoch_id}",
        p.rewards.claim,
        epoch_id,
        index,
        claimant,
        amount,
        list(proof),
        sender=account,
        protocol=p,
    )
    one_event(receipt, p.rewards.Claimed)


# --- withdrawals, transfers, governance, status ----------------------------------------------


@action("withdraw", "Withdraw what a contract owes the sender")
@click.argument("which", type=click.Choice(WITHDRAWALS))
@click.option("--node", type=ADDRESS, help="The channel's node (payments-deposit only).")
def withdraw(account: Any, which: str, node: str | None) -> None:
    """Withdraw WHICH: payments-deposit (a requested, unlocked withdrawal of the channel with
    --node), earnings (node, developer, treasury), datanet (refunded bonds), rewards (bonds,
    slashings), unbonded stake."""
    p = load_protocol()
    who = account.address
    if which == "payments-deposit":
        if node is None:
            raise fail("payments-deposit needs --node: the channel to withdraw from")
        pending = int(p.payments.channel(who, node).pendingWithdrawal)
        if not pending:
            raise fail(
                f"{who} has no withdrawal pending with {node}: "
                "ape run ol request-withdrawal NODE AMOUNT"
            )
        receipt = transact(
            "withdrew the deposit", p.payments.withdraw, node, sender=account, protocol=p
        )
        amount = one_event(receipt, p.payments.Withdrawn).amount
    elif which == "earnings":
        if not int(p.payments.earnings(who)):
            raise fail(f"{who} has no earnings")
        receipt = transact(
            "withdrew earnings", p.payments.withdrawEarnings, sender=account, protocol=p
        )
        amount = one_event(receipt, p.payments.EarningsWithdrawn).amount
    elif which == "datanet":
        if not int(p.datanets.withdrawable(who)):
            raise fail(f"{who} has nothing to withdraw from the DatanetRegistry")
        receipt = transact(
            "withdrew from the DatanetRegistry", p.datanets.withdraw, sender=account, protocol=p
        )
        amount = one_event(receipt, p.datanets.Withdrawn).amount
    elif which == "rewards":
        if not int(p.rewards.withdrawable(who)):
            raise fail(f"{who} has nothing to withdraw from AttributionRewards")
        receipt = transact(
            "withdrew from AttributionRewards", p.rewards.withdraw, sender=account, protocol=p
        )
        amount = one_event(receipt, p.rewards.Withdrawn).amount
    else:
        if not int(p.nodes.nodeInfo(who).unbonding):
            raise fail(f"{who} has nothing unbonding: ape run ol unbond AMOUNT")
        receipt = transact(
            "withdrew unbonded stake", p.nodes.withdrawUnbonded, sender=account, protocol=p
        )
        amount = one_event(receipt, p.nodes.Unbonded).amount
    click.echo(f"received {format_open(amount)}")


@action("transfer", "Send OPEN to an account")
@click.argument("to", type=ADDRESS)
@click.argument("amount", type=AMOUNT)
def transfer(account: Any, to: str, amount: int) -> None:
    """Send AMOUNT OPEN to TO."""
    p = load_protocol()
    balance = int(p.token.balanceOf(account.address))
    if amount > balance:
        raise fail(
            f"{account.address} holds {format_open(balance)}, less than {format_open(amount)}"
        )
    transact(
        f"sent {format_open(amount)} to {to}",
        p.token.transfer,
        to,
        amount,
        sender=account,
        protocol=p,
    )


@action("accept-governance", "Accept ownership offered by a deployment")
def accept_governance(account: Any) -> None:
    """Accept ownership of every contract whose pending owner is the sender."""
    p = load_protocol()
    pending = [
        (name, contract)
        for name, contract in (
            ("DatanetRegistry", p.datanets),
            ("ModelRegistry", p.models),
            ("NodeRegistry", p.nodes),
            ("AttributionRewards", p.rewards),
            ("InferencePayments", p.payments),
        )
        if contract.pendingOwner().lower() == account.address.lower()
    ]
    if not pending:
        raise fail(f"no contract offers its ownership to {account.address}")
    for name, contract in pending:
        transact(f"accepted {name}", contract.acceptOwnership, sender=account, protocol=p)


@action("status", "Summarize the deployment and the sender's position")
@click.option("--node", "channel_nodes", type=ADDRESS, multiple=True, help="Show this channel.")
def status(account: Any, channel_nodes: tuple[str, ...]) -> None:
    """Print the deployment, protocol counts and the sender's balances, read from the chain
    (and its payment channels with each --node)."""
    p = load_protocol()
    d = p.deployment
    who = account.address
    click.echo(f"chain {d.chain_id} ({d.network or 'unnamed network'}), block {_head()}")
    for name in CONTRACT_NAMES:
        click.echo(f"  {name:<22} {d.address(name)}")
    click.echo(f"  {'governance':<22} {p.datanets.owner()}")
    click.echo(f"  {'treasury':<22} {p.payments.treasury()}")
    click.echo(f"OPEN supply           {format_open(p.token.totalSupply())}")
    click.echo(
        f"datanets {p.datanets.datanetCount()}, contributions {p.datanets.contributionCount()}, "
        f"models {p.models.modelCount()}, epochs {p.rewards.epochCount()}, "
        f"usage proofs {p.payments.usageProofCount()}"
    )
    node = p.nodes.nodeInfo(who)
    click.echo(f"account {who}")
    click.echo(f"  OPEN balance        {format_open(p.token.balanceOf(who))}")
    for channel_node in channel_nodes:
        ch = p.payments.channel(who, channel_node)
        click.echo(
            f"  channel with {channel_node}: {format_open(ch.balance)}"
            + (
                f" (withdrawal of {format_open(ch.pendingWithdrawal)} "
                f"unlocks at {ch.withdrawalUnlockAt})"
                if int(ch.pendingWithdrawal)
                else ""
            )
        )
    click.echo(f"  earnings            {format_open(p.payments.earnings(who))}")
    click.echo(
        f"  stake               {format_open(node.bonded)} bonded, "
        f"{format_open(node.unbonding)} unbonding, "
        f"{'active' if p.nodes.isActive(who) else 'inactive'}"
        + (f", endpoint {node.endpoint}" if node.endpoint else "")
    )
    if int(node.heldUntil) > _now() or int(node.openDisputes):
        click.echo(
            f"  stake held          until {node.heldUntil} (challenge windows), "
            f"{node.openDisputes} open dispute(s)"
        )
    click.echo(
        f"  withdrawable        datanet {format_open(p.datanets.withdrawable(who))}, "
        f"rewards {format_open(p.rewards.withdrawable(who))}"
    )


def _head() -> int:
    from ape import chain

    return int(chain.blocks.height)


def _now() -> int:
    from ape import chain

    return int(chain.blocks.head.timestamp)
