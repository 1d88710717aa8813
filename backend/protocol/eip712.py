"""Every EIP-712 typed message of the project, defined once: vouchers and session-key
authorizations (InferencePayments), permits (OPEN, EIP-2612), ratings and preferences (user
feedback, ModelFactory's DPO) — and the signature primitives they share: the typed-data
encoding, signing, canonical-signature parsing and recovery (low s only, as OpenZeppelin's
``ECDSA`` demands on-chain, so one message cannot be counted twice under two encodings).

The node verifies vouchers with it, the client SDK and the scripts sign with it (``eth_account``
signs typed data exactly as wallets' ``eth_signTypedData_v4``), and the contract tests check
that what it signs verifies on-chain. A domain binds every signature to one chain id and one
contract, so nothing signed can be replayed elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak, to_checksum_address

DOMAIN_NAME = "OpenLedger InferencePayments"
DOMAIN_VERSION = "1"
FEEDBACK_DOMAIN_NAME = "OpenLedger Feedback"  # bound to the ModelRegistry
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
VOUCHER_TYPE = [
    {"name": "payer", "type": "address"},
    {"name": "node", "type": "address"},
    {"name": "modelId", "type": "uint256"},
    {"name": "cumulativeAmount", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]
SESSION_KEY_TYPE = [
    {"name": "payer", "type": "address"},
    {"name": "node", "type": "address"},
    {"name": "signer", "type": "address"},
    {"name": "expiry", "type": "uint256"},
    {"name": "allowance", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Domain:
    """An EIP-712 domain: by default that of one InferencePayments deployment."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


@dataclass(frozen=True)
class Voucher:
    """A promise of ``cumulative_amount`` OPEN wei in total on channel (payer, node, model)."""

    payer: str
    node: str
    model_id: int
    cumulative_amount: int  # OPEN wei
    deadline: int  # unix seconds

    def message(self) -> dict[str, Any]:
        return {
            "payer": to_checksum_address(self.payer),
            "node": to_checksum_address(self.node),
            "modelId": self.model_id,
            "cumulativeAmount": self.cumulative_amount,
            "deadline": self.deadline,
        }

    @property
    def channel(self) -> tuple[str, str, int]:
        return (to_checksum_address(self.payer), to_checksum_address(self.node), self.model_id)


@dataclass(frozen=True)
class SessionKeyAuthorization:
    """A payer's signed permission for ``signer`` to sign vouchers on its channel with ``node``
    until ``expiry``, drawing at most ``allowance`` OPEN wei in total."""

    payer: str
    node: str
    signer: str
    expiry: int  # unix seconds
    allowance: int  # OPEN wei, < 2**96
    nonce: int  # the payer's current nonce in InferencePayments
    deadline: int  # unix seconds; the authorization must be submitted before it

    def message(self) -> dict[str, Any]:
        return {
            "payer": to_checksum_address(self.payer),
            "node": to_checksum_address(self.node),
            "signer": to_checksum_address(self.signer),
            "expiry": self.expiry,
            "allowance": self.allowance,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


@dataclass(frozen=True)
class Signature:
    v: int
    r: bytes
    s: bytes

    def to_bytes(self) -> bytes:
        return self.r + self.s + bytes([self.v])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Signature:
        if len(raw) != 65:
            raise ValueError(f"a signature is 65 bytes, got {len(raw)}")
        v = raw[64]
        return cls(v=v + 27 if v < 27 else v, r=raw[:32], s=raw[32:64])


@dataclass(frozen=True)
class SignedVoucher:
    """A voucher with its signature, as a node stores and redeems it."""

    voucher: Voucher
    signature: Signature

    def redemption_tuple(self) -> tuple[str, int, int, int, int, bytes, bytes]:
        """The ``IInferencePayments.SignedVoucher`` struct (the node is the caller)."""
        v = self.voucher
        sig = self.signature
        return (
            to_checksum_address(v.payer),
            v.model_id,
            v.cumulative_amount,
            v.deadline,
            sig.v,
            sig.r,
            sig.s,
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.voucher), "signature": "0x" + self.signature.to_bytes().hex()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedVoucher:
        raw = bytes.fromhex(str(data["signature"]).removeprefix("0x"))
        voucher = Voucher(
            payer=data["payer"],
            node=data["node"],
            model_id=int(data["model_id"]),
            cumulative_amount=int(data["cumulative_amount"]),
            deadline=int(data["deadline"]),
        )
        return cls(voucher, Signature.from_bytes(raw))


class InvalidSignatureError(ValueError):
    """A signature that is malformed, not canonical (v, r or high s) or recovers no address."""


def typed_message(
    domain: Domain, primary: str, fields: list[dict[str, str]], message: dict[str, Any]
) -> SignableMessage:
    """The EIP-712 signable of ``message`` (type ``primary`` with ``fields``) in ``domain``."""
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, primary: fields},
            "primaryType": primary,
            "domain": domain.as_dict(),
            "message": message,
        }
    )


