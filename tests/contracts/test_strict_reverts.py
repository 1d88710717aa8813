"""ape.reverts, made strict by tests/strict_reverts.py, fails on a wrong error or argument."""

import ape
import pytest

SIGNED = (b"\x01" * 32, b"\x02" * 32)


def test_reverts_checks_the_error_and_its_arguments_across_contracts(protocol, node, payer, token):
    payments = protocol.payments
    token.approve(protocol.nodes, 10**24, sender=node)
    protocol.nodes.stake(10**24, sender=node)
    voucher = (payer.address, 999, 5, 2**40, 27, *SIGNED)  # model 999 does not exist
    proof = (b"\x00" * 32, 1, "x")
    wrong_error = ape.reverts(payments.PaymentsZeroAmount)
    with pytest.raises(AssertionError, match="expected PaymentsZeroAmount"), wrong_error:
        payments.redeem([voucher], proof, sender=node)
    wrong_value = ape.reverts(protocol.models.UnknownModel, modelId=12345)
    with pytest.raises(AssertionError, match="was 999"), wrong_value:
        payments.redeem([voucher], proof, sender=node)
    wrong_name = ape.reverts(protocol.models.UnknownModel, nope=1)
    with pytest.raises(AssertionError, match="no input 'nope'"), wrong_name:
        payments.redeem([voucher], proof, sender=node)
    with ape.reverts(protocol.models.UnknownModel, modelId=999):
        payments.redeem([voucher], proof, sender=node)
