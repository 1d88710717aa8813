"""The indexer's view of the chain node: raw JSON-RPC through web3.py, with retries.

Logs are fetched raw (``eth_getLogs`` without web3's result formatters: the decoder reads the
node's hex JSON directly, which is several times faster for thousands of logs). A node that
stops answering is retried with exponential backoff; the first failure and the recovery are
logged once each, so an operator sees one clear line per outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from web3 import Web3

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)


class ChainUnavailableError(ConnectionError):
    """The chain node did not answer within the retry budget."""


class RPCError(RuntimeError):
    """The node answered with a JSON-RPC error."""

    def __init__(self, method: str, error: Any) -> None:
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method} failed: {message}")
        self.error = error


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: str
    timestamp: int  # unix seconds


@dataclass
class Backoff:
    """Exponential backoff between retries: ``initial`` doubling up to ``maximum`` seconds."""

    initial: float = 0.25
    maximum: float = 10.0
    deadline: float | None = 60.0  # seconds of retrying before giving up; None: forever

    def delays(self) -> Callable[[], float | None]:
        delay, started = self.initial, time.monotonic()

        def next_delay() -> float | None:
            nonlocal delay
            if self.deadline is not None and time.monotonic() - started > self.deadline:
                return None
            current, delay = delay, min(delay * 2, self.maximum)
            return current

        return next_delay


class ChainClient:
    """The few JSON-RPC calls the indexer needs, retried while the node is away."""

    def __init__(self, url: str, backoff: Backoff | None = None, timeout: float = 30.0) -> None:
        self.url = url
        self.backoff = backoff or Backoff()
        provider = Web3.HTTPProvider(
            url,
            request_kwargs={"timeout": timeout},
            exception_retry_configuration=None,
        )
        self.w3 = Web3(provider)
        self._down_since: float | None = None

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call, retried on connection errors; raises :class:`RPCError` on an
        error answer and :class:`ChainUnavailableError` once the retry budget is spent."""
        next_delay = self.backoff.delays()
        while True:
            try:
                response = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
            except CONNECTION_ERRORS as why:
                delay = next_delay()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "chain node %s unreachable (%s); retrying with backoff",
                        self.url, type(why).__name__,
                    )  # fmt: skip
                if delay is None:
                    raise ChainUnavailableError(
                        f"chain node {self.url} unreachable for "
                        f"{time.monotonic() - self._down_since:.0f} s"
                    ) from why
                time.sleep(delay)
                continue
            if self._down_since is not None:
                log.warning(
                    "chain node %s is back after %.1f s", self.url,
                    time.monotonic() - self._down_since,
                )  # fmt: skip
                self._down_since = None
            if "error" in response:
                raise RPCError(method, response["error"])
            return response["result"]

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def block(self, number: int) -> BlockRef | None:
        """The canonical block at ``number`` now, or None above the head."""
        block = self.call("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            return None
        return BlockRef(int(block["number"], 16), str(block["hash"]), int(block["timestamp"], 16))

    def logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[dict]:
        """Every log of ``addresses`` in ``[from_block, to_block]``, raw."""
        return self.call(
            "eth_getLogs",
            [{"address": list(addresses), "fromBlock": hex(from_block), "toBlock": hex(to_block)}],
        )
