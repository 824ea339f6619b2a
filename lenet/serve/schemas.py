"""What goes in and out of the API: request bodies, answers, and the documented error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field

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


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in {
        400: "unreadable image, bad base64, bad JSON or form",
        408: "the body did not arrive in time",
        413: "too many bytes, pixels or images",
        415: "neither multipart/form-data nor application/json",
        422: "no digit in the image",
        503: "busy: retry after the seconds in Retry-After",
    }.items()
}
Preview = Annotated[bool, Query(description="also return preprocessed_png, the 28x28 image the model saw")]
