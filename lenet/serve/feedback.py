"""POST /feedback: the right label for an image the model misread, kept in the corrections database
(lenet.corrections) when lenet-serve runs with --collect FILE, and 404 when it does not.

The image comes as it comes to /predict (multipart `file` or JSON base64 `image`, read and prepared
by the same code under the same limits) and the model's answer for it is worked out again; or a
request names the `prediction_id` of an answer instead. With collection on, every /predict answer
carries an id: the hash of its prepared image, kept with the answer in a bounded map of this worker
process's last RECENT_ANSWERS answers, in memory only. An id not found there (an older answer, one
given by another process of `--workers N`, or before a restart) gets 404 saying to send the image,
which is what the page does. A correction sent by id keeps no original upload.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import File, Form, HTTPException, Request, UploadFile
from starlette.datastructures import State

from lenet.corrections import NOT_A_DIGIT, NOT_A_DIGIT_NAME, Correction, check_writer, parse_label
from lenet.serve.errors import HOW_TO_SEND_FEEDBACK
from lenet.serve.images import decoded, pixels, prepare_and_predict
from lenet.serve.schemas import FeedbackIn, FeedbackOut

RECENT_ANSWERS = 2048  # per worker process: about 2 MB of prepared images and answers


class RecentPredictions:
    """This process's last `size` answers by id: (prepared image bytes, digit, confidence). Shared by
    the threads that predict, hence the lock."""

    def __init__(self, size: int = RECENT_ANSWERS) -> None:
        self.size = size
        self.answers: OrderedDict[str, tuple[bytes, int, float]] = OrderedDict()
        self.lock = threading.Lock()

    def remember(self, prepared: Any, prediction: Any) -> str:
        """Keep an answer ((1, 28, 28) tensor, lenet.inference's Prediction): its id."""
        image = pixels(prepared).tobytes()
        key = hashlib.sha256(image).hexdigest()[:32]  # the same drawing gets the same id
        with self.lock:
            self.answers[key] = (image, prediction.digit, prediction.confidence)
            self.answers.move_to_end(key)
            if len(self.answers) > self.size:
                self.answers.popitem(last=False)
        return key

    def get(self, key: str) -> tuple[bytes, int, float] | None:
        with self.lock:
            return self.answers.get(key)


def model_id(state: State) -> str:
    """The model served, as /healthz names it and as corrections record it."""
    return str(state.model.checkpoint_path)


async def collecting(request: Request) -> None:
    """Runs before the body is checked: with collection off, every request gets the same 404."""
    if request.app.state.corrections is None:
        raise HTTPException(
            404, "collection is off on this server: start it with lenet-serve --collect corrections.db to keep corrections."
        )


async def feedback_json(request: Request, body: FeedbackIn) -> FeedbackOut:
    return await keep(request.app.state, body.image, body.prediction_id, body.label, body.writer)


async def feedback_form(
    request: Request,
    label: Annotated[str, Form(description='the right answer: 0 to 9, or "not_a_digit"')],
    file: Annotated[UploadFile | None, File(description="the image file; or else prediction_id")] = None,
    prediction_id: Annotated[str | None, Form(description="the id of the answer this corrects")] = None,
    writer: Annotated[str | None, Form(description="an optional tag for the writer, up to 64 characters")] = None,
) -> FeedbackOut:
    return await keep(request.app.state, None if file is None else await file.read(), prediction_id, label, writer)


async def keep(state: State, image: bytes | str | None, prediction_id: str | None, label: int | str, writer: str | None) -> FeedbackOut:
    """Check the label and tag, find the prepared image and the model's answer, and store the correction."""
    try:
        label, writer = parse_label(label), check_writer(writer)
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    if (image is None) == (prediction_id is None):
        given = "both an image and a prediction_id" if image is not None else "no image and no prediction_id"
        raise HTTPException(400, f"{given}: {HOW_TO_SEND_FEEDBACK}.")
    upload = None
    if prediction_id is not None:
        known = state.recent.get(prediction_id)
        if known is None:
            raise HTTPException(
                404,
                f"prediction {prediction_id!r} is not known to this server process (it keeps its last {state.recent.size} "
                "answers; another worker process may have given it): send the image itself instead.",
            )
        prepared, predicted, confidence = known
    else:
        upload, result = await decoded(state, [image], partial(prepared_answer, state))
        if isinstance(result, Exception):
            raise result  # an ImageError: answered by lenet.serve.errors.image_error
        prepared, predicted, confidence = pixels(result[0]).tobytes(), result[1].digit, result[1].confidence
    correction = Correction(label, prepared, predicted, confidence, model_id(state), writer, upload)
    row = await anyio.to_thread.run_sync(state.corrections.add, correction)  # waits on the disk: not a CPU slot
    return FeedbackOut(
        id=row.id, label=NOT_A_DIGIT_NAME if label == NOT_A_DIGIT else label, predicted=predicted, confidence=confidence,
        upload_kept=row.upload is not None,
    )  # fmt: skip


def prepared_answer(state: State, images: list[bytes]) -> tuple[bytes, Any]:
    """One image's bytes and (its prepared tensor, Prediction) or its ImageError, in a worker thread."""
    settings = state.settings
    [result] = prepare_and_predict(state.model, images, settings.max_upload_bytes, settings.max_pixels, settings.unsure_below)
    return images[0], result
