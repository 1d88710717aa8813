"""Decoding the protocol's logs with the ABIs the package ships (:mod:`backend.protocol.abi`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi import decode
from eth_utils import event_abi_to_log_topic, to_checksum_address

from backend.protocol.abi import abi
from backend.protocol.deployments import CONTRACT_NAMES, Deployment

JSONValue = Any


def _canonical_type(arg: Mapping[str, Any]) -> str:
    kind = str(arg["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in arg.get("components") or [])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _to_json(kind: str, value: Any) -> JSONValue:
    """A decoded ABI value as JSON: addresses checksummed, bytes as 0x-hex, ints as ints."""
    if kind.endswith("]"):
        inner = kind[: kind.rindex("[")]
        return [_to_json(inner, v) for v in value]
    if kind.startswith("("):
        parts = _split_tuple(kind[1:-1])
        return [_to_json(t, v) for t, v in zip(parts, value, strict=True)]
    if kind == "address":
        return _checksum(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


@lru_cache(maxsize=65_536)
def _checksum(address: str) -> str:
    return to_checksum_address(address)


def _split_tuple(inner: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    if inner:
        parts.append(inner[start:])
    return parts


@dataclass(frozen=True)
class EventSpec:
    """How to decode one event of one contract."""

    contract: str
    name: str
    names: tuple[str, ...]  # every input, in declaration order
    indexed: tuple[tuple[str, str], ...]  # (name, type) of the indexed inputs, topic order
    data: tuple[tuple[str, str], ...]  # (name, type) of the others, data order

    def decode(self, topics: Sequence[str], data: str) -> dict[str, JSONValue]:
        values: dict[str, JSONValue] = {}
        for (name, kind), topic in zip(self.indexed, topics[1:], strict=True):
            raw = bytes.fromhex(topic[2:])
            if kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("("):
                values[name] = "0x" + raw.hex()  # only the hash of a dynamic value is logged
            else:
                values[name] = _to_json(kind, decode([kind], raw)[0])
        if self.data:
            decoded = decode([k for _, k in self.data], bytes.fromhex(data[2:]))
            for (name, kind), value in zip(self.data, decoded, strict=True):
                values[name] = _to_json(kind, value)
        return {name: values[name] for name in self.names}


@dataclass(frozen=True)
class DecodedLog:
    """One protocol log, decoded."""

    block_number: int
    block_hash: str
    block_timestamp: int | None
    tx_hash: str
    log_index: int
    contract: str
    address: str
    event: str
    args: dict[str, JSONValue]


class UnknownEventError(ValueError):
    """A log whose address and first topic match no event of the indexed contracts."""


class EventDecoder:
    """Decodes the raw JSON-RPC logs of one deployment's contracts."""

    def __init__(self, deployment: Deployment, abis: Mapping[str, Sequence[Mapping[str, Any]]]):
        self.addresses = {
            to_checksum_address(deployment.address(name)): name for name in CONTRACT_NAMES
        }
        self._checksummed = {address.lower(): address for address in self.addresses}
        self._specs: dict[tuple[str, str], EventSpec] = {}
        for address, contract in self.addresses.items():
            for item in abis[contract]:
                if item.get("type") != "event" or item.get("anonymous"):
                    continue
                topic = "0x" + event_abi_to_log_topic(dict(item)).hex()
                inputs = item.get("inputs") or []
                self._specs[(address.lower(), topic)] = EventSpec(
                    contract=contract,
                    name=str(item["name"]),
                    names=tuple(str(i["name"]) for i in inputs),
                    indexed=tuple((i["name"], _canonical_type(i)) for i in inputs if i["indexed"]),
                    data=tuple((i["name"], _canonical_type(i)) for i in inputs if not i["indexed"]),
                )

    @classmethod
    def for_deployment(cls, deployment: Deployment) -> EventDecoder:
        """The decoder of ``deployment`` with the ABIs the package ships."""
        return cls(deployment, {name: abi(name) for name in CONTRACT_NAMES})

    def decode(self, log: Mapping[str, Any]) -> DecodedLog:
        """Decodes one ``eth_getLogs`` entry (hex-encoded JSON, as the node sends it)."""
        topics = log["topics"]
        address = str(log["address"]).lower()
        spec = self._specs.get((address, topics[0] if topics else ""))
        if spec is None:
            raise UnknownEventError(
                f"log {log['transactionHash']}:{int(log['logIndex'], 16)} of {log['address']} "
                f"matches no known event (topic {topics[0] if topics else None})"
            )
        timestamp = log.get("blockTimestamp")
        return DecodedLog(
            block_number=int(log["blockNumber"], 16),
            block_hash=str(log["blockHash"]),
            block_timestamp=int(timestamp, 16) if timestamp else None,
            tx_hash=str(log["transactionHash"]),
            log_index=int(log["logIndex"], 16),
            contract=spec.contract,
            address=self._checksummed[address],
            event=spec.name,
            args=spec.decode(topics, str(log["data"])),
        )
