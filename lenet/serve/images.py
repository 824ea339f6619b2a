"""Images -> answers: base64 decoding, the pixel count read from image headers, and the prediction of
a request's images in one batch (through lenet.preprocess.prepare_image, the path lenet-predict takes)."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from fastapi import HTTPException

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
