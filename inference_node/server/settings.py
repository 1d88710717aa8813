"""The node's settings, from ``OPENLEDGER_NODE_*`` environment variables (or a ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.protocol.deployments import PROJECT_ROOT

DATA_DIR = PROJECT_ROOT / ".data"


class NodeSettings(BaseSettings):
    """Chain, wallet, content store, base model, device and limits of one inference node."""

    model_config = SettingsConfigDict(
        env_prefix="OPENLEDGER_NODE_", env_file=".env", extra="ignore"
    )

    # chain and wallet
    rpc_url: str = "http://127.0.0.1:8545"
    deployments: Path | None = None  # deployments.json (default: the project's)
    private_key: SecretStr | None = None  # the node's key; or ...
    address: str | None = None  # ... an account the RPC node has unlocked (anvil, dev only)
    # storage
    store: str = str(DATA_DIR / "devnet" / "store")  # a directory, or an IPFS API URL
    data_dir: Path = DATA_DIR / "node"  # ledger, adapter cache
    # the model
    base_model: Path | None = None  # a Hugging Face causal-LM folder (default: SmolLM2)
    base_model_cid: str | None = None  # serve only models registered on this base
    models: list[int] | None = None  # serve only these model ids (default: every Active one)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    slots: int = 32  # adapters resident on the device at once
    max_rank: int = 64
    cpu_cache_bytes: int = 2 * 1024**3  # adapters kept decoded in RAM
    disk_cache_bytes: int = 50 * 1024**3  # unpacked adapters kept on disk
    max_batch: int = 32
    max_tokens: int = 256  # default max_tokens of a chat completion
    max_tokens_limit: int = 2_048
    # payments
    redeem_interval: int = 3_600  # seconds between redemptions while anything is owed
    redeem_threshold_wei: int = 10 * 10**18  # owed amount that triggers a redemption at once
    deadline_margin: int = 3_600  # a voucher must stay redeemable this long
    max_deadline: int = 7 * 86_400  # and no longer than this
    session_key_margin: int = 3_600  # a session key must stay live this long
    # submit a payment's signed session-key authorization (the node pays its gas; off: such a
    # payment is refused as its key is unknown, as before): docs/payment-protocol.md §5.1
    relay_session_keys: bool = True
    redeem_urgency: int = 900  # redeem a voucher this long before it could be lost
    redeem_batch: int = 100  # vouchers per redemption at most
    redeem_gas_fraction: float = 0.5  # of a block's gas limit one redemption may take
    poll_seconds: float = 5.0  # how often the redeemer and the model catalog look again
    # HTTP
    host: str = "127.0.0.1"
    port: int = 8100
    log_format: Literal["text", "json"] = "text"
    # browser origins allowed to call the node (JSON list; empty: no CORS headers at all).
    # Payments are signatures, not cookies, so credentials are never allowed.
    cors_origins: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> NodeSettings:
        if (self.private_key is None) == (self.address is None):
            raise ValueError("set exactly one of OPENLEDGER_NODE_PRIVATE_KEY or _ADDRESS")
        for name in ("slots", "max_rank", "max_batch", "max_tokens", "max_tokens_limit"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_tokens > self.max_tokens_limit:
            raise ValueError(f"max_tokens {self.max_tokens} > max_tokens_limit")
        return self

    @property
    def node_address(self) -> str:
        """The node's account: ``address``, or the one ``private_key`` signs for."""
        if self.address is not None:
            return self.address
        assert self.private_key is not None  # _check: exactly one is set
        from eth_account import Account

        return str(Account.from_key(self.private_key.get_secret_value()).address)

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.sqlite"

    @property
    def adapter_cache(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def attribution_dir(self) -> Path:
        """Where attributors unpack the adapters they score with."""
        return self.data_dir / "attribution"
