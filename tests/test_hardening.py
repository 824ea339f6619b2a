"""The hardening issue's probes, each as a test: what a careless user or an attacker sends to
lenet-serve, lenet-predict and lenet-export gets one clear 4xx or one clear line, never a 500 or a
traceback, and every request's memory and time are bounded."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from helpers import first_of
from lenet import export, predict, serve
from lenet.serve import DecodeBudget, HeadTimeoutH11, create_app

REPO = Path(__file__).resolve().parents[1]


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def float_tiff(value: float) -> bytes:
    """A float TIFF with a drawn stroke and one NaN or infinite pixel."""
    pixels = np.zeros((64, 64), np.float32)
    pixels[10:50, 28:34] = 1.0
    pixels[0, 0] = value
    buffer = io.BytesIO()
    Image.fromarray(pixels, "F").save(buffer, format="TIFF")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (never decoded: the header is enough)."""
    png = bytearray(png_of(Image.new("L", (8, 8))))
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(png[24:29])
    png[12:29], png[29:33] = header, zlib.crc32(header).to_bytes(4, "big")
    return bytes(png)


@pytest.fixture(scope="module")
def client(synthetic_run):
    with TestClient(create_app(synthetic_run)) as client:
        yield client


@pytest.fixture(scope="module")
def digit_png(synthetic_test) -> bytes:
    """A seven, dark on white paper."""
    digit = Image.fromarray(255 - synthetic_test[0][first_of(synthetic_test[1], 7), 0].numpy()).resize((84, 84))
    paper = Image.new("L", (200, 160), 255)
    paper.paste(digit, (60, 40))
    return png_of(paper)


# ----------------------------------------------------------------------------- no 500s


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_tiff_is_a_bad_image(client, digit_png, value):
    response = client.post("/predict", files={"file": ("x.tiff", float_tiff(value), "image/tiff")})
    assert response.status_code == 400 and response.json()["error"] == "bad_image"
    assert "NaN or infinite" in response.json()["detail"]
    # In a batch only that image fails; the others are answered.
    files = [("files", ("x.tiff", float_tiff(value), "image/tiff")), ("files", ("ok.png", digit_png, "image/png"))]
    answers = client.post("/predict/batch", files=files).json()["predictions"]
    assert answers[0]["error"] == "bad_image" and answers[1]["digit"] == 7


@pytest.mark.parametrize(
    "body, words",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"image": "QUJD", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"image": ' + b"7" * 100_000 + b"}", "4300 digits"),
        (b'{"image": 1e999999}', "valid string"),
        (b'{"image": "\xff\xfe"}', "cannot be read"),
    ],
    ids=["nested 100,000 deep", "nested beside the image", "100,000-digit number", "huge float", "not UTF-8"],
)
def test_hostile_json_gets_a_json_400(client, body, words):
    for path in ("/predict", "/predict/batch"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"
    assert words in client.post("/predict", content=body, headers={"content-type": "application/json"}).json()["detail"]


# ----------------------------------------------------------------------------- bounded memory and time


def test_pixels_are_capped_per_request_not_only_per_image(client):
    """64 images of 49 MP each: under the per-image limit, 3.1 GP together; refused from the headers."""
    big = png_claiming(7000, 7000)
    response = client.post("/predict/batch", json={"images": [base64.b64encode(big).decode()] * 64})
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"
    assert "over 50,000,000 pixels" in response.json()["detail"]
    response = client.post("/predict/batch", files=[("files", (f"{i}.png", big, "image/png")) for i in range(2)])
    assert response.status_code == 413 and "per request" in response.json()["detail"]


def run_asgi(app, *, headers: list[tuple[bytes, bytes]], chunks: list[bytes], stall: bool) -> tuple[list[dict], int]:
    """Drive an ASGI app with a request whose body comes in `chunks`, then stalls forever if `stall`.
    Returns the messages the app sent and how many times it asked for the body."""
    sent: list[dict] = []
    asked = 0

    async def receive() -> dict:
        nonlocal asked
        asked += 1
        if asked <= len(chunks):
            return {"type": "http.request", "body": chunks[asked - 1], "more_body": stall or asked < len(chunks)}
        await asyncio.Event().wait()  # a client that stopped sending: never set
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers, "query_string": b""}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent, asked


