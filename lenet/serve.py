"""REST API and drawing page for trained models: `lenet-serve --ckpt RUN_DIR [--ckpt RUN_DIR ...] [--port 8000]`.

    POST /predict        one image: multipart form field `file`, or JSON {"image": "<base64>"}
    POST /predict/batch  several: multipart fields `files`, or JSON {"images": ["<base64>", ...]}
                         (both: `?preview=true` adds `preprocessed_png`, the 28x28 image the model saw)
    GET  /healthz        liveness and the checkpoints served
    GET  /               the drawing page (lenet/static/); GET /docs the OpenAPI docs, served from this machine

Every image goes through `lenet.preprocess.prepare_image`, the one path shared with `lenet-predict`;
several checkpoints are served as their ensemble; `--native` runs LeNet-5 checkpoints in the C
kernel of lenet.native. Bad input gets a JSON 4xx `{"error", "detail"}`,
never a 500, and every request is bounded: its body in size (413) and in time to arrive (408), its
images in number and decoded pixels (413), and the decoding work in flight in each worker process
(beyond it requests queue, and get 503 with Retry-After when the queue is full). Connections whose
request head does not arrive within seconds are closed.

torch, Pillow and the model code are imported when the app is created, not with this module, so
`lenet-serve --help` and a mistyped command line answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import ctypes
import ctypes.util
import io
import json
import os
import socket
import sys
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio
import h11
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from lenet.startup import imports_without_collector

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 5_000_000  # one image file; a request body may carry this much image data, plus base64's third
MAX_BATCH = 64  # images in one request
MAX_REQUEST_PIXELS = 50_000_000  # pixels decoded for one request, all its images together (one image's limit)
DECODE_BUDGET_PIXELS = 100_000_000  # pixels decoding at once in one worker: two worst-case requests, about 0.5 GB
MAX_WAITING = 16  # requests queued for that budget; the next one gets 503
WAIT_S = 30  # the longest a request waits in that queue before 503
BODY_TIMEOUT_S = 20.0  # the whole body must arrive within this (slow or stalled clients get 408)
HEAD_TIMEOUT_S = 10.0  # the request line and headers must arrive within this, or the connection is closed
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; more is a 400 from the HTTP server
MMAP_THRESHOLD = 1 << 20  # allocations this large get their own mapping, unmapped when freed (see below)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
CONFIG_VARIABLE = "LENET_SERVE_CONFIG"  # create_app's arguments, as JSON, for each uvicorn worker process
HOW_TO_SEND = (
    'send multipart/form-data with the image in the field "file" (batch: "files"), or application/json '
    '{"image": "<base64>"} (batch: {"images": [...]})'
)
ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    503: "busy",
}


# ----------------------------------------------------------------------------- what goes in and out


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


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- limits on every request


class BodyLimits:
    """ASGI middleware: a body over `max_bytes` gets 413 before more of it is read (at once when its
    Content-Length says so), and a body still arriving `timeout_s` after the request began gets 408.
    Both answers close the connection, so the rest of the body is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:  # refused unread
            too_large = self.too_large()
            return await error_response(413, "request_too_large", too_large.detail, too_large.headers)(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received, complete = 0, False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # later calls only wait for a disconnect, with no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.timeout_s:g} s: send it at once, or a smaller image.",
                    headers={"connection": "close"},
                ) from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self.too_large()
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    def too_large(self) -> HTTPException:
        return HTTPException(
            413,
            f"the request body is over the server's limit of {self.max_bytes:,} bytes: send a smaller image or fewer images.",
            headers={"connection": "close"},
        )


class HeadTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head (request line and headers)
    is not complete HEAD_TIMEOUT_S after the connection opened or the previous answer was sent.
    uvicorn's own keep-alive timeout stops at the first byte, so a partial head would be held forever.

    It also turns Nagle's algorithm off on every connection. With --workers 2 or more, uvicorn hands
    the workers a listening socket made without IPPROTO_TCP, so asyncio leaves Nagle on for the
    connections it accepts: an answer's body then waited for the client's delayed ACK of its head,
    and one client's requests took 48 ms each instead of 5 (benchmarks/serve_load.py)."""

    head_timeout_s = HEAD_TIMEOUT_S
    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        connection = transport.get_extra_info("socket")
        if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_watching()
        super().connection_lost(exc)

    def watch_head(self) -> None:
        """Time the head while h11 waits for one (the client's side IDLE); stop once it has arrived."""
        if self.conn.their_state is not h11.IDLE:
            self.stop_watching()
        elif self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout_s, self.transport.close)

    def stop_watching(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None


class DecodeBudget:
    """At most `pixels` image pixels being decoded at once in this process. A request waits for its
    share, up to `wait_s`; when `max_waiting` requests already wait, or its wait runs out, it gets 503."""

    def __init__(self, pixels: int, max_waiting: int = MAX_WAITING, wait_s: float = WAIT_S) -> None:
        self.free, self.max_waiting, self.wait_s = pixels, max_waiting, wait_s
        self.waiting = 0
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, pixels: int):
        async with self.changed:
            if self.free < pixels:
                if self.waiting >= self.max_waiting:
                    raise self.busy()
                self.waiting += 1
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: self.free >= pixels), self.wait_s)
                except TimeoutError:
                    raise self.busy() from None
                finally:
                    self.waiting -= 1
            self.free -= pixels
        try:
            yield
        finally:
            async with self.changed:
                self.free += pixels
                self.changed.notify_all()

    def busy(self) -> HTTPException:
        return HTTPException(
            503,
            "the server is busy decoding other large images: retry after the seconds in Retry-After, or send a smaller image.",
            headers={"Retry-After": "5"},
        )


