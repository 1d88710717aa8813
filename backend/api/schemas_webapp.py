"""Response models of the web app's read routes (lineage, chart series), under the conventions
of :mod:`backend.api.schemas`: amounts are OPEN wei as decimal strings, times unix seconds."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from backend.api.schemas import ModelPublic, ModelVersionPublic, Page, VersionPublic, Wei


class LossPoint(BaseModel):
    step: int
    loss: float


class Evaluation(BaseModel):
    """The held-out evaluation ModelFactory ran after training (its ``eval_report.json``)."""

    report_cid: str
    method: str | None = Field(description="sft or dpo, as the report says")
    metrics: dict[str, float] = Field(
        description="its headline numbers: held-out loss and perplexity (base and adapter) for "
        "SFT; preference accuracy and margin, as held_out_preferences.<before|after|"
        "after_vs_current>.<metric>, for DPO"
    )


class LossCurve(BaseModel):
    """The training loss the job recorded: the points (JSON in the store) and a PNG plot."""

    cid: str | None = Field(description="the curve as JSON: a list of {step, epoch, loss}")
    points: list[LossPoint] | None = Field(description="null when the JSON cannot be read")
    plot_cid: str | None = Field(description="the curve as a PNG image")


class ModelLineage(BaseModel):
    """Where one adapter version came from: the Datanet version, the training manifest, the
    adapter, and what ModelFactory measured. Pieces that cannot be found are null, and
    ``notes`` says why."""

    model: ModelPublic
    version: ModelVersionPublic = Field(description="adapter_cid and training_manifest_cid")
    datanet_version: VersionPublic | None = Field(description="the Datanet version it trained on")
    metadata_cid: str = Field(description="the model's metadata, which names the artifacts")
    evaluation: Evaluation | None = Field(description="null: none recorded (e.g. an import)")
    loss_curve: LossCurve | None = Field(description="null: none recorded")
    attribution_index_cid: str | None
    notes: list[str] = Field(description="why a piece is null, when it is not simply absent")


class Bucket(StrEnum):
    HOUR = "hour"
    DAY = "day"


class RevenuePoint(BaseModel):
    """A model's redemptions within one time bucket (UTC-aligned, by block timestamp)."""

    model_id: int
    bucket_start: int = Field(description="unix seconds")
    paid: Wei = Field(description="sum of the redemptions' paid amounts")
    redemptions: int
    inferences: int | None = Field(
        description="receipts of the usage proofs that paid the model; null when a usage "
        "proof in the bucket also paid other models (the split needs its receipts log) or a "
        "redemption has no usage proof"
    )


class ContributorTotals(BaseModel):
    """What attribution epochs allocated an account, from the epochs' reports."""

    account: str
    allocated: Wei = Field(description="its leaves in posted or expired epochs")
    claimed: Wei
    claimable: Wei = Field(description="not claimed, in epochs claimable at the last block")


class ContributorPage(Page[ContributorTotals]):
    unavailable_epochs: list[int] = Field(
        description="epochs whose report is not in the content store or does not match its root"
    )
