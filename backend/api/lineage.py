"""What ModelFactory stored beside an adapter, found from the chain's pointers.

The chain names, per model, one metadata document (``registerModel``'s ``metadataCID``), and
per version only the adapter and the training manifest. The metadata's ``artifacts``
(:func:`backend.modelfactory.publish.store_artifacts`) name the eval report, the loss curve
(JSON and PNG) and the attribution index of the adapter it was written with, so they belong to
a version only when that version holds the same adapter and manifest (the first, as published
by ModelFactory). Later versions' metadata documents are stored but nothing on-chain names
them: their evaluation is not found, and the notes say so.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from backend.api.schemas_webapp import Evaluation, LossCurve, LossPoint
from backend.storage.base import ContentNotFoundError, ContentStore, ContentStoreError
from backend.storage.cid import CID, InvalidCIDError

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # a metadata document, eval report or loss curve
_NOT_METRICS = ("seconds",)  # the job's wall time: not a measure of the adapter


@dataclass
class Artifacts:
    """The pieces found for one version, and why the others are missing."""

    evaluation: Evaluation | None = None
    loss_curve: LossCurve | None = None
    attribution_index: str | None = None
    notes: list[str] = field(default_factory=list)


def _document(store: ContentStore, cid: str, what: str, notes: list[str]) -> Any | None:
    """The JSON under ``cid``, or None with a note saying why it cannot be read."""
    try:
        CID.parse(cid)
        return json.loads(store.get(cid, max_bytes=MAX_DOCUMENT_BYTES))
    except InvalidCIDError:
        notes.append(f"the {what} CID {cid!r} is not a CID")
    except ContentNotFoundError:
        notes.append(f"the {what} {cid} is not in the content store")
    except ContentStoreError as why:
        notes.append(f"the {what} {cid} cannot be read: {why}")
    except (ValueError, UnicodeDecodeError) as why:
        notes.append(f"the {what} {cid} is not JSON: {why}")
    return None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's top-level numbers (held-out loss, perplexity, examples, tokens for SFT)
    and, for DPO, its held-out preference numbers as ``held_out_preferences.<when>.<name>``."""
    metrics = {
        key: number
        for key, value in report.items()
        if key not in _NOT_METRICS and (number := _number(value)) is not None
    }
    preferences = report.get("held_out_preferences")
    if isinstance(preferences, dict):
        for when, values in preferences.items():
            if not isinstance(values, dict):
                continue
            for name, value in values.items():
                if (number := _number(value)) is not None:
                    metrics[f"held_out_preferences.{when}.{name}"] = number
    return metrics


def _points(curve: Any) -> list[LossPoint] | None:
    """``[{step, loss}]`` of a curve written by ``save_loss_curve``; None if it is not one."""
    if not isinstance(curve, list):
        return None
    points = []
    for point in curve:
        step = point.get("step") if isinstance(point, dict) else None
        loss = _number(point.get("loss")) if isinstance(point, dict) else None
        if _number(step) is None or loss is None:
            return None
        points.append(LossPoint(step=int(step), loss=loss))
    return points


def find_artifacts(store: ContentStore, model: sqlite3.Row, version: sqlite3.Row) -> Artifacts:
    """The evaluation, loss curve and attribution index of ``version`` of ``model``, from the
    model's metadata when that document was written for this version's adapter."""
    found = Artifacts()
    metadata = _document(store, model["metadata_cid"], "model's metadata", found.notes)
    if metadata is None:
        return found
    links = metadata.get("artifacts") if isinstance(metadata, dict) else None
    if not isinstance(links, dict):
        found.notes.append("the model's metadata names no artifacts")
        return found
    held = (links.get("adapter"), links.get("training_manifest"))
    if held != (version["adapter_cid"], version["training_manifest_cid"]):
        found.notes.append(
            f"the model's metadata describes adapter {held[0]}, not this version's "
            f"{version['adapter_cid']}; nothing on-chain names this version's metadata"
        )
        return found
    found.attribution_index = _link(links, "attribution_index")
    report_cid = _link(links, "eval_report")
    if report_cid is not None:
        report = _document(store, report_cid, "eval report", found.notes)
        if isinstance(report, dict):
            method = report.get("method")
            found.evaluation = Evaluation(
                report_cid=report_cid,
                method=method if isinstance(method, str) else None,
                metrics=headline_metrics(report),
            )
        elif report is not None:
            found.notes.append(f"the eval report {report_cid} is not a JSON object")
    curve_cid, plot_cid = _link(links, "loss_curve"), _link(links, "loss_plot")
    if curve_cid is not None or plot_cid is not None:
        points = None
        if curve_cid is not None:
            points = _points(_document(store, curve_cid, "loss curve", found.notes))
            if points is None and not any(curve_cid in n for n in found.notes):
                found.notes.append(f"the loss curve {curve_cid} is not a list of {{step, loss}}")
        found.loss_curve = LossCurve(cid=curve_cid, points=points, plot_cid=plot_cid)
    return found


def _link(links: dict[str, Any], name: str) -> str | None:
    value = links.get(name)
    return value if isinstance(value, str) else None
