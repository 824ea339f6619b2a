"""REST API and drawing page for a trained model: `lenet-serve --ckpt RUN_DIR [--host] [--port] [--workers]`.

    POST /predict        one image: multipart form field `file`, or JSON {"image": "<base64>"}
    POST /predict/batch  several: multipart fields `files`, or JSON {"images": ["<base64>", ...]}
    GET  /healthz        liveness and the checkpoint served
    GET  /               the drawing page (lenet/static/), GET /docs the OpenAPI docs

Every image goes through `lenet.preprocess.prepare_image`, the one path shared with `lenet-predict`;
answers include that 28x28 view as a PNG, which the page shows. The model is loaded once, read-only,
from a checkpoint opened with `weights_only=True`. Bad input gets a JSON 4xx naming the problem.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from lenet.inference import Prediction, load_model, predict_tensors
from lenet.preprocess import MAX_PIXELS, ImageError, ImageTooLargeError, NoDigitError, prepare_image

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 5_000_000
MAX_BATCH = 64
ERROR_CODES = {400: "bad_request", 413: "request_too_large", 415: "unsupported_media_type"}
ENVIRONMENT = {"ckpt": "LENET_SERVE_CKPT", "max_upload_bytes": "LENET_SERVE_MAX_UPLOAD_BYTES"}
HOW_TO_SEND = (
    'send multipart/form-data with the image in the field "file" (batch: "files"), or application/json '
    '{"image": "<base64>"} (batch: {"images": [...]})'
)


class PredictionOut(BaseModel):
    digit: int
    confidence: float
    probs: list[float]  # 10 probabilities, digit 0 first
    preprocessed_png: str  # base64 PNG of the 28x28 image the model saw


class ImageErrorOut(BaseModel):
    error: str  # bad_image, image_too_large or no_digit
    detail: str


class BatchOut(BaseModel):
    predictions: list[PredictionOut | ImageErrorOut]  # in request order; failed images carry an error


class HealthOut(BaseModel):
    status: str
    checkpoint: str
    max_upload_bytes: int


# ----------------------------------------------------------------------------- images -> answers


def error_status(error: ImageError) -> tuple[int, str]:
    if isinstance(error, ImageTooLargeError):
        return 413, "image_too_large"
    if isinstance(error, NoDigitError):
        return 422, "no_digit"
    return 400, "bad_image"


def preview_png(image: torch.Tensor) -> str:
    """(1, 28, 28) in [0, 1] -> base64 PNG."""
    pixels = (image[0].numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def answer(prediction: Prediction, image: torch.Tensor) -> PredictionOut:
    return PredictionOut(**vars(prediction), preprocessed_png=preview_png(image))


def check_size(data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise ImageTooLargeError(
            f"the image is {len(data):,} bytes, over the server's limit of {limit:,}: send a smaller or "
            "more compressed image (a digit needs only a few hundred pixels a side)."
        )
    return data


# ----------------------------------------------------------------------------- reading requests


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refused (413) as soon as it passes `limit` bytes."""
    too_large = HTTPException(413, f"the request body is over the server's limit of {limit:,} bytes: send a smaller image.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    if not size:
        raise HTTPException(400, f"the request body is empty: {HOW_TO_SEND}.")
    return b"".join(chunks)


async def images_from_request(request: Request, field: str, limit: int, max_images: int) -> list[bytes]:
    """Image bytes from a multipart field (repeated for a batch) or a JSON body of base64 strings."""
    # One request carries at most `limit` bytes of images (a batch too); base64 adds a third.
    body = await read_body(request, limit * 4 // 3 + 64 * 1024)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _multipart_images(request, body, field, max_images)
    if content_type == "application/json":
        return _json_images(body, "image" if field == "file" else "images", max_images)
    raise HTTPException(415, f"unsupported content type {content_type or '(none)'!r}: {HOW_TO_SEND}.")


async def _multipart_images(request: Request, body: bytes, field: str, max_images: int) -> list[bytes]:
    async def replay() -> dict[str, Any]:  # the body was already read (with its size limit)
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_images, max_fields=16)
    except HTTPException as error:  # Starlette's own 400 for malformed multipart
        raise HTTPException(400, f"malformed multipart body ({error.detail}): {HOW_TO_SEND}.") from error
    uploads = form.getlist(field)
    if not uploads:
        raise HTTPException(400, f"the form has no field {field!r} (it has {sorted(form.keys())}): {HOW_TO_SEND}.")
    if not all(isinstance(upload, UploadFile) for upload in uploads):
        raise HTTPException(400, f"the form field {field!r} must be a file upload, not text: {HOW_TO_SEND}.")
    return [await upload.read() for upload in uploads]


def _json_images(body: bytes, key: str, max_images: int) -> list[bytes]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"the body is not valid JSON ({error}): {HOW_TO_SEND}.") from error
    value = payload.get(key) if isinstance(payload, dict) else None
    encoded = [value] if key == "image" else value
    if not isinstance(encoded, list) or not encoded or not all(isinstance(item, str) for item in encoded):
        raise HTTPException(400, f"the JSON body needs the key {key!r} holding base64 image data: {HOW_TO_SEND}.")
    if len(encoded) > max_images:
        raise HTTPException(413, f"{len(encoded)} images in one request, over the limit of {max_images}.")
    return [_decode_base64(item) for item in encoded]


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(400, f"the image is not valid base64 ({error}): encode the file's bytes.") from error


