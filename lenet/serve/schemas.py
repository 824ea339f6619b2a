"""What goes in and out of the API: request bodies, answers, and the documented error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field, StrictInt, StrictStr

from lenet.serve.limits import MAX_BATCH


class ImageIn(BaseModel):
    image: str = Field(
        description="the image file's bytes in base64 (standard or URL-safe alphabet, line breaks allowed) or a data: URL"
    )


class BatchIn(BaseModel):
    images: list[str] = Field(min_length=1, description=f"1 to {MAX_BATCH} images, each as in ImageIn.image")


class PredictionOut(BaseModel):
    digit: int
    confidence: float
    probs: list[float] = Field(description="10 probabilities, digit 0 first")
    runner_up: int = Field(description="the second most likely digit")
    runner_up_confidence: float
    unsure: bool = Field(description="confidence below the server's threshold: show the runner-up too")
    id: str | None = Field(None, description="with --collect: this answer's id, for POST /feedback's prediction_id")
    preprocessed_png: str | None = Field(None, description="with ?preview=true: base64 PNG of the 28x28 image the model saw")


class ErrorOut(BaseModel):
    error: str = Field(description="bad_image, image_too_large, no_digit, bad_request, request_too_large, ...")
    detail: str = Field(description="what was wrong and what to do")


class BatchOut(BaseModel):
    predictions: list[PredictionOut | ErrorOut] = Field(description="in request order; a failed image carries its error")


class HealthOut(BaseModel):
    status: str
    checkpoint: str
    checkpoints: list[str]
    max_upload_bytes: int
    unsure_below: float
    collecting: bool = Field(description="POST /feedback keeps corrections (lenet-serve --collect)")


class FeedbackIn(BaseModel):
    # Strict: pydantic would take true as 1 and 7.0 as 7.
    label: StrictInt | StrictStr = Field(description='the right answer: 0 to 9, or "not_a_digit"')
    image: str | None = Field(None, description="the image, as in ImageIn.image; or else prediction_id")
    prediction_id: str | None = Field(None, description="the id of the answer this corrects (PredictionOut.id)")
    writer: str | None = Field(None, description="an optional tag for the writer, up to 64 characters of plain text")


class FeedbackOut(BaseModel):
    id: int = Field(description="the correction's row in the database")
    label: int | str = Field(description='0 to 9, or "not_a_digit"')
    predicted: int = Field(description="the model's answer for the image")
    confidence: float
    upload_kept: bool = Field(description="the original upload was stored as well (it is not when large or sent by id)")


def documented(errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Error statuses and when they happen -> a route's `responses` in the OpenAPI docs."""
    return {status: {"model": ErrorOut, "description": description} for status, description in errors.items()}


ERROR_RESPONSES = documented({
    400: "unreadable image, bad base64, bad JSON or form",
    408: "the body did not arrive in time",
    413: "too many bytes, pixels or images",
    415: "neither multipart/form-data nor application/json",
    422: "no digit in the image",
    503: "busy: retry after the seconds in Retry-After",
})  # fmt: skip
FEEDBACK_RESPONSES = ERROR_RESPONSES | documented({
    400: "bad label or writer tag, neither an image nor a prediction_id or both, unreadable image, bad JSON or form",
    404: "collection is off (lenet-serve without --collect), or the prediction_id is not known to this server",
    503: "busy (retry after Retry-After), or the corrections database cannot be used: see detail",
    507: "the corrections database is at its row or byte limit",
})  # fmt: skip
Preview = Annotated[bool, Query(description="also return preprocessed_png, the 28x28 image the model saw")]
