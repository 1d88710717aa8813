"""The OpenLedger SDK: every protocol action as one method, over plain web3 and the ABIs this
package ships (no ape, no compiler), simulated before it is signed so that a refused call
reads as the contract's custom error and costs nothing.

    from backend.sdk import OpenLedger, resolve_signer
    ol = OpenLedger.connect("http://127.0.0.1:8545", lambda w3: resolve_signer(w3, "TEST::1"))
    created = ol.create_datanet("bafy...", bond=10**18, min_approved=1)

The ``openledger`` console script and ``ape run ol`` are thin commands over it
(:mod:`backend.cli.commands`).
"""

from __future__ import annotations

from backend.sdk.connection import Connection, ProtocolError
from backend.sdk.datanets import DatanetActions
from backend.sdk.payments import PaymentActions
from backend.sdk.rewards import WITHDRAWALS, RewardActions
from backend.sdk.signers import (
    ApeSigner,
    KeySigner,
    NodeSigner,
    Signer,
    SignerError,
    ape_signer,
    resolve_signer,
)


class OpenLedger(DatanetActions, PaymentActions, RewardActions):
    """One account's view of and actions on one deployment."""


__all__ = [
    "WITHDRAWALS",
    "ApeSigner",
    "Connection",
    "KeySigner",
    "NodeSigner",
    "OpenLedger",
    "ProtocolError",
    "Signer",
    "SignerError",
    "ape_signer",
    "resolve_signer",
]
