"""Non-digits get "no digit found", not a guess: noise, a 2x1 image, blank paper under uneven light.

Checked at every door: `prepare_image`, `lenet-predict` and the API (422 `no_digit`).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lenet.predict import main as predict_main
from lenet.preprocess import NoDigitError, prepare_image
from lenet.serve import create_app


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _page(light: np.ndarray, seed: int = 0) -> np.ndarray:
    """A blank white page under `light` (0..1 per pixel), with a camera's noise."""
    noise = np.random.default_rng(seed).normal(0, 3, light.shape)
    return np.clip(235 * light + noise, 0, 255).astype(np.uint8)


def non_digits() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:480, 0:640]
    radius = np.hypot(rows - 240, cols - 320) / np.hypot(240, 320)  # 0 at the centre, 1 in the corners
    return {
        "uniform noise": _png((rng.random((280, 280)) * 255).astype(np.uint8)),
        "small colour noise": _png((rng.random((28, 28, 3)) * 255).astype(np.uint8)),
        "2x1 image": _png(np.array([[0, 255]], np.uint8)),
        "lighting gradient": _png(_page(np.broadcast_to(np.linspace(0.55, 1.0, 640), (480, 640)))),
        "30% vignetting": _png(_page(1 - 0.30 * radius**2)),
        "45% vignetting": _png(_page(1 - 0.45 * radius**1.5)),
    }


NON_DIGITS = non_digits()


@pytest.mark.parametrize("name", NON_DIGITS)
def test_prepare_image_refuses(name):
    with pytest.raises(NoDigitError, match="no digit found"):
        prepare_image(NON_DIGITS[name])


def test_a_digit_on_the_same_uneven_pages_is_still_read(synthetic_test):
    """The refusals must not cost real digits: an MNIST digit drawn onto the vignetted page is prepared."""
    digit = np.asarray(Image.fromarray(synthetic_test[0][0, 0].numpy()).resize((200, 200)), np.float32) / 255
    page = Image.open(io.BytesIO(NON_DIGITS["45% vignetting"])).convert("L")
    pixels = np.asarray(page, np.float32)
    pixels[140:340, 220:420] *= 1 - 0.8 * digit
    prepared = prepare_image(Image.fromarray(pixels.astype(np.uint8)))
    assert prepared.shape == (1, 28, 28) and float(prepared.max()) == pytest.approx(1.0)


def test_lenet_predict_says_no_digit(synthetic_run, tmp_path, capsys):
    for i, data in enumerate(NON_DIGITS.values()):
        (tmp_path / f"{i}.png").write_bytes(data)
    assert predict_main([str(synthetic_run), str(tmp_path)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert sum("no digit found" in line for line in errors) == len(NON_DIGITS)


def test_api_answers_422_no_digit(synthetic_run):
    with TestClient(create_app(synthetic_run)) as client:
        for name, data in NON_DIGITS.items():
            response = client.post("/predict", files={"file": (f"{name}.png", data, "image/png")})
            assert response.status_code == 422, name
            assert response.json()["error"] == "no_digit"
