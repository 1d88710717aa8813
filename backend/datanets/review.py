"""Curating a Datanet: pending contributions with previews, re-validation, batched reviews."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from backend.datanets.formats import ContributionFormatError, DatanetMetadata
from backend.datanets.formats import validate_contribution as check_format
from backend.datanets.registry import Contribution, DatanetError, DatanetHistory
from backend.sdk import OpenLedger
from backend.storage.base import ContentStore, ContentStoreError
from backend.storage.cid import InvalidCIDError

log = logging.getLogger(__name__)
PREVIEW_LINES = 3
PREVIEW_WIDTH = 100  # characters per preview line
DEFAULT_REVIEW_BATCH = 100  # contributions per review transaction


def preview(store: ContentStore, cid: str, lines: int = PREVIEW_LINES) -> list[str]:
    """The first ``lines`` lines of ``cid``'s content (verified), each cut to a screen width;
    a one-line note instead when it cannot be read."""
    try:
        data = store.get(cid)
    except (ContentStoreError, InvalidCIDError) as why:
        return [f"(unreadable: {why})"]
    text = data[: 64 * 1024].decode("utf-8", errors="replace")
    shown = [line for line in text.splitlines() if line.strip()][:lines]
    return [
        line if len(line) <= PREVIEW_WIDTH else line[: PREVIEW_WIDTH - 1] + "…" for line in shown
    ]


@dataclass(frozen=True)
class Verdicts:
    """What re-validation found: ids to approve, ids to reject (with why), ids left pending."""

    approve: list[int]
    reject: dict[int, str]  # id -> reason
    unavailable: dict[int, str]  # id -> why its content could not be read (left pending)


def validate_pending(
    metadata: DatanetMetadata, store: ContentStore, pending: Sequence[Contribution]
) -> Verdicts:
    """Re-validates each pending contribution from the store: valid -> approve; invalid
    format, declared size not the stored size, or not a CID at all -> reject; content not
    (correctly) in the store -> left pending."""
    verdicts = Verdicts([], {}, {})
    for c in pending:
        try:
            data = store.get(c.cid)
        except InvalidCIDError as why:
            verdicts.reject[c.id] = str(why)
            continue
        except ContentStoreError as why:
            verdicts.unavailable[c.id] = str(why)
            continue
        try:
            check_format(metadata, data)
        except ContributionFormatError as why:
            verdicts.reject[c.id] = str(why)
            continue
        if len(data) != c.size:
            verdicts.reject[c.id] = f"declared {c.size} bytes, stored content has {len(data)}"
            continue
        verdicts.approve.append(c.id)
    return verdicts


def check_reviewable(history: DatanetHistory, ids: Sequence[int]) -> None:
    """Raises :class:`DatanetError` unless every id is a pending contribution of the Datanet."""
    for cid_id in ids:
        c = history.contributions.get(cid_id)
        if c is None:
            raise DatanetError(
                f"contribution {cid_id} is not a contribution of datanet {history.datanet_id}"
            )
        if c.approved is not None:
            raise DatanetError(f"contribution {cid_id} was already reviewed ({c.status})")


def send_reviews(
    ol: OpenLedger,
    datanet_id: int,
    approve: Sequence[int],
    reject: Sequence[int],
    *,
    batch_size: int = DEFAULT_REVIEW_BATCH,
) -> int:
    """Sends the sender's verdicts in ``review`` transactions of ``batch_size``; returns how
    many."""
    both = sorted(set(approve) & set(reject))
    if both:
        raise DatanetError(f"contributions {both} are both approved and rejected")
    items = [(i, True) for i in approve] + [(i, False) for i in reject]
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        ol.send(
            f"reviewed {len(batch)} contribution(s) of datanet {datanet_id}",
            ol.datanets.functions.review(datanet_id, [i for i, _ in batch], [v for _, v in batch]),
        )
    return len(items)
