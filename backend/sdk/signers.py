"""Who sends a transaction and signs typed data for the SDK: a local key, an account the RPC
node unlocks (anvil's), or an ape account under ``ape run`` (a keyfile account prompts for its
passphrase there). Every signer signs exactly what :class:`~backend.sdk.client.OpenLedger`
built and simulated; none of them decides anything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract.contract import ContractFunction

from backend.protocol.eip712 import EIP712_DOMAIN_TYPE, Domain, Signature

TEST_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's, ape's
Account.enable_unaudited_hdwallet_features()


class SignerError(RuntimeError):
    """An account that cannot be used as asked; the message says why."""


def typed_data(
    domain: Domain, primary: str, fields: list[dict[str, str]], message: dict[str, Any]
) -> dict[str, Any]:
    """The EIP-712 document ``eth_signTypedData_v4`` takes (JSON-ready: ints stay ints)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": domain.as_dict(),
        "message": message,
    }


def call_transaction(call: ContractFunction) -> dict[str, Any]:
    """The transaction that sends ``call`` (``to``, ``data``, no value), for a signer to fill."""
    return {"to": call.address, "data": call._encode_transaction_data(), "value": 0}


class Signer(Protocol):
    """An account the SDK acts as."""

    @property
    def address(self) -> str: ...

    def send_transaction(self, w3: Web3, tx: dict[str, Any]) -> bytes:
        """Signs and sends ``tx`` (``to``, ``data``, ``value``, and ``gas`` when the caller
        already estimated it); returns its hash."""
        ...

    def sign_typed_data(self, document: dict[str, Any]) -> Signature:
        """The EIP-712 signature of ``document`` (:func:`typed_data`)."""
        ...


class KeySigner:
    """A private key held here: transactions filled, signed and sent as raw transactions."""

    def __init__(self, private_key: bytes | str) -> None:
        self._account = Account.from_key(private_key)

    @property
    def address(self) -> str:
        return self._account.address

    def send_transaction(self, w3: Web3, tx: dict[str, Any]) -> bytes:
        filled = {**tx, "from": self.address, "chainId": w3.eth.chain_id}
        filled["nonce"] = w3.eth.get_transaction_count(self.address, "pending")
        if "gas" not in filled:
            filled["gas"] = w3.eth.estimate_gas(filled)
        fee = w3.eth.gas_price
        filled["maxPriorityFeePerGas"] = min(fee, w3.to_wei(1, "gwei"))
        filled["maxFeePerGas"] = 2 * fee + filled["maxPriorityFeePerGas"]
        signed = self._account.sign_transaction(filled)
        return bytes(w3.eth.send_raw_transaction(signed.raw_transaction))

    def sign_typed_data(self, document: dict[str, Any]) -> Signature:
        signed = self._account.sign_message(encode_typed_data(full_message=document))
        return Signature(signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))


class NodeSigner:
    """An account the RPC node unlocks (anvil's dev accounts): it signs and sends."""

    def __init__(self, w3: Web3, address: str) -> None:
        self._w3 = w3
        self._address = to_checksum_address(address)

    @property
    def address(self) -> str:
        return self._address

    def send_transaction(self, w3: Web3, tx: dict[str, Any]) -> bytes:
        return bytes(w3.eth.send_transaction({**tx, "from": self.address}))  # type: ignore[arg-type]

    def sign_typed_data(self, document: dict[str, Any]) -> Signature:
        raw = self._w3.provider.make_request(
            "eth_signTypedData_v4",  # type: ignore[arg-type]
            [self.address, json.dumps(document)],
        )
        if "error" in raw:
            raise SignerError(f"{self.address} did not sign: {raw['error'].get('message')}")
        return Signature.from_bytes(bytes.fromhex(str(raw["result"]).removeprefix("0x")))


class ApeSigner:
    """An ape account (``--account`` of ``ape run``): ape fills, signs and sends, prompting for
    a keyfile's passphrase or a hardware wallet's confirmation as it always does."""

    def __init__(self, account: Any) -> None:
        self._account = account

    @property
    def address(self) -> str:
        return str(self._account.address)

    def send_transaction(self, w3: Web3, tx: dict[str, Any]) -> bytes:
        from ape import networks

        txn = networks.provider.network.ecosystem.create_transaction(
            receiver=tx["to"], data=tx["data"], value=tx.get("value", 0), sender=self.address
        )
        return bytes.fromhex(str(self._account.call(txn).txn_hash).removeprefix("0x"))

    def sign_typed_data(self, document: dict[str, Any]) -> Signature:
        signed = self._account.sign_message(encode_typed_data(full_message=document))
        if signed is None:
            raise SignerError(f"{self._account.alias or self.address} declined to sign")
        v = signed.v if signed.v >= 27 else signed.v + 27
        return Signature(v=v, r=bytes(signed.r), s=bytes(signed.s))


def ape_signer(account: Any) -> Signer:
    """The signer for an ape account: its key where ape holds one in the clear (test accounts,
    signed here without ape's per-transaction overhead), else ape itself (keyfile, hardware)."""
    key = getattr(account, "private_key", None)
    return KeySigner(key) if key else ApeSigner(account)


def _test_key(index: int) -> bytes:
    return bytes(Account.from_mnemonic(TEST_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key)


def resolve_signer(w3: Web3, spec: str, *, password: str | None = None) -> Signer:
    """The account ``spec`` names, as the ``openledger`` command line takes it:

    - ``TEST::n``: the n-th account of the public test mnemonic (anvil's, ape's ``TEST::n``);
    - a keystore file (geth/ape keyfile JSON: ``~/.ape/accounts/NAME.json``) or an ape alias
      ``NAME`` with one there, unlocked with ``password``;
    - ``0x`` + 64 hex: a private key (prefer an environment variable to the command line);
    - an address: an account the RPC node unlocks.
    """
    if spec.startswith("TEST::"):
        index = spec.removeprefix("TEST::")
        if not index.isdigit():
            raise SignerError(f"{spec}: a test account is TEST::<number>")
        return KeySigner(_test_key(int(index)))
    if spec.startswith("0x") and len(spec) == 66:
        return KeySigner(spec)
    if spec.startswith("0x") and len(spec) == 42:
        if not Web3.is_address(spec):
            raise SignerError(f"{spec} is not an address")
        return NodeSigner(w3, spec)
    path = Path(spec).expanduser()
    if not path.suffix:
        path = Path(os.environ.get("APE_DATA_FOLDER", "~/.ape")).expanduser() / "accounts"
        path = path / f"{spec}.json"
    if not path.is_file():
        raise SignerError(
            f"no account {spec!r}: give TEST::n, an address the node unlocks, a private key, "
            "a keystore file or an ape account alias"
        )
    if password is None:
        raise SignerError(f"the keystore {path} needs its password (--password-file)")
    try:
        key = Account.decrypt(json.loads(path.read_text()), password)
    except ValueError as why:
        raise SignerError(f"cannot unlock {path}: {why}") from None
    return KeySigner(bytes(key))
