"""The ``openledger-voucher`` requirement: what a request costs and what the next voucher on
its channel must promise, as the node states it (:meth:`PaymentQuote.requirements`,
:func:`payer_requirement`) and a client checks it (:meth:`PaymentQuote.from_requirements`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from x402.schemas.payments import PaymentRequirements

from backend.protocol.eip712 import EIP712_DOMAIN_TYPE, VOUCHER_TYPE, Domain, SignedVoucher, Voucher
from backend.protocol.payment_wire import (
    PAYER_HEADER,
    SCHEME,
    caip2,
    json_field,
    json_object,
    parse_address,
    parse_signed_voucher,
    parse_uint,
    parse_voucher_message,
    signed_voucher_json,
    voucher_message,
)

QUOTE_TIMEOUT = 300  # seconds a quote is meant to be answered in (x402 maxTimeoutSeconds)
SUGGESTED_VALIDITY = 86_400  # seconds: the deadline the typed data suggests, within the window


@dataclass(frozen=True)
class PaymentQuote:
    """What a request costs and what the next voucher on its channel must promise: the
    ``extra`` of an ``openledger-voucher`` requirement, as the node states it and a client
    reads it."""

    domain: Domain  # EIP-712 domain of InferencePayments
    asset: str  # the OPEN token
    payer: str
    node: str
    model_id: int
    price: int  # OPEN wei, quoted up front from max_tokens
    last_accepted: int  # OPEN wei, cumulative amount of the channel's latest voucher
    credit: int  # OPEN wei, what the channel's latest voucher still covers
    cumulative_amount: int  # OPEN wei, the least cumulative amount to sign
    min_deadline: int  # unix seconds, the earliest voucher deadline the node accepts
    max_deadline: int  # unix seconds, the latest one
    latest: SignedVoucher | None = None  # the payer's latest voucher the node holds

    @property
    def channel(self) -> tuple[str, str, int]:
        return (self.payer, self.node, self.model_id)

    def voucher(self, cumulative_amount: int, deadline: int) -> Voucher:
        """The voucher on this quote's channel for ``cumulative_amount`` until ``deadline``."""
        return Voucher(self.payer, self.node, self.model_id, cumulative_amount, deadline)

    @property
    def suggested_deadline(self) -> int:
        """A deadline inside the node's window: a day after the earliest, at most the latest."""
        return min(self.max_deadline, self.min_deadline + SUGGESTED_VALIDITY)

    def typed_data(self) -> dict[str, Any]:
        """The quoted voucher as ``eth_signTypedData_v4`` JSON (types include EIP712Domain)."""
        message = voucher_message(self.voucher(self.cumulative_amount, self.suggested_deadline))
        return {
            "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Voucher": VOUCHER_TYPE},
            "primaryType": "Voucher",
            "domain": self.domain.as_dict(),
            "message": message,
        }

    def extra(self) -> dict[str, Any]:
        return {
            "channel": {"payer": self.payer, "node": self.node, "modelId": str(self.model_id)},
            "cumulativeAmount": str(self.cumulative_amount),
            "lastAccepted": str(self.last_accepted),
            "credit": str(self.credit),
            "minDeadline": self.min_deadline,
            "maxDeadline": self.max_deadline,
            # The payer's own latest signed voucher: a wallet that lost its state checks the
            # signature and continues the channel from it (nothing rests on the node's word).
            "latestVoucher": None if self.latest is None else signed_voucher_json(self.latest),
            "typedData": self.typed_data(),
            # ethers' signTypedData(domain, types, message) refuses EIP712Domain in types.
            "voucherTypes": {"Voucher": VOUCHER_TYPE},
        }

    def requirements(self) -> PaymentRequirements:
        """The x402 v2 requirement (an ``accepts`` entry) of this quote."""
        return PaymentRequirements(
            scheme=SCHEME,
            network=caip2(self.domain.chain_id),
            asset=self.asset,
            amount=str(self.price),
            pay_to=self.node,
            max_timeout_seconds=QUOTE_TIMEOUT,
            extra=self.extra(),
        )

    @classmethod
    def from_requirements(cls, requirements: PaymentRequirements) -> PaymentQuote:
        """Parses and checks an ``openledger-voucher`` requirement; ValueError naming the bad
        field."""
        if requirements.scheme != SCHEME:
            raise ValueError(f"requirement scheme is {requirements.scheme!r}, not {SCHEME!r}")
        q = json_object(requirements.extra, "extra")
        if q.get("channel") is None:
            raise ValueError(f"the node needs the payer first: send {PAYER_HEADER}")
        channel = json_object(q["channel"], "extra.channel")
        typed = json_object(json_field(q, "typedData", "extra"), "extra.typedData")
        if typed.get("primaryType") != "Voucher":
            raise ValueError(f"extra.typedData signs {typed.get('primaryType')!r}, not a Voucher")
        types = json_object(json_field(typed, "types", "extra.typedData"), "extra.typedData.types")
        if types.get("Voucher") != VOUCHER_TYPE:
            raise ValueError(f"extra.typedData Voucher type is {types.get('Voucher')!r}")
        if types.get("EIP712Domain") != EIP712_DOMAIN_TYPE:
            raise ValueError(f"extra.typedData EIP712Domain is {types.get('EIP712Domain')!r}")
        d = json_object(json_field(typed, "domain", "extra.typedData"), "extra.typedData.domain")
        name, version = json_field(d, "name", "domain"), json_field(d, "version", "domain")
        if not isinstance(name, str) or not isinstance(version, str):
            raise ValueError(f"domain name and version must be strings: {name!r} {version!r}")
        domain = Domain(
            chain_id=parse_uint(json_field(d, "chainId", "domain"), "domain chainId"),
            verifying_contract=parse_address(
                json_field(d, "verifyingContract", "domain"), "domain verifyingContract"
            ),
            name=name,
            version=version,
        )
        if requirements.network != caip2(domain.chain_id):
            raise ValueError(
                f"requirement network {requirements.network!r} is not the domain's chain "
                f"{caip2(domain.chain_id)!r}"
            )
        node = _address_at(channel, "node", "extra.channel")
        if parse_address(requirements.pay_to, "payTo") != node:
            raise ValueError(f"payTo {requirements.pay_to} is not the channel's node {node}")
        latest = q.get("latestVoucher")
        quote = cls(
            domain=domain,
            asset=parse_address(requirements.asset, "asset"),
            payer=_address_at(channel, "payer", "extra.channel"),
            node=node,
            model_id=_uint_at(channel, "modelId", "extra.channel"),
            price=parse_uint(requirements.amount, "amount"),
            last_accepted=_uint_at(q, "lastAccepted", "extra"),
            credit=_uint_at(q, "credit", "extra"),
            cumulative_amount=_uint_at(q, "cumulativeAmount", "extra"),
            min_deadline=_uint_at(q, "minDeadline", "extra"),
            max_deadline=_uint_at(q, "maxDeadline", "extra"),
            latest=None if latest is None else parse_signed_voucher(latest, "extra.latestVoucher"),
        )
        if quote.cumulative_amount < quote.last_accepted:
            raise ValueError(
                f"extra.cumulativeAmount {quote.cumulative_amount} is below its lastAccepted "
                f"{quote.last_accepted}"
            )
        if quote.credit > quote.last_accepted:
            raise ValueError(
                f"extra.credit {quote.credit} exceeds its lastAccepted {quote.last_accepted}"
            )
        signs = parse_voucher_message(
            json_field(typed, "message", "extra.typedData"), "extra.typedData.message"
        )
        if signs.channel != quote.channel or signs.cumulative_amount != quote.cumulative_amount:
            raise ValueError(
                f"extra.typedData.message signs {signs.cumulative_amount} on {signs.channel}, "
                f"not the quoted {quote.cumulative_amount} on {quote.channel}"
            )
        if quote.max_deadline < quote.min_deadline:
            raise ValueError(
                f"extra.maxDeadline {quote.max_deadline} is before minDeadline {quote.min_deadline}"
            )
        return quote


def payer_requirement(domain: Domain, asset: str, node: str, price: int) -> PaymentRequirements:
    """The requirement answered to a request with no payer: the price and the domain, and
    ``extra.channel`` null (resend with ``X-OpenLedger-Payer`` for the amount to sign)."""
    return PaymentRequirements(
        scheme=SCHEME,
        network=caip2(domain.chain_id),
        asset=asset,
        amount=str(price),
        pay_to=node,
        max_timeout_seconds=QUOTE_TIMEOUT,
        extra={"channel": None, "payerHeader": PAYER_HEADER, "domain": domain.as_dict()},
    )


def _uint_at(data: dict[str, Any], key: str, where: str) -> int:
    """``data[key]`` as a uint256; the error names ``where.key``."""
    return parse_uint(json_field(data, key, where), f"{where}.{key}")


def _address_at(data: dict[str, Any], key: str, where: str) -> str:
    """``data[key]`` as a checksummed address; the error names ``where.key``."""
    return parse_address(json_field(data, key, where), f"{where}.{key}")
