"""backend.protocol.eip712: voucher and session-key typed data, checked against an independent
encoding of EIP-712 (eth_abi + keccak), without a chain."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.protocol.eip712 import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    SECP256K1_N,
    Domain,
    InvalidSignatureError,
    SessionKeyAuthorization,
    Signature,
    SignedVoucher,
    Voucher,
    parse_signature,
    recover_voucher_signer,
    sign_session_key,
    sign_voucher,
    voucher_digest,
)

PAYER_KEY = b"\x11" * 32
OTHER_KEY = b"\x22" * 32
PAYER = Account.from_key(PAYER_KEY).address
OTHER = Account.from_key(OTHER_KEY).address
NODE = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
CONTRACT = "0x0165878A594ca255338adfa4d48449f69242Eb8F"
DOMAIN = Domain(chain_id=1337, verifying_contract=CONTRACT)
VOUCHER = Voucher(PAYER, NODE, 7, 12 * 10**18 + 5, 1_900_000_000)
UINT256 = st.integers(min_value=0, max_value=2**256 - 1)


def domain_separator(domain: Domain) -> bytes:
    """EIP-712 hashStruct(EIP712Domain), written out independently of the module under test."""
    typehash = keccak(
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                typehash,
                keccak(DOMAIN_NAME.encode()),
                keccak(DOMAIN_VERSION.encode()),
                domain.chain_id,
                domain.verifying_contract,
            ],
        )
    )


def expected_voucher_digest(domain: Domain, v: Voucher) -> bytes:
    """keccak(0x1901 ‖ domainSeparator ‖ hashStruct(Voucher)), as the contract computes it."""
    typehash = keccak(
        b"Voucher(address payer,address node,uint256 modelId,uint256 cumulativeAmount,"
        b"uint256 deadline)"
    )
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "address", "uint256", "uint256", "uint256"],
            [typehash, v.payer, v.node, v.model_id, v.cumulative_amount, v.deadline],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(domain) + struct_hash)


def expected_session_key_digest(domain: Domain, a: SessionKeyAuthorization) -> bytes:
    typehash = keccak(
        b"SessionKeyAuthorization(address payer,address node,address signer,uint256 expiry,"
        b"uint256 allowance,uint256 nonce,uint256 deadline)"
    )
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "address", "address"] + ["uint256"] * 4,
            [typehash, a.payer, a.node, a.signer, a.expiry, a.allowance, a.nonce, a.deadline],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(domain) + struct_hash)


def recover(digest: bytes, signature: Signature) -> str:
    return Account._recover_hash(digest, vrs=(signature.v, signature.r, signature.s))


# ---------------------------------------------------------------------------------- digests


def test_domain_as_dict_names_the_contract_domain():
    assert DOMAIN.as_dict() == {
        "name": "OpenLedger InferencePayments",
        "version": "1",
        "chainId": 1337,
        "verifyingContract": CONTRACT,
    }


def test_voucher_digest_matches_independent_encoding():
    assert voucher_digest(DOMAIN, VOUCHER) == expected_voucher_digest(DOMAIN, VOUCHER)


@settings(max_examples=50, deadline=None)
@given(model_id=UINT256, cumulative=UINT256, deadline=UINT256, chain_id=UINT256)
def test_voucher_digest_matches_independent_encoding_for_any_values(
    model_id: int, cumulative: int, deadline: int, chain_id: int
):
    domain = Domain(chain_id, CONTRACT)
    voucher = Voucher(PAYER, NODE, model_id, cumulative, deadline)
    assert voucher_digest(domain, voucher) == expected_voucher_digest(domain, voucher)


@pytest.mark.parametrize(
    "changed",
    [
        replace(VOUCHER, payer=OTHER),
        replace(VOUCHER, node=OTHER),
        replace(VOUCHER, model_id=8),
        replace(VOUCHER, cumulative_amount=VOUCHER.cumulative_amount + 1),
        replace(VOUCHER, deadline=VOUCHER.deadline + 1),
    ],
    ids=["payer", "node", "model", "amount", "deadline"],
)
def test_voucher_digest_changes_with_every_field(changed: Voucher):
    assert voucher_digest(DOMAIN, changed) != voucher_digest(DOMAIN, VOUCHER)


@pytest.mark.parametrize(
    "domain",
    [Domain(1338, CONTRACT), Domain(1337, NODE)],
    ids=["chain_id", "verifying_contract"],
)
def test_voucher_digest_is_bound_to_the_domain(domain: Domain):
    assert voucher_digest(domain, VOUCHER) != voucher_digest(DOMAIN, VOUCHER)


def test_voucher_digest_ignores_address_case():
    lower = Voucher(PAYER.lower(), NODE.lower(), 7, VOUCHER.cumulative_amount, VOUCHER.deadline)
    lower_domain = Domain(1337, CONTRACT.lower())
    assert voucher_digest(lower_domain, lower) == voucher_digest(DOMAIN, VOUCHER)
    assert lower.channel == (PAYER, NODE, 7)


def test_voucher_message_uses_the_contract_field_names():
    assert VOUCHER.message() == {
        "payer": PAYER,
        "node": NODE,
        "modelId": 7,
        "cumulativeAmount": VOUCHER.cumulative_amount,
        "deadline": VOUCHER.deadline,
    }


# ---------------------------------------------------------------------------------- signatures


def test_sign_voucher_recovers_to_the_signer():
    signed = sign_voucher(PAYER_KEY, DOMAIN, VOUCHER)

    assert signed.voucher == VOUCHER
    assert signed.signature.v in (27, 28)
    assert len(signed.signature.r) == len(signed.signature.s) == 32
    assert recover_voucher_signer(DOMAIN, signed) == PAYER
    assert recover(expected_voucher_digest(DOMAIN, VOUCHER), signed.signature) == PAYER


def test_recover_voucher_signer_refuses_the_high_s_twin_of_a_signature():
    """The other valid-looking encoding of a signature (s -> n - s, v flipped) recovers the same
    signer in plain ecrecover, but the contract's ECDSA refuses it: so does the recovery here."""
    signed = sign_voucher(PAYER_KEY, DOMAIN, VOUCHER)
    sig = signed.signature
    high_s = (SECP256K1_N - int.from_bytes(sig.s, "big")).to_bytes(32, "big")
    twin = SignedVoucher(VOUCHER, Signature(55 - sig.v, sig.r, high_s))
    with pytest.raises(InvalidSignatureError, match="lower half"):
        recover_voucher_signer(DOMAIN, twin)
    with pytest.raises(InvalidSignatureError, match="lower half"):
        parse_signature("0x" + twin.signature.to_bytes().hex())
    assert parse_signature("0x" + sig.to_bytes().hex()) == sig


def test_sign_voucher_accepts_a_hex_key_and_is_deterministic():
    assert sign_voucher("0x" + PAYER_KEY.hex(), DOMAIN, VOUCHER) == sign_voucher(
        PAYER_KEY, DOMAIN, VOUCHER
    )


def test_sign_voucher_by_another_key_recovers_to_that_key():
    signed = sign_voucher(OTHER_KEY, DOMAIN, VOUCHER)
    assert recover_voucher_signer(DOMAIN, signed) == OTHER


def test_recover_voucher_signer_in_another_domain_is_not_the_signer():
    signed = sign_voucher(PAYER_KEY, DOMAIN, VOUCHER)
    assert recover_voucher_signer(Domain(1338, CONTRACT), signed) != PAYER


def test_recover_voucher_signer_of_altered_voucher_is_not_the_signer():
    signed = sign_voucher(PAYER_KEY, DOMAIN, VOUCHER)
    altered = SignedVoucher(replace(VOUCHER, cumulative_amount=10**30), signed.signature)
    assert recover_voucher_signer(DOMAIN, altered) != PAYER


AUTHORIZATION = SessionKeyAuthorization(
    PAYER, NODE, OTHER, 1_900_000_000, 50 * 10**18, 3, 1_800_000_000
)


def test_sign_session_key_recovers_to_the_payer():
    signature = sign_session_key(PAYER_KEY, DOMAIN, AUTHORIZATION)

    assert AUTHORIZATION.message() == {
        "payer": PAYER,
        "node": NODE,
        "signer": OTHER,
        "expiry": 1_900_000_000,
        "allowance": 50 * 10**18,
        "nonce": 3,
        "deadline": 1_800_000_000,
    }
    assert recover(expected_session_key_digest(DOMAIN, AUTHORIZATION), signature) == PAYER


