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
ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    503: "busy",
}


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


async def image_error(request: Request, error: Exception) -> JSONResponse:
    return error_response(*error_status(error), str(error))


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(400, "bad_request", validation_detail(error))


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    status, detail = error.status_code, str(error.detail)
    if status == 400 and detail.startswith("Too many files"):  # Starlette's multipart file limit
        max_batch = request.app.state.settings.max_batch
        status, detail = 413, f"too many images in one request: send at most {max_batch} (one to /predict)."
    elif status == 400 and isinstance(error.__cause__, (RecursionError, ValueError)):  # json.loads gave up
        why = "it is nested too deeply" if isinstance(error.__cause__, RecursionError) else str(error.__cause__).split(";")[0]
        detail = f"the JSON body cannot be read ({why}): {HOW_TO_SEND}."
    code = ERROR_CODES.get(status) or HTTPStatus(status).phrase.lower().replace(" ", "_")
    return error_response(status, code, detail, error.headers)


def add_error_handlers(app: FastAPI) -> None:
    from lenet.preprocess import ImageError  # imports torch: see lenet.serve's docstring

    app.add_exception_handler(ImageError, image_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
