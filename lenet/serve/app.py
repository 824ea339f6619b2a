"""The FastAPI app: POST /predict, /predict/batch and /feedback (each a JSON route and a multipart
route on one path), GET /healthz, the drawing page and /docs. `create_app` puts it together; the
routes are plain functions that read the app's settings, model and limits from `request.app.state`."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, State
from starlette.routing import Match
from starlette.types import Scope

from lenet.serve.errors import add_error_handlers, error_status, how_to_send
from lenet.serve.feedback import RecentPredictions, collecting, feedback_form, feedback_json, model_id
from lenet.serve.images import decoded, predict_images
from lenet.serve.limits import (
    BODY_TIMEOUT_S, DECODE_BUDGET_PIXELS, MAX_BATCH, MAX_REQUEST_PIXELS, MAX_UPLOAD_BYTES, BodyLimits, DecodeBudget,
    body_limit,
)
from lenet.serve.schemas import (
    ERROR_RESPONSES, FEEDBACK_RESPONSES, BatchIn, BatchOut, ErrorOut, FeedbackOut, HealthOut, ImageIn, PredictionOut, Preview,
)

STATIC = Path(__file__).resolve().parents[1] / "static"  # lenet/static: the drawing page


@dataclass(frozen=True)
class Settings:
    """create_app's arguments with their defaults filled in (app.state.settings)."""

    paths: list[str | Path]
    max_upload_bytes: int
    max_pixels: int
    max_batch: int
    unsure_below: float
    body_timeout_s: float
    decode_budget_pixels: int
    device: str
    native: bool
    collect: str | None  # the corrections database (lenet.corrections), or None: POST /feedback is off
    collect_max_rows: int
    collect_max_bytes: int

    @property
    def request_pixel_limit(self) -> int:
        return min(MAX_REQUEST_PIXELS, self.max_pixels)


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
    collect: str | Path | None = None,
    collect_max_rows: int | None = None,
    collect_max_bytes: int | None = None,
) -> FastAPI:
    """The API and page for one checkpoint or an ensemble of several (run directories or .ckpt files),
    loaded when the app starts; `collect` names the corrections database that turns POST /feedback on."""
    from lenet.corrections import MAX_BYTES, MAX_ROWS
    from lenet.inference import UNSURE_BELOW  # imports torch: see lenet.serve's docstring
    from lenet.preprocess import MAX_PIXELS

    settings = Settings(
        paths=[ckpts] if isinstance(ckpts, (str, Path)) else list(ckpts),
        max_upload_bytes=max_upload_bytes,
        max_pixels=MAX_PIXELS if max_pixels is None else max_pixels,
        max_batch=max_batch,
        unsure_below=UNSURE_BELOW if unsure_below is None else unsure_below,
        body_timeout_s=body_timeout_s,
        decode_budget_pixels=decode_budget_pixels,
        device=device,
        native=native,
        collect=None if collect is None else str(collect),
        collect_max_rows=MAX_ROWS if collect_max_rows is None else collect_max_rows,
        collect_max_bytes=MAX_BYTES if collect_max_bytes is None else collect_max_bytes,
    )
    # Swagger UI's script and styles come from the swagger-ui-bundle package, not a CDN; ReDoc has
    # no such package, so /redoc is off (the schema itself is at /openapi.json).
    app = FastAPI(
        title="lenet",
        summary="Handwritten digit recognition with LeNet-5 on MNIST",
        lifespan=load_models,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimits, max_bytes=body_limit(max_upload_bytes), timeout_s=body_timeout_s)
    add_error_handlers(app)
    add_predict_routes(app, max_batch)
    add_feedback_routes(app)
    app.router.add_api_route("/healthz", healthz, methods=["GET"])
    app.router.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    add_docs(app)
    return app


@asynccontextmanager
async def load_models(app: FastAPI):
    """The app's lifespan: the model(s), a limiter for CPU work, the decode budget and, with collection
    on, the corrections database and the recent answers, made at start-up."""
    from lenet.corrections import CorrectionStore
    from lenet.inference import load_ensemble

    settings: Settings = app.state.settings
    # Read-only from here on: safe to share across threads (ONNX Runtime and the C kernel: 1 thread a request).
    app.state.model = load_ensemble(settings.paths, settings.device, cpu_threads=1, native=settings.native)
    # CPU work runs on one thread per core: more would only queue for the cores and the GIL, and
    # the event loop, which answers /healthz, would wait behind them all.
    app.state.cpu = anyio.CapacityLimiter(os.cpu_count() or 1)
    app.state.budget = DecodeBudget(max(settings.decode_budget_pixels, settings.request_pixel_limit))
    collecting = settings.collect is not None
    app.state.corrections = (
        CorrectionStore(settings.collect, settings.collect_max_rows, settings.collect_max_bytes) if collecting else None
    )
    app.state.recent = RecentPredictions() if collecting else None
    yield


# ----------------------------------------------------------------------------- predictions


