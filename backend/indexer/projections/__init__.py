"""The read model: how each protocol event changes the tables derived from the raw events.

Every handler is applied exactly once per stored event, in chain order (block, log index), so
replaying ``events`` from scratch rebuilds the same tables (how a reorg is rolled back). One
module per contract holds its events' handlers; ``core`` holds the registry and the dispatch.
"""

from backend.indexer.projections import datanets, models, nodes, payments, rewards
from backend.indexer.projections.core import (
    HANDLERS,
    MAX_SQL_INTEGER,
    PARAMETER_EVENTS,
    Handler,
    ProjectionError,
    apply,
    on,
    replay,
    stored_events,
)
from backend.indexer.projections.models import SPLIT_CHANGE_DELAY
from backend.indexer.projections.payments import WITHDRAWAL_WINDOW

__all__ = [
    "HANDLERS",
    "MAX_SQL_INTEGER",
    "PARAMETER_EVENTS",
    "SPLIT_CHANGE_DELAY",
    "WITHDRAWAL_WINDOW",
    "Handler",
    "ProjectionError",
    "apply",
    "datanets",
    "models",
    "nodes",
    "on",
    "payments",
    "replay",
    "rewards",
    "stored_events",
]