def map_large_buffers_apart(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc give every allocation of `threshold` bytes or more its own memory mapping, returned
    to the system when freed. By default glibc raises that threshold as large blocks are freed and
    then serves image buffers from per-thread arenas, where they pile up: 8 concurrent worst-case
    uploads peaked at 1.42 GB that way (even with malloc_trim after each), 1.20 GB with this
    (benchmarks/serve_memory.py). False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------- images -> answers


def decode_base64(text: str) -> bytes:
    """Image bytes from base64: standard or URL-safe alphabet, wrapped lines, missing padding, or a data: URL."""
    if text.startswith("data:"):  # as canvas.toDataURL() makes
        text = text.partition(",")[2]
    text = "".join(text.split()).replace("-", "+").replace("_", "/")  # `base64` wraps at 76 columns
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(400, f"the image is not valid base64 ({error}): encode the file's bytes.") from error


def read_images(items: list[bytes] | list[str], max_pixels: int, request_limit: int) -> tuple[list[bytes], int]:
    """Uploaded bytes or base64 texts -> (image bytes, the pixels decoding them would take)."""
    images = [decode_base64(item) if isinstance(item, str) else item for item in items]
    return images, request_pixels(images, max_pixels, request_limit)


def request_pixels(images: list[bytes], max_pixels: int, request_limit: int) -> int:
    """The pixels decoding these images would take, from their headers alone; the count stops once
    over `request_limit` (the request is refused then). Images that cannot be opened, or are over
    the per-image limit, count nothing: they are refused one by one, undecoded."""
    from PIL import Image

    total = 0
    for data in images:
        if total > request_limit:
            break
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.size[0] * image.size[1]
        except Exception:  # any unreadable header: prepare_image names the problem for this image
            continue
        total += pixels if pixels <= max_pixels else 0
    return total


def error_status(error: Exception) -> tuple[int, str]:
    from lenet.preprocess import ImageTooLargeError, NoDigitError

    if isinstance(error, ImageTooLargeError):
        return 413, "image_too_large"
    if isinstance(error, NoDigitError):
        return 422, "no_digit"
    return 400, "bad_image"


def preview_png(image: Any) -> str:
    """(1, 28, 28) tensor in [0, 1] -> base64 PNG."""
    from PIL import Image

    pixels = (image[0].numpy() * 255).round().astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def predict_images(
    model: Any, images: list[bytes], max_upload_bytes: int, max_pixels: int, unsure_below: float, preview: bool
) -> list[PredictionOut | Exception]:
    """Prepare and predict, in a worker thread (CPU-bound); an image that fails gives its ImageError."""
    from lenet.inference import predict_tensors
    from lenet.preprocess import ImageError, ImageTooLargeError, prepare_image

    prepared: list[Any] = []
    for data in images:
        try:
            if len(data) > max_upload_bytes:
                raise ImageTooLargeError(
                    f"the image is {len(data):,} bytes, over the server's limit of {max_upload_bytes:,}: send a "
                    "smaller or more compressed image (a digit needs only a few hundred pixels a side)."
                )
            prepared.append(prepare_image(data, max_pixels))
        except ImageError as error:
            prepared.append(error)
    good = [image for image in prepared if not isinstance(image, ImageError)]
    predictions = iter(predict_tensors(model, good, unsure_below))  # one batch
    return [
        image if isinstance(image, ImageError)
        else PredictionOut(**vars(next(predictions)), preprocessed_png=preview_png(image) if preview else None)
        for image in prepared
    ]


# ----------------------------------------------------------------------------- the app


class JsonBodyRoute(APIRoute):
    """A route that only JSON requests reach. FastAPI reads one body type per route, so each
    endpoint has a typed JSON route, registered first, and a typed multipart route for the rest."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return Match.NONE, {}
        return super().matches(scope)


async def require_multipart(request: Request) -> None:
    """Runs before the form fields are checked, so a wrong content type is named as such. Async: a
    plain `def` dependency would be sent through the thread pool, ~0.2 ms per upload for a header check."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        named = repr(content_type) if content_type else "(none)"
        raise HTTPException(415, f"unsupported content type {named}: {HOW_TO_SEND}.")


def validation_detail(error: RequestValidationError) -> str:
    """Pydantic's first complaint as one line: where, what, and how to send a request."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query")) or "the body"
    if first["type"] == "missing" and tuple(first["loc"]) == ("body",):
        return f"the request body is empty: {HOW_TO_SEND}."
    if first["type"] == "json_invalid":
        return f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])}): {HOW_TO_SEND}."
    if "Expected UploadFile" in first["msg"]:
        return f"the form field {where!r} must be a file upload (curl -F {where}=@digit.png), not text."
    if first["loc"][0] == "query":
        return f"query parameter {where}: {first['msg']}."
    return f"{where}: {first['msg']}: {HOW_TO_SEND}."


def create_app(
    ckpts: str | Path | list[str | Path],
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int | None = None,
    max_batch: int = MAX_BATCH,
    unsure_below: float | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
    decode_budget_pixels: int = DECODE_BUDGET_PIXELS,
    device: str = "cpu",
    native: bool = False,
) -> FastAPI:
    """The API and page for one checkpoint or an ensemble of several (run directories or .ckpt files),
    loaded when the app starts."""
    from lenet.inference import UNSURE_BELOW, load_ensemble  # imports torch: see the module docstring
    from lenet.preprocess import MAX_PIXELS, ImageError

    paths = [ckpts] if isinstance(ckpts, (str, Path)) else list(ckpts)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    unsure_below = UNSURE_BELOW if unsure_below is None else unsure_below
    request_pixel_limit = min(MAX_REQUEST_PIXELS, max_pixels)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Read-only from here on: safe to share across threads (ONNX Runtime and the C kernel: 1 thread a request).
        app.state.model = load_ensemble(paths, device, cpu_threads=1, native=native)
        # CPU work runs on one thread per core: more would only queue for the cores and the GIL, and
        # the event loop, which answers /healthz, would wait behind them all.
        app.state.cpu = anyio.CapacityLimiter(os.cpu_count() or 1)
        app.state.budget = DecodeBudget(max(decode_budget_pixels, request_pixel_limit))
        yield

    # Swagger UI's script and styles come from the swagger-ui-bundle package, not a CDN; ReDoc has
    # no such package, so /redoc is off (the schema itself is at /openapi.json).
    app = FastAPI(
        title="lenet",
        summary="Handwritten digit recognition with LeNet-5 on MNIST",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimits, max_bytes=max_upload_bytes * 4 // 3 + 64 * 1024, timeout_s=body_timeout_s)

    # Every error answers {"error": short code, "detail": what was wrong and what to do}.
    @app.exception_handler(ImageError)
    async def image_error(request: Request, error: ImageError) -> JSONResponse:
        return error_response(*error_status(error), str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad_request", validation_detail(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        status, detail = error.status_code, str(error.detail)
        if status == 400 and detail.startswith("Too many files"):  # Starlette's multipart file limit
            status, detail = 413, f"too many images in one request: send at most {max_batch} (one to /predict)."
        elif status == 400 and isinstance(error.__cause__, (RecursionError, ValueError)):  # json.loads gave up
            why = "it is nested too deeply" if isinstance(error.__cause__, RecursionError) else str(error.__cause__).split(";")[0]
            detail = f"the JSON body cannot be read ({why}): {HOW_TO_SEND}."
        code = ERROR_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
        return error_response(status, code, detail, error.headers)

    async def answer(items: list[bytes] | list[str], preview: bool) -> list[PredictionOut | ImageError]:
        """Uploads or base64 texts -> one answer each. Only waiting for the decode budget happens on
        the event loop; decoding base64 and reading image headers run in the thread pool too, except
        the header of a single upload: tens of microseconds, where a trip through the pool costs ~0.2 ms."""
        if len(items) == 1 and isinstance(items[0], bytes):
            images, pixels = read_images(items, max_pixels, request_pixel_limit)
        else:
            images, pixels = await anyio.to_thread.run_sync(
                read_images, items, max_pixels, request_pixel_limit, limiter=app.state.cpu
            )
        if pixels > request_pixel_limit:
            raise HTTPException(
                413,
                f"the images in this request hold over {request_pixel_limit:,} pixels, the limit per request "
                f"({pixels:,} in the first of them): send fewer or smaller images (a digit needs only a few hundred "
                "pixels a side).",
            )
        async with app.state.budget.reserve(pixels):
            results = await anyio.to_thread.run_sync(
                predict_images, app.state.model, images, max_upload_bytes, max_pixels, unsure_below, preview,
                limiter=app.state.cpu,
            )
        return results

    async def answer_one(data: bytes | str, preview: bool) -> PredictionOut:
        [result] = await answer([data], preview)
        if isinstance(result, ImageError):
            raise result  # answered by image_error above
        return result

    def batch(results: list[PredictionOut | ImageError]) -> BatchOut:
        return BatchOut(
            predictions=[
                ErrorOut(error=error_status(r)[1], detail=str(r)) if isinstance(r, ImageError) else r for r in results
            ]
        )

    predict_docs = {"response_model_exclude_none": True, "responses": ERROR_RESPONSES}
    one = "Predict the digit in one image (PNG, JPEG, BMP, GIF, WebP or TIFF)."
    many = f"Predict up to {max_batch} images; an image that fails carries its own error."

    # JSON first: JsonBodyRoute lets only JSON requests reach these; everything else goes on to multipart.
    async def predict_json(body: ImageIn, preview: Preview = False) -> PredictionOut:
        return await answer_one(body.image, preview)

    async def predict_batch_json(body: BatchIn, preview: Preview = False) -> BatchOut:
        if len(body.images) > max_batch:  # before decoding any of them
            raise HTTPException(413, f"{len(body.images)} images in one request, over the limit of {max_batch}: split the batch.")
        return batch(await answer(body.images, preview))

    for path, endpoint, summary in (("/predict", predict_json, one), ("/predict/batch", predict_batch_json, many)):
        app.router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=JsonBodyRoute, description=summary, **predict_docs
        )

    @app.post("/predict", description=one, form_limits={"max_files": 1, "max_fields": 8}, **predict_docs)
    async def predict(
        file: Annotated[UploadFile, File(description="the image file")],
        preview: Preview = False,
        _: None = Depends(require_multipart),
    ) -> PredictionOut:
        return await answer_one(await file.read(), preview)

    @app.post("/predict/batch", description=many, form_limits={"max_files": max_batch, "max_fields": 8}, **predict_docs)
    async def predict_batch(
        files: Annotated[list[UploadFile], File(description="the image files, in the field `files` repeated")],
        preview: Preview = False,
        _: None = Depends(require_multipart),
    ) -> BatchOut:
        return batch(await answer([await upload.read() for upload in files], preview))

    @app.get("/healthz")
    async def healthz() -> HealthOut:  # async: answered on the event loop, even when every worker thread is busy
        model = app.state.model
        members = getattr(model, "members", [model])
        return HealthOut(
            status="ok",
            checkpoint=str(model.checkpoint_path),
            checkpoints=[str(member.checkpoint_path) for member in members],
            max_upload_bytes=max_upload_bytes,
            unsure_below=unsure_below,
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    add_docs(app)
    return app


def add_docs(app: FastAPI) -> None:
    """/docs with Swagger UI from the swagger-ui-bundle package, and an OpenAPI schema that lists both
    body types of each endpoint (FastAPI documents one route per path and method: the last)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            json_routes = [route for route in app.routes if isinstance(route, JsonBodyRoute)]
            info = {"title": app.title, "version": app.version, "summary": app.summary}
            schema = get_openapi(**info, routes=[route for route in app.routes if route not in json_routes])
            extra = get_openapi(**info, routes=json_routes)
            for path, operations in extra["paths"].items():
                for method, operation in operations.items():
                    content = schema["paths"][path][method]["requestBody"]["content"]
                    content.update(operation["requestBody"]["content"])
            schema["components"]["schemas"].update(extra["components"]["schemas"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- the command line


def app_from_environment() -> FastAPI:
    """The app `lenet-serve` runs in each uvicorn worker process, configured through the environment,
    made without the cyclic garbage collector (lenet/startup.py)."""
    with imports_without_collector():
        import torch

        # One request is one small forward pass: requests run in parallel threads instead of splitting one.
        torch.set_num_threads(1)
        map_large_buffers_apart()
        return create_app(**json.loads(os.environ[CONFIG_VARIABLE]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lenet-serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt",
        action="append",
        required=True,
        help="run directory (uses checkpoints/best.ckpt), .ckpt file or exported .onnx file; repeat it, or separate with commas, "
        "to serve an ensemble",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default: 1)")
    parser.add_argument(
        "--native", action="store_true",
        help="run LeNet-5 checkpoints in the project's C kernel (lenet/native.py: built once with this machine's C compiler)",
    )  # fmt: skip
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 1e6, help="largest image accepted, in MB (default: 5)")
    parser.add_argument(
        "--unsure-below",
        type=float,
        default=None,
        help="answers whose top probability is below this are marked unsure (default: lenet.inference.UNSURE_BELOW, 0.5)",
    )
    args = parser.parse_args(argv)
    args.ckpt = [name for value in args.ckpt for name in value.split(",") if name]
    if not args.ckpt:
        parser.error("--ckpt needs a run directory or .ckpt file")
    if args.workers < 1 or not 0 < args.port < 65536:
        parser.error(f"--workers must be at least 1 and --port between 1 and 65535 (got {args.workers} and {args.port})")
    if not 0 < args.max_upload_mb <= 100:
        parser.error(f"--max-upload-mb must be above 0 and at most 100, got {args.max_upload_mb:g}")
    if args.unsure_below is not None and not 0 <= args.unsure_below <= 1:
        parser.error(f"--unsure-below is a probability between 0 and 1, got {args.unsure_below:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with imports_without_collector():
        from lenet.inference import LOAD_ERRORS, load_ensemble, load_problem

        try:
            load_ensemble(args.ckpt, native=args.native)  # fail here, in one line, rather than in every worker (and build the kernel once)
        except LOAD_ERRORS as error:
            print(f"lenet-serve: {load_problem(error, args.ckpt)}", file=sys.stderr)
            return 2

    import uvicorn

    settings = {"ckpts": [str(Path(name).resolve()) for name in args.ckpt], "max_upload_bytes": int(args.max_upload_mb * 1e6)}
    if args.unsure_below is not None:
        settings["unsure_below"] = args.unsure_below
    if args.native:
        settings["native"] = True
    os.environ[CONFIG_VARIABLE] = json.dumps(settings)
    uvicorn.run(
        "lenet.serve:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=HeadTimeoutH11,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        # Each worker imports torch before it answers uvicorn's health pings; on a busy machine that
        # takes longer than uvicorn's default 5 s, after which it would kill and restart the worker.
        timeout_worker_healthcheck=120,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