def test_body_limits_answer_413_and_408_and_close_the_connection():
    # The real app, its lifespan (which loads the model) not run: no request here gets that far.
    app = create_app("never-loaded.ckpt", max_upload_bytes=3000, body_timeout_s=0.2)
    limit = 3000 * 4 // 3 + 64 * 1024  # the body may carry the image in base64, plus room for the rest
    json_type = (b"content-type", b"application/json")

    def request(declared: int | None, chunks: list[bytes], stall: bool = False) -> tuple[int, dict, list, int]:
        headers = [json_type] + ([(b"content-length", str(declared).encode())] if declared is not None else [])
        sent, asked = run_asgi(app, headers=headers, chunks=chunks, stall=stall)
        return sent[0]["status"], json.loads(sent[1]["body"]), sent[0]["headers"], asked

    # Declared too large: refused before a single byte of the body is read.
    status, body, headers, asked = request(limit + 1, [b"x" * (limit + 1)])
    assert (status, body["error"], asked) == (413, "request_too_large", 0)
    # Chunked, no length declared: refused as soon as the count passes the limit.
    status, body, headers, asked = request(None, [b"x" * 20_000] * 5)
    assert (status, body["error"], asked) == (413, "request_too_large", 4)
    assert (b"connection", b"close") in headers
    # A client that stops sending mid-body is cut off.
    status, body, headers, _ = request(900, [b"x" * 100], stall=True)
    assert (status, body["error"]) == (408, "request_timeout") and (b"connection", b"close") in headers
    # Within both limits the body goes through to the app (which finds no `image` in it).
    status, body, _, _ = request(None, [b'{"picture":', b" 1}"])
    assert (status, body["error"]) == (400, "bad_request") and "image: Field required" in body["detail"]


async def until(condition, timeout_s: float = 5) -> None:
    """Lets the other tasks run until `condition()` holds."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)  # one turn of the event loop, not a wait

    await asyncio.wait_for(poll(), timeout_s)


def test_decode_budget_queues_then_answers_503_with_retry_after():
    async def scenario() -> list[str]:
        budget = DecodeBudget(pixels=100, max_waiting=1, wait_s=0.3)
        outcomes: list[str] = []
        release = asyncio.Event()

        async def request(name: str, pixels: int, hold: bool) -> None:
            try:
                async with budget.reserve(pixels):
                    outcomes.append(f"{name} ran")
                    if hold:
                        await release.wait()
            except Exception as error:  # the HTTPException the app turns into 503
                assert error.status_code == 503 and error.headers["Retry-After"]
                outcomes.append(f"{name} 503")

        first = asyncio.create_task(request("big", 80, hold=True))
        await until(lambda: outcomes == ["big ran"])
        small = asyncio.create_task(request("small", 20, hold=False))  # fits beside it
        waiting = asyncio.create_task(request("waits", 50, hold=False))  # queued, then times out
        await until(lambda: budget.waiting == 1)
        await request("refused", 50, hold=False)  # the queue is full: at once
        await asyncio.gather(small, waiting)
        release.set()
        await first
        await request("after", 100, hold=False)  # everything was given back
        return outcomes

    assert asyncio.run(scenario()) == ["big ran", "small ran", "refused 503", "waits 503", "after ran"]


class QuickHeadTimeout(HeadTimeoutH11):
    head_timeout_s = 0.5


async def answer_ok(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def running_server(protocol: type[HeadTimeoutH11], listening: socket.socket) -> Iterator[int]:
    """A real uvicorn server answering "ok" with `protocol`, on `listening` (bound, not listening yet): its port."""
    server = uvicorn.Server(uvicorn.Config(answer_ok, http=protocol, lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the uvicorn server did not start"
            thread.join(timeout=0.05)  # returns at once if the server thread ends
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listening.close()


def ask_ok(connection: socket.socket) -> bytes:
    connection.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        answer += connection.recv(100)
    return answer


def test_partial_request_heads_are_cut_off_by_the_server():
    """A real uvicorn server with lenet-serve's protocol: a connection that never finishes its head
    is closed; complete requests, one after another on the same connection, are answered."""
    listening = socket.create_server(("127.0.0.1", 0))
    with running_server(QuickHeadTimeout, listening) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            assert stalled.recv(100) == b""  # closed by the server (a timeout here raises)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            assert idle.recv(100) == b""  # nothing sent at all
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            for _ in range(2):
                assert ask_ok(kept).startswith(b"HTTP/1.1 200")


class RecordingNoDelay(HeadTimeoutH11):
    nodelay: list[int] = []

    def connection_made(self, transport):
        super().connection_made(transport)
        self.nodelay.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_connections_on_a_shared_listening_socket_send_without_nagle_delay():
    """uvicorn --workers N serves a socket it made without IPPROTO_TCP, on which asyncio leaves
    Nagle's algorithm on (one client's requests then took 48 ms each); lenet-serve's protocol turns it off."""
    shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn's Config.bind_socket makes it
    shared.bind(("127.0.0.1", 0))
    with running_server(RecordingNoDelay, shared) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        assert ask_ok(client).startswith(b"HTTP/1.1 200")
    assert RecordingNoDelay.nodelay and all(RecordingNoDelay.nodelay)


