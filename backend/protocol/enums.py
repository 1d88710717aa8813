"""The contracts' enums and reason codes, in the contracts' order: one place for the indexer,
the node's redeemer, the SDK and the command line to name them."""

from __future__ import annotations

from enum import IntEnum


class ContributionStatus(IntEnum):
    """``IDatanetRegistry.ContributionStatus``."""

    NONE = 0
    PENDING = 1
    APPROVED = 2
    REJECTED = 3
    WITHDRAWN = 4


class ModelStatus(IntEnum):
    """``IModelRegistry.ModelStatus``."""

    NONE = 0
    ACTIVE = 1
    PAUSED = 2
    RETIRED = 3


class EpochStatus(IntEnum):
    """``IAttributionRewards.EpochStatus``."""

    NONE = 0
    POSTED = 1
    CHALLENGED = 2
    REJECTED = 3
    EXPIRED = 4


class SkipReason(IntEnum):
    """Why ``InferencePayments.redeem`` skipped a voucher (``VoucherSkipped.reason``)."""

    NONE = 0
    EXPIRED = 1
    INVALID_SIGNER = 2
    SESSION_KEY_NOT_LIVE = 3
    NOT_ABOVE_REDEEMED = 4

    @property
    def label(self) -> str:
        """``"session_key_not_live"``: the name the index and the API use."""
        return self.name.lower()


def skip_reason(code: int) -> str:
    """The label of reason ``code``; an unknown code as its number (a newer contract)."""
    try:
        return SkipReason(code).label
    except ValueError:
        return str(code)
