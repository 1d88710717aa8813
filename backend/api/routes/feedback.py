"""Feedback on paid answers: ratings and preferences signed (EIP-712) by the payer of the
receipts they name, and the preference pairs they export for the model's next DPO round."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from backend.api.deps import AddressQuery, DbDep, IdPath
from backend.api.errors import APIError, ErrorResponse, conflict
from backend.api.feedback import FeedbackService, FeedbackUnavailableError
from backend.api.routes.models import require_model
from backend.modelfactory.feedback_store import FeedbackStore
from backend.modelfactory.feedback_types import (
    BadSignatureError,
    DuplicateFeedbackError,
    FeedbackError,
    NotPayerError,
    PromptMismatchError,
    SignedPreference,
    SignedRating,
    UnknownReceiptError,
    recover_preference_signer,
    recover_rating_signer,
)

HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
SIGNATURE_PATTERN = r"^0x[0-9a-fA-F]{130}$"
MAX_TEXT = 200_000  # characters of a prompt, answer or comment
NDJSON = "application/x-ndjson"

_ERRORS = {
    400: "The body is not JSON",
    403: "The signature is invalid, or its signer did not pay for the answer",
    404: "No published receipt has that request hash (or nothing to export)",
    409: "Contradicts feedback already stored, or the index does not know the deployment yet",
    422: "Malformed feedback, or an answer or comment that does not match what was signed",
}
router = APIRouter(
    prefix="/feedback",
    tags=["feedback"],
    responses={c: {"model": ErrorResponse, "description": d} for c, d in _ERRORS.items()},
)

Hash = Annotated[str, Field(pattern=HASH_PATTERN, description="0x and 32 bytes of hex")]
Signature = Annotated[str, Field(pattern=SIGNATURE_PATTERN, description="0x || r || s || v")]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


def _integral(value: object) -> object:
    """``4.0`` as ``4``: JSON has one number type (strings and booleans stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Score = Annotated[int, Field(ge=1, le=5), BeforeValidator(_integral)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RatingCreate(_Body):
    """A signed ``Rating(bytes32 requestHash, uint8 score, bytes32 commentHash)`` and the texts
    it is about (the answer must hash to the receipt's output hash)."""

    requestHash: Hash  # noqa: N815 - the signed field's name
    score: Score
    commentHash: Hash  # noqa: N815 - keccak(text=comment), zero for none
    signature: Signature
    prompt: Text
    answer: Text
    comment: Annotated[str, Field(max_length=MAX_TEXT)] | None = None


class PreferenceCreate(_Body):
    """A signed ``Preference(bytes32 chosenRequestHash, bytes32 rejectedRequestHash)`` and the
    prompt and the two answers (each must hash to its receipt's output hash)."""

    chosenRequestHash: Hash  # noqa: N815
    rejectedRequestHash: Hash  # noqa: N815
    signature: Signature
    prompt: Text
    chosen_answer: Text
    rejected_answer: Text


Kind = Literal["rating", "preference"]


class FeedbackStored(BaseModel):
    kind: Kind
    new: bool  # False: the same feedback was already stored (an idempotent retry)
    model_id: int
    signer: str  # the payer who signed it


class FeedbackCounts(BaseModel):
    model_id: int
    ratings: int
    preferences: int
    pairs: int  # preference pairs the export holds (explicit and derived from ratings)


def get_feedback(request: Request) -> FeedbackService:
    return request.app.state.feedback


FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]


def _open(service: FeedbackService) -> FeedbackStore:
    try:
        return service.store()
    except FeedbackUnavailableError as why:
        raise conflict(str(why)) from None


def _refused(why: FeedbackError) -> APIError:
    """The status that names the check ``why`` failed."""
    if isinstance(why, UnknownReceiptError):
        return APIError(404, str(why))
    if isinstance(why, NotPayerError | BadSignatureError):
        return APIError(403, str(why))
    if isinstance(why, DuplicateFeedbackError | PromptMismatchError):
        return APIError(409, str(why))
    return APIError(422, str(why))


def _require_receipts(service: FeedbackService, **hashes: str) -> int:
    """Loads newly indexed receipts; 404 for the first request hash without one. Checked
    before anything else, so feedback on an unknown answer is always "not found"."""
    service.refresh()
    model_id = 0
    for role, value in hashes.items():
        receipt = service.get(bytes.fromhex(value[2:]))
        if receipt is None:
            raise APIError(404, f"no published receipt for the {role} request {value}")
        model_id = receipt.model_id
    return model_id


def _stored(
    response: Response, kind: Kind, new: bool, model_id: int, signer: str
) -> FeedbackStored:
    response.status_code = 201 if new else 200
    return FeedbackStored(kind=kind, new=new, model_id=model_id, signer=signer)


# What both POST routes answer: 201 for new feedback, 200 for a retry of stored feedback.
_STORES: dict[str, Any] = {
    "status_code": 201,
    "response_model": FeedbackStored,
    "responses": {200: {"model": FeedbackStored, "description": "Already stored (a retry)"}},
}


@router.post("/ratings", **_STORES)
def rate(body: RatingCreate, service: FeedbackDep, response: Response) -> FeedbackStored:
    """Stores a rating of an answer by the wallet that paid for it."""
    store = _open(service)
    model_id = _require_receipts(service, rated=body.requestHash)
    fields = body.model_dump(include={"requestHash", "score", "commentHash", "signature"})
    try:
        signed = SignedRating.from_json(fields)
        signer = recover_rating_signer(store.domain, signed)
        new = store.add_rating(signed, body.prompt, body.answer, body.comment)
    except FeedbackError as why:
        raise _refused(why) from None
    return _stored(response, "rating", new, model_id, signer)


@router.post("/preferences", **_STORES)
def prefer(body: PreferenceCreate, service: FeedbackDep, response: Response) -> FeedbackStored:
    """Stores a preference between two answers to one prompt, by the wallet that paid for
    both."""
    store = _open(service)
    model_id = _require_receipts(
        service, chosen=body.chosenRequestHash, rejected=body.rejectedRequestHash
    )
    fields = body.model_dump(include={"chosenRequestHash", "rejectedRequestHash", "signature"})
    try:
        signed = SignedPreference.from_json(fields)
        signer = recover_preference_signer(store.domain, signed)
        new = store.add_preference(signed, body.prompt, body.chosen_answer, body.rejected_answer)
    except FeedbackError as why:
        raise _refused(why) from None
    return _stored(response, "preference", new, model_id, signer)


@router.get("/models/{model_id}", response_model=FeedbackCounts)
def counts(db: DbDep, service: FeedbackDep, model_id: IdPath) -> FeedbackCounts:
    """How much feedback a model has: ratings, preferences, and the pairs they export."""
    require_model(db, model_id)
    store = _open(service)
    stored = store.counts(model_id)
    return FeedbackCounts(model_id=model_id, ratings=stored["ratings"],
                          preferences=stored["preferences"],
                          pairs=len(store.preference_pairs(model_id)))  # fmt: skip


class NDJSONResponse(Response):
    media_type = NDJSON


@router.get(
    "/models/{model_id}/export",
    response_class=Response,  # no JSON 200 in the schema; errors stay JSON
    responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}},
                     "description": "Preference pairs, one JSON object a line"}},
)  # fmt: skip
def export(
    db: DbDep, service: FeedbackDep, model_id: IdPath, giver: AddressQuery = ""
) -> NDJSONResponse:
    """A model's feedback as a preference-pairs Datanet contribution (JSON Lines of
    ``{"prompt", "chosen", "rejected"}``), optionally only one giver's."""
    require_model(db, model_id)
    store = _open(service)
    if not store.preference_pairs(model_id, giver or None):
        who = f" from {giver}" if giver else ""
        raise APIError(404, f"no preference pairs for model {model_id}{who} to export")
    try:
        data = store.export_preferences(model_id, giver or None)
    except FeedbackError as why:
        raise conflict(str(why)) from None
    name = f"model-{model_id}-preferences.jsonl"
    return NDJSONResponse(data, headers={"content-disposition": f'attachment; filename="{name}"'})