def test_large_images_are_decoded_within_about_one_full_size_buffer(tmp_path):
    """Peak memory of prepare_image on 7000x7000 images (one process, in order of their cost): a
    JPEG decoded at 1/4 scale, a palette PNG and a transparent RGBA PNG, whose pixels alone take
    49 MB and 196 MB. Before: 376, 378 and 378 MB (a full-size copy for the EXIF rotation, another
    to premultiply alpha or expand the palette)."""
    sources = {
        "jpeg": (Image.new("RGB", (7000, 7000), "white"), "JPEG", 60),
        "palette": (Image.new("P", (7000, 7000), 0), "PNG", 130),
        "rgba": (Image.new("RGBA", (7000, 7000), (0, 0, 0, 0)), "PNG", 290),
    }
    limits = {}
    for name, (image, file_format, limit_mb) in sources.items():
        image.save(tmp_path / name, format=file_format)
        limits[name] = limit_mb
    script = f"""
import json, resource
import lenet.preprocess as p
from lenet.preprocess import NoDigitError
peaks, base = {{}}, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name in {list(sources)!r}:
    data = open({str(tmp_path)!r} + "/" + name, "rb").read()
    try:
        p.prepare_image(data)
    except NoDigitError:
        pass
    peaks[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(peaks))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peaks = json.loads(result.stdout)
    for name, limit in limits.items():
        assert peaks[name] < limit, (name, peaks)


# ----------------------------------------------------------------------------- one line for every user error


def import_check(module: str) -> list[str]:
    script = f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'torchmetrics', 'hydra', 'torch'))))"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return {name.split(".")[0] for name in result.stdout.split()}


def test_prediction_side_imports_no_training_stack():
    assert import_check("lenet.serve") == set()  # not even torch: it loads when the app is created
    assert import_check("lenet.predict, lenet.export") == {"torch"}


def bad_checkpoints(synthetic_run: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (checkpoint, words its one-line error must contain)."""
    good = torch.load(synthetic_run / "checkpoints" / "best.ckpt", weights_only=True)

    def variant(name: str, change) -> Path:
        checkpoint = copy.deepcopy(good)
        change(checkpoint)
        torch.save(checkpoint, folder / f"{name}.ckpt")
        return folder / f"{name}.ckpt"

    torch.save(7, folder / "integer.ckpt")
    (folder / "text.ckpt").write_text("not a checkpoint")
    return {
        "another module": (variant("module", lambda c: c.update(hyper_parameters={"hidden": 64})), "no `net` hyperparameters"),
        "another architecture": (
            variant("arch", lambda c: c["hyper_parameters"].update(net={"_target_": "lenet.models.ModernCNN"})),
            "do not fit",
        ),
        "unknown dataset": (variant("dataset", lambda c: c["datamodule_hyper_parameters"].update(dataset="kmnist")), "kmnist"),
        "bad _target_": (
            variant("target", lambda c: c["hyper_parameters"].update(net={"_target_": "os.system", "command": "true"})),
            "not one of this project's networks",
        ),
        "impossible argument": (
            variant("negative", lambda c: c["hyper_parameters"].update(net={"_target_": "lenet.models.LeNet5", "num_classes": -1})),
            "negative dimension",
        ),
        "an integer saved as checkpoint": (folder / "integer.ckpt", "no state_dict"),
        "a text file": (folder / "text.ckpt", "not a readable checkpoint"),
        "an integer as the path": (Path("7"), "does not exist"),
    }


@pytest.fixture(scope="module")
def broken(synthetic_run, tmp_path_factory):
    return bad_checkpoints(synthetic_run, tmp_path_factory.mktemp("bad_checkpoints"))


CASES = ["another module", "another architecture", "unknown dataset", "bad _target_", "impossible argument",
         "an integer saved as checkpoint", "a text file", "an integer as the path"]


@pytest.mark.parametrize("case", CASES)
def test_bad_checkpoints_give_one_line_in_every_command(broken, case, tmp_path, capsys):
    checkpoint, words = broken[case]
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    commands = {
        "lenet-predict": lambda: predict.main([str(checkpoint), str(image)]),
        "lenet-serve": lambda: serve.main(["--ckpt", str(checkpoint), "--port", "9"]),  # fails before listening
        "lenet-export": lambda: export.main([str(checkpoint), "--onnx", str(tmp_path / "m.onnx")]),
    }
    for name, command in commands.items():
        assert command() == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"{name}: "), err
        assert words in err, (name, err)


def test_serve_command_line_errors_are_one_line_in_a_real_process(broken):
    checkpoint, words = broken["impossible argument"]
    for arguments, expected in (
        (["--ckpt", str(checkpoint)], words),
        (["--ckpt", str(checkpoint), "--unsure-below", "2"], "between 0 and 1"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "lenet.serve", *arguments], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        # One line naming the problem (after argparse's usage lines, for an option), no traceback.
        assert result.returncode == 2 and expected in result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr
