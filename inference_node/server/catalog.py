"""Which registered models this node serves, read from ModelRegistry.

The OpenAI ``model`` field names a registered model: ``"7"`` is model 7 at its latest adapter
version, ``"7@2"`` pins version 2 (answers stay reproducible while the developer publishes new
versions). Each served version is registered in the adapter pool under ``"7@2"`` with its
adapter CID, which costs nothing until a request needs it. A model is served when it is Active
and, if the node declares its base model's CID, built on that base.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from web3.contract import Contract

from inference_node.engine.adapters import AdapterError
from inference_node.engine.pool import AdapterPool
from inference_node.payments.quote import Pricing

log = logging.getLogger(__name__)

ACTIVE = 1  # IModelRegistry.ModelStatus.Active


class UnknownModelError(LookupError):
    """The ``model`` of a request is not one this node serves."""


@dataclass(frozen=True)
class ServedModel:
    model_id: int
    version: int
    adapter_cid: str
    pricing: Pricing
    base_model_cid: str
    published_at: int  # unix seconds

    @property
    def name(self) -> str:
        """The OpenAI model name, which is also the adapter's name in the pool."""
        return f"{self.model_id}@{self.version}"


def parse_model_name(text: str) -> tuple[int, int | None]:
    """``"7"`` -> (7, None); ``"7@2"`` -> (7, 2); anything else raises UnknownModelError."""
    head, _, version = text.strip().partition("@")
    if not head.isdigit() or (version and not version.isdigit()) or int(head) == 0:
        raise UnknownModelError(
            f"model {text!r} is not a registered model id: use the model's number, e.g. '1', "
            "or '1@2' for its version 2"
        )
    return int(head), int(version) if version else None


class ModelCatalog:
    """The models a node serves, refreshed from the chain."""

    def __init__(
        self,
        models: Contract,
        pool: AdapterPool,
        base_model_cid: str | None = None,
        allow: frozenset[int] | None = None,
    ) -> None:
        self.models, self.pool = models, pool
        self.base_model_cid, self.allow = base_model_cid, allow
        self._lock = threading.Lock()
        self._latest: dict[int, ServedModel] = {}
        self._versions: dict[tuple[int, int], ServedModel] = {}
        self._skipped: dict[int, str] = {}

    def refresh(self) -> list[ServedModel]:
        """Reads every (allowed) model and registers its versions' adapters; returns the latest
        version of each served model."""
        count = int(self.models.functions.modelCount().call())
        ids = sorted(self.allow) if self.allow is not None else range(1, count + 1)
        latest: dict[int, ServedModel] = {}
        for model_id in ids:
            if model_id > count:
                self._skip(model_id, "not registered")
                continue
            served = self._read(model_id)
            if served is not None:
                latest[model_id] = served
        with self._lock:
            self._latest = latest
        return list(latest.values())

    def _read(self, model_id: int) -> ServedModel | None:
        (_, _, status, version_count, _, pricing, _, base_cid) = self.models.functions.model(
            model_id
        ).call()
        if status != ACTIVE:
            self._skip(model_id, f"status {status}, not Active")
            return None
        if self.base_model_cid is not None and base_cid != self.base_model_cid:
            self._skip(model_id, f"base model {base_cid}, this node runs {self.base_model_cid}")
            return None
        served = None
        for version in range(1, version_count + 1):
            served = self._version(model_id, version, Pricing(*map(int, pricing)), base_cid)
        if served is not None:
            self._skipped.pop(model_id, None)
        return served

    def _version(
        self, model_id: int, version: int, pricing: Pricing, base: str
    ) -> ServedModel | None:
        known = self._versions.get((model_id, version))
        if known is None:
            adapter_cid, _, _, _, published_at = self.models.functions.modelVersion(
                model_id, version
            ).call()
            known = ServedModel(model_id, version, adapter_cid, pricing, base, int(published_at))
            try:
                self.pool.register(known.name, adapter_cid)
            except AdapterError as exc:  # not even a CID: this version can never be served
                self._skip(model_id, f"version {version}: {exc}")
                return None
            log.info("serving model %s (adapter %s)", known.name, adapter_cid)
        elif known.pricing != pricing:
            known = ServedModel(model_id, version, known.adapter_cid, pricing, base,
                                known.published_at)  # fmt: skip
        with self._lock:
            self._versions[(model_id, version)] = known
        return known

    def _skip(self, model_id: int, reason: str) -> None:
        if self._skipped.get(model_id) != reason:
            log.info("not serving model %d: %s", model_id, reason)
        self._skipped[model_id] = reason

    def served(self) -> list[ServedModel]:
        with self._lock:
            return sorted(self._latest.values(), key=lambda m: m.model_id)

    def resolve(self, name: str) -> ServedModel:
        """The served model version a request's ``model`` names."""
        model_id, version = parse_model_name(name)
        with self._lock:
            latest = self._latest.get(model_id)
            if latest is None:
                reason = self._skipped.get(model_id, "unknown")
                raise UnknownModelError(f"model {name!r} is not served by this node ({reason})")
            if version is None:
                return latest
            pinned = self._versions.get((model_id, version))
        if pinned is None:
            raise UnknownModelError(
                f"model {model_id} has no version {version} (latest is {latest.version})"
            )
        return pinned
