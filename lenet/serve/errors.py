"""Every error answers a JSON `{"error": short code, "detail": what was wrong and what to do}`, never a 500."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

HOW_TO_SEND = (
    'send multipart/form-data with the image in the field "file" (batch: "files"), or application/json '
    '{"image": "<base64>"} (batch: {"images": [...]})'
)
HOW_TO_SEND_FEEDBACK = (
    'send multipart/form-data with the image in the field "file" (or the field "prediction_id") and the field '
    '"label", or application/json {"image": "<base64>" or "prediction_id": "...", "label": 0-9 or "not_a_digit"}'
)
ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    503: "busy",
}


BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 when json.loads fails (not for bad base64)


def how_to_send(path: str) -> str:
    """How to send a request to the route at `path`, for the errors that say it."""
    return HOW_TO_SEND_FEEDBACK if path == "/feedback" else HOW_TO_SEND


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def error_status(error: Exception) -> tuple[int, str]:
    """An image's error (lenet.preprocess.ImageError) -> its HTTP status and code."""
    from lenet.preprocess import ImageTooLargeError, NoDigitError

    if isinstance(error, ImageTooLargeError):
        return 413, "image_too_large"
    if isinstance(error, NoDigitError):
        return 422, "no_digit"
    return 400, "bad_image"


def validation_detail(error: RequestValidationError, how: str) -> str:
    """Pydantic's first complaint as one line: where, what, and `how` to send a request."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query")) or "the body"
    if first["type"] == "missing" and tuple(first["loc"]) == ("body",):
        return f"the request body is empty: {how}."
    if first["type"] == "json_invalid":
        return f"the body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])}): {how}."
    if "Expected UploadFile" in first["msg"]:
        return f"the form field {where!r} must be a file upload (curl -F {where}=@digit.png), not text."
    if first["loc"][0] == "query":
        return f"query parameter {where}: {first['msg']}."
    return f"{where}: {first['msg']}: {how}."


async def image_error(request: Request, error: Exception) -> JSONResponse:
    return error_response(*error_status(error), str(error))


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(400, "bad_request", validation_detail(error, how_to_send(request.url.path)))


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    status, detail = error.status_code, str(error.detail)
    if status == 400 and detail.startswith("Too many files"):  # Starlette's multipart file limit
        max_batch = request.app.state.settings.max_batch
        status, detail = 413, f"too many images in one request: send at most {max_batch} (one to /predict)."
    elif detail == BODY_PARSE_ERROR and isinstance(error.__cause__, (RecursionError, ValueError)):  # json.loads gave up
        why = "it is nested too deeply" if isinstance(error.__cause__, RecursionError) else str(error.__cause__).split(";")[0]
        detail = f"the JSON body cannot be read ({why}): {how_to_send(request.url.path)}."
    code = ERROR_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    return error_response(status, code, detail, error.headers)


async def corrections_error(request: Request, error: Exception) -> JSONResponse:
    """The corrections database full (507), busy (503, retry) or unusable (503): its one line as the detail."""
    from lenet.corrections import CorrectionsBusy, CorrectionsFull

    if isinstance(error, CorrectionsFull):
        return error_response(507, "corrections_full", str(error))
    if isinstance(error, CorrectionsBusy):
        return error_response(503, "busy", str(error), {"Retry-After": "1"})
    return error_response(503, "corrections_unavailable", str(error))


def add_error_handlers(app: FastAPI) -> None:
    from lenet.corrections import CorrectionsError
    from lenet.preprocess import ImageError  # imports torch: see lenet.serve's docstring

    app.add_exception_handler(ImageError, image_error)
    app.add_exception_handler(CorrectionsError, corrections_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