def add_predict_routes(app: FastAPI, max_batch: int) -> None:
    """Each endpoint as a typed JSON route, registered first (JsonBodyRoute lets only JSON requests
    reach it), and a typed multipart route for everything else: FastAPI reads one body type per route."""
    one = "Predict the digit in one image (PNG, JPEG, BMP, GIF, WebP or TIFF)."
    many = f"Predict up to {max_batch} images; an image that fails carries its own error."
    docs: dict[str, Any] = {"methods": ["POST"], "response_model_exclude_none": True, "responses": ERROR_RESPONSES}
    add = app.router.add_api_route
    add("/predict", predict_json, description=one, route_class_override=JsonBodyRoute, **docs)
    add("/predict/batch", predict_batch_json, description=many, route_class_override=JsonBodyRoute, **docs)
    add("/predict", predict, description=one, form_limits={"max_files": 1, "max_fields": 8}, **docs)
    add("/predict/batch", predict_batch, description=many, form_limits={"max_files": max_batch, "max_fields": 8}, **docs)


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
        raise HTTPException(415, f"unsupported content type {named}: {how_to_send(request.url.path)}.")


async def predict_json(request: Request, body: ImageIn, preview: Preview = False) -> PredictionOut:
    return await answer_one(request.app.state, body.image, preview)


async def predict_batch_json(request: Request, body: BatchIn, preview: Preview = False) -> BatchOut:
    max_batch = request.app.state.settings.max_batch
    if len(body.images) > max_batch:  # before decoding any of them
        raise HTTPException(413, f"{len(body.images)} images in one request, over the limit of {max_batch}: split the batch.")
    return batch_answer(await answer(request.app.state, body.images, preview))


async def predict(
    request: Request,
    file: Annotated[UploadFile, File(description="the image file")],
    preview: Preview = False,
    _: None = Depends(require_multipart),
) -> PredictionOut:
    return await answer_one(request.app.state, await file.read(), preview)


async def predict_batch(
    request: Request,
    files: Annotated[list[UploadFile], File(description="the image files, in the field `files` repeated")],
    preview: Preview = False,
    _: None = Depends(require_multipart),
) -> BatchOut:
    return batch_answer(await answer(request.app.state, [await upload.read() for upload in files], preview))


async def answer(state: State, items: list[bytes] | list[str], preview: bool) -> list[PredictionOut | Exception]:
    """Uploads or base64 texts -> one answer each (a PredictionOut, or the image's ImageError); with
    collection on, each answer gets an id that POST /feedback can name."""
    settings: Settings = state.settings
    remember = state.recent.remember if state.recent is not None else None
    work = partial(
        predict_images, state.model, max_upload_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels,
        unsure_below=settings.unsure_below, preview=preview, remember=remember,
    )  # fmt: skip
    return await decoded(state, items, work)


async def answer_one(state: State, data: bytes | str, preview: bool) -> PredictionOut:
    [result] = await answer(state, [data], preview)
    if isinstance(result, Exception):
        raise result  # an ImageError: answered by lenet.serve.errors.image_error
    return result


def batch_answer(results: list[PredictionOut | Exception]) -> BatchOut:
    return BatchOut(
        predictions=[ErrorOut(error=error_status(r)[1], detail=str(r)) if isinstance(r, Exception) else r for r in results]
    )


def add_feedback_routes(app: FastAPI) -> None:
    """POST /feedback (lenet.serve.feedback), a JSON route and a multipart route like /predict's; both
    answer 404 before reading anything else when collection is off."""
    docs: dict[str, Any] = {"methods": ["POST"], "response_model": FeedbackOut, "responses": FEEDBACK_RESPONSES}
    docs["description"] = "Keep the right label for an image the model misread (lenet-serve --collect)."
    add = app.router.add_api_route
    add("/feedback", feedback_json, route_class_override=JsonBodyRoute, dependencies=[Depends(collecting)], **docs)
    add("/feedback", feedback_form, dependencies=[Depends(collecting), Depends(require_multipart)],
        form_limits={"max_files": 1, "max_fields": 8}, **docs)  # fmt: skip


# ----------------------------------------------------------------------------- health, page and docs


async def healthz(request: Request) -> HealthOut:  # async: answered on the event loop, even when every worker thread is busy
    state = request.app.state
    members = getattr(state.model, "members", [state.model])
    return HealthOut(
        status="ok",
        checkpoint=model_id(state),
        checkpoints=[str(member.checkpoint_path) for member in members],
        max_upload_bytes=state.settings.max_upload_bytes,
        unsure_below=state.settings.unsure_below,
        collecting=state.corrections is not None,
    )


def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


def add_docs(app: FastAPI) -> None:
    """/docs with Swagger UI from the swagger-ui-bundle package, and an OpenAPI schema that lists both
    body types of each endpoint."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.router.add_api_route("/docs", swagger_page, methods=["GET"], include_in_schema=False)
    app.openapi = partial(openapi_schema, app)  # type: ignore[method-assign]


def swagger_page(request: Request):
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents one route per path and method (the last), so the JSON routes are documented
    apart and their request bodies merged into the multipart routes' operations."""
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