def typed_digest(signable: SignableMessage) -> bytes:
    """The 32-byte digest that is signed (``_hashTypedDataV4`` on-chain)."""
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_typed(private_key: bytes | str, signable: SignableMessage) -> Signature:
    """Signs ``signable`` (deterministic, canonical: low s)."""
    signed = Account.sign_message(signable, private_key)
    return Signature(v=signed.v, r=signed.r.to_bytes(32, "big"), s=signed.s.to_bytes(32, "big"))


def check_canonical(signature: Signature, what: str = "signature") -> None:
    """Raises :class:`InvalidSignatureError` unless ``signature`` is what ``ECDSA.recover``
    accepts: v 27/28, 0 < r < n, 0 < s <= n/2 (EIP-2)."""
    r, s = int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big")
    if signature.v not in (27, 28):
        raise InvalidSignatureError(f"{what} v must be 27 or 28 (or 0 or 1), got {signature.v}")
    if not 0 < r < SECP256K1_N:
        raise InvalidSignatureError(f"{what} r is out of range")
    if not 0 < s <= SECP256K1_N // 2:
        raise InvalidSignatureError(
            f"{what} s must be in the lower half of the curve order (EIP-2)"
        )


def parse_signature(value: object, what: str = "signature") -> Signature:
    """A canonical signature from ``0x<r><s><v>`` hex (v 27/28 or 0/1); raises
    :class:`InvalidSignatureError` naming what is wrong."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise InvalidSignatureError(f"{what} must be 0x-prefixed hex, got {value!r}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise InvalidSignatureError(f"{what} is not hex: {value!r}") from None
    if len(raw) != 65:
        raise InvalidSignatureError(f"{what} must be 65 bytes (r, s, v), got {len(raw)}")
    if raw[64] not in (0, 1, 27, 28):
        raise InvalidSignatureError(f"{what} v must be 27 or 28 (or 0 or 1), got {raw[64]}")
    signature = Signature.from_bytes(raw)
    check_canonical(signature, what)
    return signature


def recover_signer(signable: SignableMessage, signature: Signature) -> str:
    """The checksummed signer of ``signable``; :class:`InvalidSignatureError` for a signature
    the contracts would refuse or that recovers no address."""
    check_canonical(signature)
    try:
        return to_checksum_address(
            Account.recover_message(signable, signature=signature.to_bytes())
        )
    except Exception as exc:  # eth_keys raises several types for points off the curve
        raise InvalidSignatureError(f"signature recovers no address: {exc}") from None


def voucher_digest(domain: Domain, voucher: Voucher) -> bytes:
    """The 32-byte EIP-712 digest a voucher's signer signs (``voucherDigest`` on-chain)."""
    return typed_digest(typed_message(domain, "Voucher", VOUCHER_TYPE, voucher.message()))


def sign_voucher(private_key: bytes | str, domain: Domain, voucher: Voucher) -> SignedVoucher:
    """Signs ``voucher`` with ``private_key`` (the payer's or a session key's)."""
    signable = typed_message(domain, "Voucher", VOUCHER_TYPE, voucher.message())
    return SignedVoucher(voucher, sign_typed(private_key, signable))


def recover_voucher_signer(domain: Domain, signed: SignedVoucher) -> str:
    """The address that signed ``signed`` (payer or session key), checksummed;
    :class:`InvalidSignatureError` for a signature the contract would refuse."""
    signable = typed_message(domain, "Voucher", VOUCHER_TYPE, signed.voucher.message())
    return recover_signer(signable, signed.signature)


def sign_session_key(
    private_key: bytes | str, domain: Domain, authorization: SessionKeyAuthorization
) -> Signature:
    """The payer's signature over ``authorization`` for ``authorizeSessionKeyWithSig``."""
    message = authorization.message()
    signable = typed_message(domain, "SessionKeyAuthorization", SESSION_KEY_TYPE, message)
    return sign_typed(private_key, signable)


@dataclass(frozen=True)
class SignedSessionKeyAuthorization:
    """A session-key authorization with the payer's signature: what
    ``authorizeSessionKeyWithSig`` takes, and what a payment may carry for the node to relay."""

    authorization: SessionKeyAuthorization
    signature: Signature

    def call_args(self) -> tuple[str, str, str, int, int, int, int, bytes, bytes]:
        """The arguments of ``authorizeSessionKeyWithSig`` (the nonce is the contract's)."""
        a, sig = self.authorization, self.signature
        return (
            to_checksum_address(a.payer),
            to_checksum_address(a.node),
            to_checksum_address(a.signer),
            a.expiry,
            a.allowance,
            a.deadline,
            sig.v,
            sig.r,
            sig.s,
        )


def sign_session_key_authorization(
    payer_key: bytes | str, domain: Domain, authorization: SessionKeyAuthorization
) -> SignedSessionKeyAuthorization:
    """``authorization`` signed with the payer's ``payer_key`` (which must be its payer's)."""
    payer = Account.from_key(payer_key).address
    if payer != to_checksum_address(authorization.payer):
        raise ValueError(f"the key is {payer}'s, the authorization's payer {authorization.payer}")
    return SignedSessionKeyAuthorization(
        authorization, sign_session_key(payer_key, domain, authorization)
    )


def recover_session_key_signer(domain: Domain, signed: SignedSessionKeyAuthorization) -> str:
    """Who signed ``signed`` under ``domain``, checksummed (the contract demands its payer);
    :class:`InvalidSignatureError` for a signature the contract would refuse."""
    message = signed.authorization.message()
    signable = typed_message(domain, "SessionKeyAuthorization", SESSION_KEY_TYPE, message)
    return recover_signer(signable, signed.signature)


PERMIT_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Permit:
    """An EIP-2612 permit of OPEN (``depositWithPermit`` deposits without an approve tx)."""

    owner: str
    spender: str
    value: int  # OPEN wei
    nonce: int  # the owner's current nonce in the token
    deadline: int  # unix seconds

    def message(self) -> dict[str, Any]:
        return {
            "owner": to_checksum_address(self.owner),
            "spender": to_checksum_address(self.spender),
            "value": self.value,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


def token_domain(chain_id: int, token: str, name: str = "OpenLedger") -> Domain:
    """The EIP-712 domain of the OPEN token (ERC20Permit: the token's name, version "1")."""
    return Domain(chain_id=chain_id, verifying_contract=token, name=name, version="1")


def sign_permit(private_key: bytes | str, domain: Domain, permit: Permit) -> Signature:
    """The owner's signature over ``permit`` (``domain`` from :func:`token_domain`)."""
    return sign_typed(private_key, typed_message(domain, "Permit", PERMIT_TYPE, permit.message()))


# ---------------------------------------------------------------- feedback (ModelFactory's DPO)

RATING_TYPE = [
    {"name": "requestHash", "type": "bytes32"},
    {"name": "score", "type": "uint8"},
    {"name": "commentHash", "type": "bytes32"},
]
PREFERENCE_TYPE = [
    {"name": "chosenRequestHash", "type": "bytes32"},
    {"name": "rejectedRequestHash", "type": "bytes32"},
]


def feedback_domain(chain_id: int, model_registry: str) -> Domain:
    """The EIP-712 domain of feedback: bound to one chain and one ModelRegistry."""
    return Domain(chain_id, model_registry, name=FEEDBACK_DOMAIN_NAME, version="1")