# ----------------------------------------------------------------------------- the app


def create_app(
    ckpt: str | Path,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_batch: int = MAX_BATCH,
    device: str = "cpu",
) -> FastAPI:
    """The API and page for one checkpoint (run directory or .ckpt), loaded when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.model = load_model(ckpt, device)  # read-only from here on: safe to share across threads
        yield

    app = FastAPI(title="lenet", summary="Handwritten digit recognition with LeNet-5 on MNIST", lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Every error answers {"error": short code, "detail": what was wrong and what to do}.
    @app.exception_handler(ImageError)
    async def image_error(request: Request, error: ImageError) -> JSONResponse:
        status, code = error_status(error)
        return JSONResponse({"error": code, "detail": str(error)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = ERROR_CODES.get(error.status_code) or HTTPStatus(error.status_code).phrase.lower().replace(" ", "_")
        return JSONResponse({"error": code, "detail": error.detail}, status_code=error.status_code)

    def predict_images(images: list[bytes]) -> list[PredictionOut | ImageError]:
        """Prepare and predict in a worker thread: CPU-bound, so it must not block the event loop."""
        prepared: list[torch.Tensor | ImageError] = []
        for data in images:
            try:
                prepared.append(prepare_image(check_size(data, max_upload_bytes), max_pixels))
            except ImageError as error:
                prepared.append(error)
        good = [image for image in prepared if isinstance(image, torch.Tensor)]
        predictions = iter(predict_tensors(app.state.model, good))
        return [answer(next(predictions), image) if isinstance(image, torch.Tensor) else image for image in prepared]

    body_docs = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                },
                "application/json": {"schema": {"type": "object", "properties": {"image": {"type": "string"}}}},
            },
        }
    }
    batch_docs = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    }
                },
                "application/json": {
                    "schema": {"type": "object", "properties": {"images": {"type": "array", "items": {"type": "string"}}}}
                },
            },
        }
    }

    # The endpoints are async only to read the body with a size limit and either content type;
    # the work runs in the thread pool, as it would for a plain `def` endpoint.
    @app.post("/predict", response_model=PredictionOut, openapi_extra=body_docs)
    async def predict(request: Request) -> PredictionOut:
        """Predict the digit in one image (PNG, JPEG, BMP, GIF, WebP or TIFF)."""
        images = await images_from_request(request, "file", max_upload_bytes, max_images=1)
        [result] = await run_in_threadpool(predict_images, images)
        if isinstance(result, ImageError):
            raise result
        return result

    @app.post("/predict/batch", response_model=BatchOut, openapi_extra=batch_docs)
    async def predict_batch(request: Request) -> BatchOut:
        """Predict up to `max_batch` images; an image that fails carries its own error."""
        images = await images_from_request(request, "files", max_upload_bytes, max_images=max_batch)
        if len(images) > max_batch:
            raise HTTPException(413, f"{len(images)} images in one request, over the limit of {max_batch}.")
        results = await run_in_threadpool(predict_images, images)
        items = [ImageErrorOut(error=error_status(r)[1], detail=str(r)) if isinstance(r, ImageError) else r for r in results]
        return BatchOut(predictions=items)

    @app.get("/healthz", response_model=HealthOut)
    def healthz() -> HealthOut:
        return HealthOut(status="ok", checkpoint=str(app.state.model.checkpoint_path), max_upload_bytes=max_upload_bytes)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def app_from_environment() -> FastAPI:
    """The app `lenet-serve` runs in each uvicorn worker process, configured through the environment."""
    # One request is one small forward pass: requests run in parallel threads instead of splitting one.
    torch.set_num_threads(1)
    return create_app(os.environ[ENVIRONMENT["ckpt"]], int(os.environ[ENVIRONMENT["max_upload_bytes"]]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lenet-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="run directory (uses checkpoints/best.ckpt) or .ckpt file")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default: 1)")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 1e6, help="largest image accepted, in MB (default: 5)")
    args = parser.parse_args(argv)
    try:
        load_model(args.ckpt)  # fail here, with the checkpoint's own error, rather than in every worker
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))

    import uvicorn

    os.environ[ENVIRONMENT["ckpt"]] = str(Path(args.ckpt).resolve())
    os.environ[ENVIRONMENT["max_upload_bytes"]] = str(int(args.max_upload_mb * 1e6))
    # Each worker imports torch before it answers uvicorn's health pings; on a busy machine that
    # takes longer than uvicorn's default 5 s, after which it would kill and restart the worker.
    uvicorn.run(
        "lenet.serve:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_worker_healthcheck=120,
    )


if __name__ == "__main__":
    main()
