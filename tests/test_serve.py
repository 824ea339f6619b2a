"""REST API of lenet-serve, through an HTTP client against the real app and a really trained model."""

from __future__ import annotations

import base64
import io
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lenet.inference import CheckpointError
from lenet.serve import create_app

MAX_UPLOAD = 300_000  # a small limit, so the over-size case stays cheap


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def user_digit(synthetic_test, index: int) -> bytes:
    """A test digit as dark ink on a white 200x300 PNG, small and off-centre."""
    digit = Image.fromarray(255 - synthetic_test[0][index, 0].numpy()).resize((84, 84), Image.Resampling.BILINEAR)
    paper = Image.new("L", (300, 200), 255)
    paper.paste(digit, (190, 20))
    return png_of(paper)


@pytest.fixture(scope="module")
def client(synthetic_run):
    with TestClient(create_app(synthetic_run, max_upload_bytes=MAX_UPLOAD)) as client:
        yield client


@pytest.fixture(scope="module")
def digits(synthetic_test) -> list[tuple[bytes, int]]:
    return [(user_digit(synthetic_test, i), int(synthetic_test[1][i])) for i in range(10)]


def assert_prediction(body: dict, digit: int, preview: bool = False) -> None:
    assert body["digit"] == digit
    assert len(body["probs"]) == 10 and sum(body["probs"]) == pytest.approx(1, abs=1e-4)
    assert body["confidence"] == pytest.approx(max(body["probs"]), abs=1e-5)
    runner_up = sorted(range(10), key=lambda d: -body["probs"][d])[1]
    assert body["runner_up"] == runner_up and body["runner_up_confidence"] == pytest.approx(body["probs"][runner_up], abs=1e-5)
    assert body["unsure"] == (body["confidence"] < 0.5)
    # The 28x28 view is encoded only when asked for.
    assert ("preprocessed_png" in body) == preview
    if preview:
        image = Image.open(io.BytesIO(base64.b64decode(body["preprocessed_png"])))
        assert image.size == (28, 28) and image.mode == "L"


# ----------------------------------------------------------------------------- good requests


def test_multipart_upload(client, digits):
    correct = 0
    for data, label in digits:
        response = client.post("/predict", files={"file": ("digit.png", data, "image/png")})
        assert response.status_code == 200, response.text
        correct += response.json()["digit"] == label
    assert correct >= 9  # a one-epoch model, on user-like images
    assert_prediction(response.json(), response.json()["digit"])
    data, label = digits[0]
    response = client.post("/predict?preview=true", files={"file": ("digit.png", data, "image/png")})
    assert_prediction(response.json(), label, preview=True)


def test_json_base64_and_data_url(client, digits):
    data, label = digits[0]
    encoded = base64.b64encode(data).decode()
    wrapped = base64.encodebytes(data).decode()  # 76 columns, as the `base64` tool prints it
    url_safe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "\n" in wrapped and ("-" in url_safe or "_" in url_safe)
    for image in (encoded, f"data:image/png;base64,{encoded}", wrapped, url_safe):
        response = client.post("/predict", json={"image": image})
        assert response.status_code == 200, response.text
        assert_prediction(response.json(), label)
    response = client.post("/predict?preview=true", json={"image": encoded})
    assert_prediction(response.json(), label, preview=True)


