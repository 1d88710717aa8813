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

from eth_utils import to_checksum_address

from backend.protocol.eip712 import Domain, SignedVoucher
from backend.protocol.payment_http import PaymentQuote


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


def make_quote(
    domain: Domain,
    channel: tuple[str, str, int],
    *,
    asset: str,
    price: int,
    accepted: int,
    consumed: int,
    reserved: int,
    min_deadline: int,
    max_deadline: int,
    latest: SignedVoucher | None = None,
) -> PaymentQuote:
    """The quote for a request of ``price`` on ``channel`` = (payer, node, model id)."""
    payer, node, model_id = channel
    return PaymentQuote(
        domain=domain,
        asset=to_checksum_address(asset),
        payer=to_checksum_address(payer),
        node=to_checksum_address(node),
        model_id=model_id,
        price=price,
        last_accepted=accepted,
        credit=max(0, accepted - consumed - reserved),
        cumulative_amount=expected_cumulative(accepted, consumed, reserved, price),
        min_deadline=min_deadline,
        max_deadline=max_deadline,
        latest=latest,
    )
