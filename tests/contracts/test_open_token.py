"""OpenToken: fixed supply minted to the treasury, EIP-2612 permits and burning."""

from __future__ import annotations

from typing import Any

import ape
import pytest
from ape import chain
from eth_account import Account
from eth_account.messages import encode_typed_data

from backend.protocol.contracts import project

OPEN = 10**18
TOTAL_SUPPLY = 1_000_000_000 * OPEN
FUNDED = 1_000_000 * OPEN  # what conftest gives each of the 8 role accounts
ZERO = "0x0000000000000000000000000000000000000000"

PERMIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


def permit_typed_data(token: Any, message: dict[str, Any]) -> dict[str, Any]:
    """The EIP-712 typed data of an EIP-2612 permit of ``token``, as a wallet receives it."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": PERMIT_TYPE,
        },
        "primaryType": "Permit",
        "domain": {
            "name": "OpenLedger",
            "version": "1",
            "chainId": chain.chain_id,
            "verifyingContract": token.address,
        },
        "message": message,
    }


def sign_permit(
    token: Any,
    private_key: str,
    owner: str,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> tuple[int, bytes, bytes]:
    """Signs an EIP-2612 permit for ``token`` with ``private_key``; returns (v, r, s)."""
    message = {
        "owner": owner,
        "spender": spender,
        "value": value,
        "nonce": nonce,
        "deadline": deadline,
    }
    typed = permit_typed_data(token, message)
    signed = Account.sign_message(encode_typed_data(full_message=typed), private_key)
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


@pytest.fixture
def permit_deadline() -> int:
    """A permit deadline an hour ahead."""
    return chain.pending_timestamp + 3600


def test_metadata_is_open_with_18_decimals(token):
    assert token.name() == "OpenLedger"
    assert token.symbol() == "OPEN"
    assert token.decimals() == 18
    assert token.TOTAL_SUPPLY() == TOTAL_SUPPLY


def test_constructor_mints_whole_supply_to_treasury(token, treasury):
    assert token.totalSupply() == TOTAL_SUPPLY
    # conftest moved FUNDED to each of eight role accounts; the rest stays in the treasury.
    assert token.balanceOf(treasury) == TOTAL_SUPPLY - 8 * FUNDED


def test_constructor_emits_transfer_from_zero_to_treasury(governance, other):
    fresh = governance.deploy(project().OpenToken, other)
    height = chain.blocks.height
    mints = list(fresh.Transfer.range(height, height + 1))
    assert [log.event_arguments for log in mints] == [
        {"from": ZERO, "to": other.address, "value": TOTAL_SUPPLY}
    ]
    assert fresh.balanceOf(other) == TOTAL_SUPPLY


def test_constructor_zero_treasury_reverts(governance):
    with ape.reverts(project().OpenToken.OpenTokenZeroTreasury):
        governance.deploy(project().OpenToken, ZERO)


def test_no_mint_function_exists(token):
    assert not any("mint" in abi.name.lower() for abi in token.contract_type.mutable_methods)


def test_transfer_moves_balance_and_emits(token, payer, other):
    tx = token.transfer(other, 5 * OPEN, sender=payer)
    assert tx.events == [token.Transfer(payer.address, other.address, 5 * OPEN)]
    assert token.balanceOf(payer) == FUNDED - 5 * OPEN
    assert token.balanceOf(other) == FUNDED + 5 * OPEN


def test_transfer_above_balance_reverts_insufficient_balance(token, payer, other):
    with ape.reverts(
        token.ERC20InsufficientBalance, sender=payer.address, balance=FUNDED, needed=FUNDED + 1
    ):
        token.transfer(other, FUNDED + 1, sender=payer)


def test_permit_sets_allowance_and_uses_nonce(token, payer, other, permit_deadline):
    value = 42 * OPEN
    v, r, s = sign_permit(
        token, payer.private_key, payer.address, other.address, value, 0, permit_deadline
    )
    # Anyone may submit the permit; the signature is what authorizes it.
    tx = token.permit(payer, other, value, permit_deadline, v, r, s, sender=other)
    assert tx.events == [token.Approval(payer.address, other.address, value)]
    assert token.allowance(payer, other) == value
    assert token.nonces(payer) == 1
    token.transferFrom(payer, other, value, sender=other)
    assert token.balanceOf(other) == FUNDED + value
    assert token.allowance(payer, other) == 0


def test_permit_by_wrong_signer_reverts_invalid_signer(token, payer, other, permit_deadline):
    v, r, s = sign_permit(
        token, other.private_key, payer.address, other.address, OPEN, 0, permit_deadline
    )
    with ape.reverts(token.ERC2612InvalidSigner, signer=other.address, owner=payer.address):
        token.permit(payer, other, OPEN, permit_deadline, v, r, s, sender=other)
    assert token.allowance(payer, other) == 0
    assert token.nonces(payer) == 0


def test_permit_after_deadline_reverts_expired(token, payer, other):
    deadline = chain.pending_timestamp + 60
    v, r, s = sign_permit(token, payer.private_key, payer.address, other.address, OPEN, 0, deadline)
    chain.pending_timestamp += 120
    with ape.reverts(token.ERC2612ExpiredSignature, deadline=deadline):
        token.permit(payer, other, OPEN, deadline, v, r, s, sender=other)
    assert token.allowance(payer, other) == 0


def test_permit_replayed_reverts_invalid_signer(token, payer, other, permit_deadline):
    v, r, s = sign_permit(
        token, payer.private_key, payer.address, other.address, OPEN, 0, permit_deadline
    )
    token.permit(payer, other, OPEN, permit_deadline, v, r, s, sender=other)
    with ape.reverts(token.ERC2612InvalidSigner):
        token.permit(payer, other, OPEN, permit_deadline, v, r, s, sender=other)
    assert token.nonces(payer) == 1


def test_permit_with_altered_value_reverts_invalid_signer(token, payer, other, permit_deadline):
    v, r, s = sign_permit(
        token, payer.private_key, payer.address, other.address, OPEN, 0, permit_deadline
    )
    with ape.reverts(token.ERC2612InvalidSigner):
        token.permit(payer, other, 2 * OPEN, permit_deadline, v, r, s, sender=other)


def test_domain_separator_matches_eip712_domain(token):
    fields = token.eip712Domain()
    assert fields[1] == "OpenLedger"
    assert fields[2] == "1"
    assert fields[3] == chain.chain_id
    assert fields[4] == token.address
    message = {"owner": ZERO, "spender": ZERO, "value": 0, "nonce": 0, "deadline": 0}
    typed = permit_typed_data(token, message)
    assert bytes(token.DOMAIN_SEPARATOR()) == encode_typed_data(full_message=typed).header


def test_burn_reduces_balance_and_supply(token, payer):
    tx = token.burn(10 * OPEN, sender=payer)
    assert tx.events == [token.Transfer(payer.address, ZERO, 10 * OPEN)]
    assert token.balanceOf(payer) == FUNDED - 10 * OPEN
    assert token.totalSupply() == TOTAL_SUPPLY - 10 * OPEN


def test_burn_above_balance_reverts_insufficient_balance(token, payer):
    with ape.reverts(
        token.ERC20InsufficientBalance, sender=payer.address, balance=FUNDED, needed=FUNDED + 1
    ):
        token.burn(FUNDED + 1, sender=payer)


def test_burn_from_spends_allowance(token, payer, other):
    token.approve(other, 3 * OPEN, sender=payer)
    tx = token.burnFrom(payer, 2 * OPEN, sender=other)
    assert tx.events.filter(token.Transfer) == [token.Transfer(payer.address, ZERO, 2 * OPEN)]
    assert token.allowance(payer, other) == OPEN
    assert token.totalSupply() == TOTAL_SUPPLY - 2 * OPEN


def test_burn_from_without_allowance_reverts_insufficient_allowance(token, payer, other):
    with ape.reverts(
        token.ERC20InsufficientAllowance, spender=other.address, allowance=0, needed=OPEN
    ):
        token.burnFrom(payer, OPEN, sender=other)
