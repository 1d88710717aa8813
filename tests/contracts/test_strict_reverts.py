"""ape.reverts, made strict by tests/strict_reverts.py, fails on a wrong error or argument."""

import ape
import pytest
from ape import chain

from backend.protocol.eip712 import Voucher, sign_voucher


def test_reverts_checks_the_error_and_its_arguments_across_contracts(protocol, node, payer, token):
    payments = protocol.payments
    token.approve(protocol.nodes, 10**24, sender=node)
    protocol.nodes.stake(10**24, sender=node)
    token.approve(payments, 10, sender=payer)
    payments.deposit(node, 10, sender=payer)
    # Model 999 does not exist: the payment split asks ModelRegistry, which reverts.
    deadline = chain.pending_timestamp + 3_600
    voucher = Voucher(payer.address, node.address, 999, 5, deadline)
    redemption = sign_voucher(payer.private_key, protocol.domain, voucher).redemption_tuple()
    proof = (b"\x00" * 32, 1, "x")
    wrong_error = ape.reverts(payments.PaymentsZeroAmount)
    with pytest.raises(AssertionError, match="expected PaymentsZeroAmount"), wrong_error:
        payments.redeem([redemption], proof, sender=node)
    wrong_value = ape.reverts(protocol.models.UnknownModel, modelId=12345)
    with pytest.raises(AssertionError, match="was 999"), wrong_value:
        payments.redeem([redemption], proof, sender=node)
    wrong_name = ape.reverts(protocol.models.UnknownModel, nope=1)
    with pytest.raises(AssertionError, match="no input 'nope'"), wrong_name:
        payments.redeem([redemption], proof, sender=node)
    with ape.reverts(protocol.models.UnknownModel, modelId=999):
        payments.redeem([redemption], proof, sender=node)