@pytest.mark.parametrize(
    "changed",
    [
        replace(AUTHORIZATION, payer=OTHER),
        replace(AUTHORIZATION, node=OTHER),
        replace(AUTHORIZATION, signer=NODE),
        replace(AUTHORIZATION, expiry=AUTHORIZATION.expiry + 1),
        replace(AUTHORIZATION, allowance=AUTHORIZATION.allowance + 1),
        replace(AUTHORIZATION, nonce=4),
        replace(AUTHORIZATION, deadline=AUTHORIZATION.deadline + 1),
    ],
    ids=["payer", "node", "signer", "expiry", "allowance", "nonce", "deadline"],
)
def test_session_key_signature_does_not_cover_a_changed_field(changed: SessionKeyAuthorization):
    """The payer's signature binds every field: a relayer cannot retarget it to another node,
    raise the allowance or reuse it at another nonce."""
    signature = sign_session_key(PAYER_KEY, DOMAIN, AUTHORIZATION)
    assert recover(expected_session_key_digest(DOMAIN, changed), signature) != PAYER


@settings(max_examples=25, deadline=None)
@given(expiry=UINT256, allowance=st.integers(0, 2**96 - 1), nonce=UINT256, deadline=UINT256)
def test_sign_session_key_matches_independent_encoding_for_any_values(
    expiry: int, allowance: int, nonce: int, deadline: int
):
    authorization = SessionKeyAuthorization(PAYER, NODE, OTHER, expiry, allowance, nonce, deadline)
    signature = sign_session_key(PAYER_KEY, DOMAIN, authorization)
    assert recover(expected_session_key_digest(DOMAIN, authorization), signature) == PAYER


# ---------------------------------------------------------------------------------- encodings


def test_signature_bytes_round_trip_as_r_s_v():
    signature = sign_voucher(PAYER_KEY, DOMAIN, VOUCHER).signature
    raw = signature.to_bytes()

    assert len(raw) == 65
    assert raw[:32] == signature.r and raw[32:64] == signature.s and raw[64] == signature.v
    assert Signature.from_bytes(raw) == signature


@pytest.mark.parametrize(("raw_v", "v"), [(0, 27), (1, 28), (27, 27), (28, 28)])
def test_signature_from_bytes_normalizes_v(raw_v: int, v: int):
    assert Signature.from_bytes(bytes(64) + bytes([raw_v])).v == v


@pytest.mark.parametrize("length", [0, 64, 66])
def test_signature_from_bytes_rejects_wrong_length(length: int):
    with pytest.raises(ValueError, match=f"got {length}"):
        Signature.from_bytes(bytes(length))


def test_signed_voucher_json_round_trip():
    signed = sign_voucher(PAYER_KEY, DOMAIN, VOUCHER)
    data = signed.to_json()

    assert data["signature"] == "0x" + signed.signature.to_bytes().hex()
    assert data["cumulative_amount"] == VOUCHER.cumulative_amount
    assert SignedVoucher.from_json(data) == signed


def test_redemption_tuple_is_the_contract_struct():
    lower = replace(VOUCHER, payer=PAYER.lower())
    signed = sign_voucher(PAYER_KEY, DOMAIN, lower)
    sig = signed.signature

    assert signed.redemption_tuple() == (
        to_checksum_address(PAYER),
        7,
        VOUCHER.cumulative_amount,
        VOUCHER.deadline,
        sig.v,
        sig.r,
        sig.s,
    )