def test_batch_multipart_and_json_keep_order_and_per_image_errors(client, digits):
    files = [("files", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(digits[:3])]
    files.insert(1, ("files", ("broken.png", b"not an image", "image/png")))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 4
    assert predictions[1]["error"] == "bad_image"
    assert [p.get("digit") for p in predictions[:1] + predictions[2:]] == [label for _, label in digits[:3]]

    images = [base64.b64encode(data).decode() for data, _ in digits[3:6]]
    response = client.post("/predict/batch", json={"images": images})
    assert [p["digit"] for p in response.json()["predictions"]] == [label for _, label in digits[3:6]]


def test_health_page_and_docs(client, synthetic_run):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and str(synthetic_run) in health["checkpoint"]
    assert health["checkpoints"] == [health["checkpoint"]] and health["unsure_below"] == 0.5
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    assert client.get("/static/app.js").status_code == 200
    # FastAPI writes the schema from the typed parameters: both body types of each endpoint.
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/healthz"} <= set(schema["paths"])
    for path, field in (("/predict", "image"), ("/predict/batch", "images")):
        operation = schema["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
        assert {"200", "400", "413", "415", "422", "503"} <= set(operation["responses"])
        assert "preview" in [parameter["name"] for parameter in operation["parameters"]]
    assert "image" in schema["components"]["schemas"]["ImageIn"]["properties"]
    # Swagger UI without internet: its script and styles are served here, not from a CDN.
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


# ----------------------------------------------------------------------------- bad requests


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 30,000 x 30,000 pixels."""
    png = bytearray(png_of(Image.new("L", (8, 8))))
    header = b"IHDR" + (30_000).to_bytes(4, "big") * 2 + bytes(png[24:29])
    png[12:29], png[29:33] = header, zlib.crc32(header).to_bytes(4, "big")
    return bytes(png)


def bad_requests(digit_png: bytes) -> dict[str, tuple[dict, int, str, str]]:
    """name -> (request arguments, status, error code, words the message must contain)."""
    as_file = lambda data: {"files": {"file": ("x.png", data, "image/png")}}  # noqa: E731
    # Noise compresses badly: an image over the limit, and a body past the limit plus base64's third.
    big = png_of(Image.effect_noise((600, 600), 100).convert("L"))
    huge = png_of(Image.effect_noise((800, 800), 100).convert("L"))
    assert MAX_UPLOAD < len(big) < MAX_UPLOAD * 4 // 3 < len(huge)
    return {
        "empty body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "bad_request", "empty"),
        "empty file": (as_file(b""), 400, "bad_image", "empty"),
        "non-image bytes": (as_file(b"%PDF-1.4 definitely not a picture"), 400, "bad_image", "not an image"),
        "truncated png": (as_file(digit_png[: len(digit_png) // 2]), 400, "bad_image", "truncated"),
        "over the size limit": (as_file(big), 413, "image_too_large", "over the server's limit"),
        "over the limit in JSON": ({"json": {"image": base64.b64encode(big).decode()}}, 413, "image_too_large", "limit"),
        "body over the limit": ({"json": {"image": base64.b64encode(huge).decode()}}, 413, "request_too_large", "limit"),
        "decompression bomb": (as_file(bomb_png()), 413, "image_too_large", "pixels"),
        "blank image": (as_file(png_of(Image.new("RGB", (200, 200), "white"))), 422, "no_digit", "no digit found"),
        "wrong field name": ({"files": {"image": ("x.png", digit_png, "image/png")}}, 400, "bad_request", "file: Field required"),
        "two files": ({"files": [("file", ("x.png", digit_png, "image/png"))] * 2}, 413, "request_too_large", "too many images"),
        "text instead of a file": ({"files": {"file": (None, b"hello")}}, 400, "bad_request", "file upload"),
        "form without multipart": ({"data": {"file": "hello"}}, 415, "unsupported_media_type", "multipart"),
        "wrong content type": ({"content": digit_png, "headers": {"content-type": "image/png"}}, 415, "unsupported_media_type", "multipart"),
        "no content type": ({"content": digit_png}, 415, "unsupported_media_type", "multipart"),
        "invalid JSON": ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 400, "bad_request", "not valid JSON"),
        "JSON without image": ({"json": {"picture": "abc"}}, 400, "bad_request", "image: Field required"),
        "image not a string": ({"json": {"image": 7}}, 400, "bad_request", "image: Input should be a valid string"),
        "bad base64": ({"json": {"image": "***"}}, 400, "bad_request", "base64"),
        "bad preview flag": ({"json": {"image": "QUJD"}, "params": {"preview": "perhaps"}}, 400, "bad_request", "preview"),
    }


@pytest.mark.parametrize("case", list(bad_requests(b"x" * 10)))
def test_bad_input_gets_a_clear_4xx_and_the_server_stays_up(client, digits, case):
    arguments, status, code, words = bad_requests(digits[0][0])[case]
    response = client.post("/predict", **arguments)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and words in body["detail"]
    healthy = client.post("/predict", files={"file": ("ok.png", digits[0][0], "image/png")})
    assert healthy.status_code == 200 and healthy.json()["digit"] == digits[0][1]


def test_batch_limits(client, digits):
    response = client.post("/predict/batch", json={"images": []})
    assert response.status_code == 400
    response = client.post("/predict/batch", files={"file": ("x.png", digits[0][0], "image/png")})
    assert response.status_code == 400 and "files: Field required" in response.json()["detail"]
    # Too many images is 413 whichever way they come.
    tiny = png_of(Image.new("L", (1, 1)))
    response = client.post("/predict/batch", json={"images": [base64.b64encode(tiny).decode()] * 65})
    assert response.status_code == 413 and "65 images" in response.json()["detail"]
    response = client.post("/predict/batch", files=[("files", (f"{i}.png", tiny, "image/png")) for i in range(65)])
    assert response.status_code == 413 and "at most 64" in response.json()["detail"]


def test_ensemble_and_unsure_threshold(synthetic_run, digits):
    data, label = digits[0]
    with TestClient(create_app([synthetic_run, synthetic_run], unsure_below=1.0)) as ensemble:
        health = ensemble.get("/healthz").json()
        assert len(health["checkpoints"]) == 2 and health["unsure_below"] == 1.0
        body = ensemble.post("/predict", files={"file": ("x.png", data, "image/png")}).json()
    assert body["digit"] == label and body["unsure"]  # every answer is below a threshold of 1


def test_missing_checkpoint_fails_at_startup(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        with TestClient(create_app(tmp_path / "nothing.ckpt")):
            pass
