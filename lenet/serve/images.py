"""Images -> answers: base64 decoding, the pixel count read from image headers, the decode budget,
and the prediction of a request's images in one batch (through lenet.preprocess.prepare_image, the
path lenet-predict takes)."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException
from starlette.datastructures import State

from lenet.serve.schemas import PredictionOut


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


Result = TypeVar("Result")


async def decoded(state: State, items: list[bytes] | list[str], work: Callable[[list[bytes]], Result]) -> Result:
    """Uploads or base64 texts -> `work(image bytes)`, run in the thread pool once the decode budget
    (state.budget) has room for the images' pixels. Only waiting for the budget happens on the event
    loop; decoding base64 and reading image headers run in the thread pool too, except the header of
    a single upload: tens of microseconds, where a trip through the pool costs ~0.2 ms."""
    settings = state.settings
    limit = settings.request_pixel_limit
    if len(items) == 1 and isinstance(items[0], bytes):
        images, pixels = read_images(items, settings.max_pixels, limit)
    else:
        images, pixels = await anyio.to_thread.run_sync(read_images, items, settings.max_pixels, limit, limiter=state.cpu)
    if pixels > limit:
        raise HTTPException(
            413,
            f"the images in this request hold over {limit:,} pixels, the limit per request ({pixels:,} in the "
            "first of them): send fewer or smaller images (a digit needs only a few hundred pixels a side).",
        )
    async with state.budget.reserve(pixels):
        return await anyio.to_thread.run_sync(work, images, limiter=state.cpu)


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


def pixels(image: Any) -> Any:
    """(1, 28, 28) tensor in [0, 1] -> (28, 28) uint8 array: the prepared image as it is shown and kept."""
    return (image[0].numpy() * 255).round().astype("uint8")


def preview_png(image: Any) -> str:
    """(1, 28, 28) tensor in [0, 1] -> base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels(image)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def prepare_and_predict(
    model: Any, images: list[bytes], max_upload_bytes: int, max_pixels: int, unsure_below: float
) -> list[tuple[Any, Any] | Exception]:
    """Each image -> (its prepared (1, 28, 28) tensor, lenet.inference's Prediction), or its ImageError;
    in a worker thread (CPU-bound), the good images predicted in one batch."""
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
    return [image if isinstance(image, ImageError) else (image, next(predictions)) for image in prepared]


def predict_images(
    model: Any, images: list[bytes], max_upload_bytes: int, max_pixels: int, unsure_below: float, preview: bool,
    remember: Callable[[Any, Any], str] | None = None,
) -> list[PredictionOut | Exception]:
    """The answers for POST /predict; `remember(prepared, prediction)`, when given, names each answer
    with an id (for POST /feedback: lenet.serve.feedback)."""
    return [
        result if isinstance(result, Exception)
        else PredictionOut(
            **vars(result[1]),
            id=remember(*result) if remember else None,
            preprocessed_png=preview_png(result[0]) if preview else None,
        )
        for result in prepare_and_predict(model, images, max_upload_bytes, max_pixels, unsure_below)
    ]  # fmt: skip
