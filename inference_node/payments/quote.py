"""Prices and the HTTP 402 quote.

Price of a request, quoted up front (OPEN wei)::

    price = perRequest + perToken * (prompt_tokens + max_tokens)

Credit rule. Vouchers are cumulative, so the node can never hand money back on-chain: the
payer signs for the quoted price, which assumes all ``max_tokens`` are generated. After the
answer the node records in the receipt the *actual* price,
``perRequest + perToken * (prompt_tokens + completion_tokens)``, and adds only that to the
channel's ``consumed`` total. The unused part stays as credit on the channel::

    credit   = accepted - consumed            # accepted: latest voucher's cumulative amount
    expected = max(accepted, consumed + reserved + price)
             = accepted + max(0, reserved + price - credit)

where ``reserved`` is the quoted price of requests on the channel still being served. So the
next quote is lowered by exactly the unused part of earlier requests; when the credit covers a
whole request, the latest voucher itself is enough (``expected == accepted``). What is redeemed
on-chain is always the latest accepted voucher, i.e. everything paid up front; the credit is
spent by later requests on the same channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from backend.protocol.eip712 import VOUCHER_TYPE, Domain, SignedVoucher
from backend.protocol.payment_http import voucher_json

EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


@dataclass(frozen=True)
class Pricing:
    """A model's on-chain ``IModelRegistry.Pricing``."""

    per_request: int  # OPEN wei per inference
    per_token: int  # OPEN wei per token in or out

    def price(self, prompt_tokens: int, output_tokens: int) -> int:
        """The price of ``prompt_tokens`` in and ``output_tokens`` out, in OPEN wei."""
        if prompt_tokens < 0 or output_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {prompt_tokens}, {output_tokens}")
        return self.per_request + self.per_token * (prompt_tokens + output_tokens)


def expected_cumulative(accepted: int, consumed: int, reserved: int, price: int) -> int:
    """The least cumulative amount a voucher must carry to pay ``price`` (the credit rule)."""
    return max(accepted, consumed + reserved + price)


@dataclass(frozen=True)
class Quote:
    """What a request costs and what the next voucher on its channel must promise."""

    domain: Domain
    payer: str
    node: str
    model_id: int
    price: int  # OPEN wei, quoted up front from max_tokens
    last_accepted: int  # OPEN wei, cumulative amount of the latest accepted voucher
    credit: int  # OPEN wei, accepted - consumed - reserved (never below 0)
    cumulative_amount: int  # OPEN wei, the least cumulative amount to sign
    min_deadline: int  # unix seconds, the earliest deadline the node accepts
    max_deadline: int  # unix seconds, the latest deadline the node accepts
    latest: SignedVoucher | None = None  # the payer's latest voucher on the pair, as held

    def to_json(self) -> dict[str, Any]:
        """The 402 payload: amounts as decimal strings, plus the EIP-712 typed data to sign."""
        return {
            "price": str(self.price),
            "channel": {
                "payer": to_checksum_address(self.payer),
                "node": to_checksum_address(self.node),
                "modelId": self.model_id,
            },
            "lastAccepted": str(self.last_accepted),
            "credit": str(self.credit),
            "cumulativeAmount": str(self.cumulative_amount),
            "minDeadline": self.min_deadline,
            "maxDeadline": self.max_deadline,
            # The payer's own latest signed voucher: a wallet that lost its state checks the
            # signature and continues the channel from it (nothing is trusted on the node's word).
            "latestVoucher": None if self.latest is None else voucher_json(self.latest),
            "eip712": {
                "domain": self.domain.as_dict(),
                "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Voucher": VOUCHER_TYPE},
                "primaryType": "Voucher",
            },
        }


def make_quote(
    domain: Domain,
    channel: tuple[str, str, int],
    *,
    price: int,
    accepted: int,
    consumed: int,
    reserved: int,
    min_deadline: int,
    max_deadline: int,
    latest: SignedVoucher | None = None,
) -> Quote:
    """The quote for a request of ``price`` on ``channel`` = (payer, node, model id)."""
    payer, node, model_id = channel
    return Quote(
        domain=domain,
        payer=payer,
        node=node,
        model_id=model_id,
        price=price,
        last_accepted=accepted,
        credit=max(0, accepted - consumed - reserved),
        cumulative_amount=expected_cumulative(accepted, consumed, reserved, price),
        min_deadline=min_deadline,
        max_deadline=max_deadline,
        latest=latest,
    )
