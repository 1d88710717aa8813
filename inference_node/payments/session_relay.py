"""Relays a payer's signed session-key authorization, so a wallet authorizes a key with one
signature and no transaction (as x402's facilitators submit EIP-3009 authorizations).

A payment's ``payload`` may carry ``sessionKeyAuthorization`` (docs/payment-protocol.md §5.1).
When its voucher is signed by a key that is not a usable session key of the channel
(never authorized, lapsed, or ending within ``session_key_margin``), the verifier asks this
relay, which submits ``authorizeSessionKeyWithSig`` from the node's account (the node pays the
gas: it is the party being paid) only when:

1. the authorization is for this voucher: its payer is the voucher's payer, its node this
   node, its signer the key that signed the voucher (else 400 ``authorization_mismatch``);
2. it is signed by the payer under this node's EIP-712 domain (else 400
   ``authorization_wrong_signer``; a malformed signature is 400 ``malformed_payment``);
3. its deadline is at least ``SUBMIT_MARGIN`` seconds ahead, time for the transaction to be
   mined before the contract's ``block.timestamp > deadline`` bites (else 402
   ``authorization_expired``);
4. its nonce is the payer's current nonce on-chain (else 402 ``authorization_stale_nonce``: a
   used or revoked authorization is never submitted; unless the key is usable by now, when a
   concurrent request relayed this very authorization);
5. its expiry is at least ``session_key_margin`` ahead, the rule a voucher's key must meet
   anyway (else 402 ``authorization_expiry_too_soon``);
6. the voucher would be accepted with the key so authorized: rules 4-6 of ``verify.py``
   (amount, guaranteed balance, the key's allowance; the verifier checks these, without
   reserving, before it calls :meth:`SessionKeyRelay.submit`);
7. under the payer's lock, the key is read again: when a concurrent request already made it
   usable, nothing is sent; else the call is simulated (the gas estimate; a revert is 400
   ``authorization_reverted`` naming the contract's error), sent with that gas, and its
   receipt awaited (a failed receipt is ``authorization_reverted`` too, unless the key is
   usable after all: anyone may submit the authorization, and one that front-ran the node's
   transaction leaves the key live and the request payable).

Rules 1-5 are off-chain or read-only, so a request that fails them costs the node no gas; rule 6
means the node only pays gas for a request it is paid for; the per-payer lock means one
authorization is never sent twice at once (a second would revert on its used nonce). The
verifier keeps no cache of session keys: it reads the key again after the receipt.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from web3.exceptions import ContractCustomError, ContractLogicError

from backend.protocol.eip712 import SignedSessionKeyAuthorization, recover_session_key_signer
from backend.sdk.reverts import describe_revert
from inference_node.payments.chain import PaymentsChain, SessionKeyState
from inference_node.payments.errors import (
    AuthorizationExpiredError,
    AuthorizationExpiryError,
    AuthorizationMismatchError,
    AuthorizationNonceError,
    AuthorizationRevertedError,
    AuthorizationSignatureError,
)
from inference_node.payments.sender import RedeemSender

log = logging.getLogger(__name__)

SUBMIT_MARGIN = 60  # seconds: an authorization's deadline must leave this long to be mined


def usable(key: SessionKeyState, needed: int) -> bool:
    """Whether ``key`` may sign vouchers the node accepts: live until at least ``needed``."""
    return key.valid_until != 0 and key.valid_until >= needed


@dataclass
class SessionKeyRelay:
    """Checks and submits session-key authorizations for one node (rules in the docstring)."""

    chain: PaymentsChain
    sender: RedeemSender  # the node's own sender: the one way the node sends transactions
    _locks: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def check(
        self,
        signed: SignedSessionKeyAuthorization,
        payer: str,
        signer: str,
        now: int,
        key_margin: int,
        current: SessionKeyState,
    ) -> SessionKeyState:
        """Rules 1-5 for ``signed`` paying with a voucher of ``payer`` signed by ``signer``;
        returns the key as it would be once submitted (``current``: its state on-chain now)."""
        a = signed.authorization
        for name, given, expected in (
            ("payer", to_checksum_address(a.payer), payer),
            ("node", to_checksum_address(a.node), self.chain.node),
            ("signer", to_checksum_address(a.signer), signer),
        ):
            if given != expected:
                raise AuthorizationMismatchError(name, given, expected)
        domain = self.chain.domain
        recovered = recover_session_key_signer(domain, signed)
        if recovered != payer:
            raise AuthorizationSignatureError(payer, recovered, domain.as_dict())
        if a.deadline < now + SUBMIT_MARGIN:
            raise AuthorizationExpiredError(a.deadline, now + SUBMIT_MARGIN)
        nonce = self.chain.nonce(payer)
        if a.nonce != nonce:
            key = self.chain.session_key(payer, signer)
            if usable(key, now + key_margin):
                return key  # a concurrent request relayed this very authorization meanwhile
            raise AuthorizationNonceError(payer, a.nonce, nonce)
        if a.expiry < now + key_margin:
            raise AuthorizationExpiryError(signer, a.expiry, now + key_margin)
        # As the contract does: a key still live keeps what it spent, a lapsed one starts at 0.
        spent = current.spent if current.valid_until >= now else 0
        return SessionKeyState(valid_until=a.expiry, allowance=a.allowance, spent=spent)

    def _lock(self, payer: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(payer, threading.Lock())

    def submit(self, signed: SignedSessionKeyAuthorization, needed: int) -> str | None:
        """Rule 7: makes the key usable until ``needed`` by submitting ``signed``; returns the
        transaction hash, or None when a concurrent request already did."""
        a = signed.authorization
        payer = to_checksum_address(a.payer)
        with self._lock(payer):
            if usable(self.chain.session_key(payer, a.signer), needed):
                return None
            call = self.chain.payments.functions.authorizeSessionKeyWithSig(*signed.call_args())
            try:
                gas = int(call.estimate_gas({"from": self.sender.address}))
            except (ContractLogicError, ContractCustomError) as exc:
                if usable(self.chain.session_key(payer, a.signer), needed):
                    return None  # someone submitted it since the read above
                raise AuthorizationRevertedError(a.signer, describe_revert(exc)) from None
            tx_hash = self.sender.send_call(call, gas)
            receipt: dict[str, Any] = self.sender.wait(tx_hash)
            if receipt.get("status") != 1:
                # Anyone may submit the payer's authorization: one front-run between the
                # simulation and our transaction makes ours revert (its nonce is used) while
                # the key is live, and the paid request must still be served.
                if usable(self.chain.session_key(payer, a.signer), needed):
                    return None
                raise AuthorizationRevertedError(a.signer, f"transaction {tx_hash} failed")
            log.info(
                "relayed session key authorization: payer %s signer %s tx %s",
                payer,
                to_checksum_address(a.signer),
                tx_hash,
            )
            return tx_hash
