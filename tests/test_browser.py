"""The drawing page in a real browser: Chromium, driven by Playwright, draws digits with the mouse
and with touch on the page served by a real `lenet-serve` process, and reads back what it shows.

Uses Debian's Chromium at /usr/bin/chromium (or LENET_CHROMIUM) when present, else Playwright's own
Chromium (`python -m playwright install chromium`), else skips saying so. Screenshots are saved under
artifacts/browser/ (git-ignored); desktop.png and phone.png are the README's.
"""

from __future__ import annotations

import base64
import io
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # a browser and a server process, tens of seconds to start

CHROMIUM = Path(os.environ.get("LENET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
PAD = 280  # the page's drawing coordinates: strokes below are in these units

# Mouse strokes, one list of points per stroke.
ELLIPSE = [(140 + 55 * math.sin(2 * math.pi * t / 40), 140 - 90 * math.cos(2 * math.pi * t / 40)) for t in range(41)]
STROKES = {
    1: [[(140, 45), (140, 235)]],
    0: [ELLIPSE],
    7: [[(75, 55), (205, 55), (115, 235)]],
}
SCRIBBLE = [  # a zigzag crossed out: no digit in particular
    [(x, 140 + 60 * math.sin(x / 6)) for x in range(60, 230, 4)],
    [(70, 80), (210, 200)],
    [(70, 200), (210, 80)],
]
TWO_ONES = [[(70, 60), (70, 220)], [(210, 60), (210, 220)]]
SMALL_SEVEN = [[(40, 40), (100, 40), (60, 110)]]  # drawn in a corner, a quarter of the box
DOT = [[(140, 140)]]


def allowed_requests(drawing_ms: int) -> int:
    """What the page may send for one stroke drawn in `drawing_ms`: one per 100 ms, one at its end."""
    return drawing_ms // 100 + 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run):
    """A real lenet-serve process on a free loopback port; stopped after the tests."""
    port = free_port()
    command = [sys.executable, "-m", "lenet.serve", "--ckpt", str(trained_run), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # importing torch on a busy CI machine can take a while
        while True:
            if process.poll() is not None:
                pytest.fail(f"lenet-serve exited with {process.returncode}:\n{process.stdout.read()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("lenet-serve did not answer /healthz within 180 s")
            try:
                process.wait(timeout=0.2)  # returns at once if the server exits: reported above
            except subprocess.TimeoutExpired:
                pass
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium when installed, else Playwright's own; the test skips, saying how, without either."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    with sync_api.sync_playwright() as playwright:
        if CHROMIUM.exists():
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        elif Path(playwright.chromium.executable_path).exists():
            launched = playwright.chromium.launch()
        else:
            pytest.skip(
                f"no Chromium: none at {CHROMIUM} (apt-get install chromium, or set LENET_CHROMIUM) and Playwright's "
                "own is not installed (python -m playwright install chromium)"
            )
        yield launched
        launched.close()


@pytest.fixture
def open_page(server, browser):
    """Opens the page in a fresh context (DESKTOP or PHONE); fails the test on any script error."""
    contexts, errors = [], []

    def opened(device: dict = DESKTOP):
        context = browser.new_context(**device)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server)
        return page

    yield opened
    for context in contexts:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"


# ----------------------------------------------------------------------------- driving the page


def to_screen(page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#pad").bounding_box()
    return box["x"] + x * box["width"] / PAD, box["y"] + y * box["height"] / PAD


def draw(page, strokes, pause_ms: int = 0, steps: int = 8, pen_down=lambda: None) -> None:
    """Mouse strokes in pad units, `steps` mouse moves from point to point; `pen_down` runs as each
    stroke starts. `pause_ms` draws as slowly as a hand: the page's clock (installed with
    page.clock.install()) moves on that much after each point, its timers firing, without the test waiting."""
    for stroke in strokes:
        page.mouse.move(*to_screen(page, *stroke[0]))
        page.mouse.down()
        pen_down()
        for point in stroke[1:]:
            page.mouse.move(*to_screen(page, *point), steps=steps)
            if pause_ms:
                page.clock.run_for(pause_ms)
        page.mouse.up()


def touch_draw(page, strokes) -> None:
    """Finger strokes, through Chrome's touch input (the page sees touch pointer events)."""
    cdp = page.context.new_cdp_session(page)
    for stroke in strokes:
        points = [stroke[0]]
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            points += [(x0 + (x1 - x0) * k / 8, y0 + (y1 - y0) * k / 8) for k in range(1, 9)]
        for kind, (x, y) in zip(["touchStart"] + ["touchMove"] * (len(points) - 1), points):
            sx, sy = to_screen(page, x, y)
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": sx, "y": sy}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def drawn(page) -> int:
    return int(page.evaluate("document.body.dataset.drawn"))


def shown(page, since: int | None = None) -> dict:
    """Waits until the page shows its answer for its newest drawing (after version `since`), then reads it."""
    page.wait_for_function(
        "since => Number(document.body.dataset.drawn) > since && document.body.dataset.shown === document.body.dataset.drawn",
        arg=-1 if since is None else since,
        timeout=60_000,
    )
    read = {name: page.locator(f"#{name}").inner_text() for name in ("digit", "alt", "says", "hint")}
    read["state"] = page.evaluate("document.body.dataset.state")
    read["probs"] = [float(page.locator(f'#bars li[data-digit="{d}"]').get_attribute("data-prob")) for d in range(10)]
    return read


def settled(page) -> None:
    """Waits until the page has no request in flight and none scheduled (app.js's inFlight and timer):
    without new input, nothing more will be sent or shown."""
    page.wait_for_function("() => !inFlight && timer === null", timeout=60_000)


def predict_requests(page) -> list:
    """The POST /predict requests the page sends from now on, as the network sees them."""
    sent: list = []
    page.on("request", lambda request: sent.append(request) if "/predict" in request.url else None)
    return sent


def layout(page) -> dict[str, tuple[float, float]]:
    """Where the pad, the probabilities and the model's view sit: they must not move between states."""
    boxes = {name: page.locator(name).bounding_box() for name in ("#pad", ".probs", ".preview-box")}
    return {name: (box["x"], box["y"]) for name, box in boxes.items()}


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# ----------------------------------------------------------------------------- the tests


def test_empty_page_shows_the_size_guide_and_nothing_broken(open_page):
    page = open_page()
    pad, guide = page.locator("#pad").bounding_box(), page.locator(".guide").bounding_box()
    assert page.locator(".guide").is_visible()
    # MNIST's digits fill 20 of 28 pixels: the guide is that share of the pad, centred.
    assert guide["width"] == pytest.approx(pad["width"] * 20 / 28, abs=3)
    assert guide["height"] == pytest.approx(guide["width"], abs=1)
    assert guide["x"] + guide["width"] / 2 == pytest.approx(pad["x"] + pad["width"] / 2, abs=2)
    assert page.locator("#pad").get_attribute("role") and "draw" in page.locator("#pad").get_attribute("aria-label")

    assert page.locator("#digit").inner_text() == "?"
    assert page.locator("#says").inner_text() == "Draw one digit inside the dashed box."
    assert page.locator("#preview").get_attribute("src") is None  # no broken image ...
    assert page.locator(".preview-box .placeholder").is_visible()
    assert not page.locator("#bars").is_visible()  # ... and no bare 0-9 column
    assert page.locator(".probs .placeholder").is_visible()
    assert not page.locator("#details").is_visible()
    screenshot(page, "empty")


def test_drawn_digits_are_recognised_and_announced(open_page):
    page = open_page()
    empty = layout(page)
    region = page.locator("#result")
    assert region.get_attribute("aria-live") == "polite"

    for expected, strokes in STROKES.items():
        page.click("#clear")
        before = drawn(page)
        busy = []  # screen readers wait while the pen is down
        draw(page, strokes, pen_down=lambda: busy.append(region.get_attribute("aria-busy")))
        assert busy == ["true"]
        answer = shown(page, before)
        path = screenshot(page, f"drawn_{expected}")
        print(f"drew {expected}, the page shows {answer['digit']} ({max(answer['probs']):.1%}); screenshot: {path}")
        assert int(answer["digit"]) == expected, f"drew {expected}, the page shows {answer}; see {path}"
        assert answer["state"] == "sure" and answer["probs"][expected] == max(answer["probs"]) >= 0.5
        assert sum(answer["probs"]) == pytest.approx(1, abs=1e-3)
        # The live region says it in words, once the answer for the finished drawing is in.
        assert region.get_attribute("aria-busy") == "false"
        assert f"a {expected} (" in region.inner_text() and f"{round(100 * max(answer['probs']))}% sure" in region.inner_text()
        assert page.locator("#preview").get_attribute("src").startswith("data:image/png;base64,")
        assert page.locator("#bars").is_visible() and not page.locator(".probs .placeholder").is_visible()
        bar_width = page.locator(f'#bars li[data-digit="{expected}"] .bar').evaluate("bar => bar.style.width")
        assert float(bar_width.rstrip("%")) == pytest.approx(100 * answer["probs"][expected], abs=0.1)
        assert layout(page) == empty, "the columns moved when the answer arrived"
    screenshot(page, "desktop")

    page.click("#clear")  # a cleared pad shows no prediction, even when a late answer arrives
    settled(page)
    assert page.locator("#digit").inner_text() == "?" and "Draw one digit" in region.inner_text()


def test_requests_are_throttled_while_drawing(open_page):
    """About one request per 100 ms while the pen is down, and one at the end of the stroke."""
    page = open_page()
    page.clock.install()  # the page's time, moved on by draw() as a hand would take it
    page.reload()
    requests = predict_requests(page)
    before = drawn(page)
    start = page.evaluate("performance.now()")
    draw(page, [ELLIPSE], pause_ms=30, steps=2)  # a hand-paced 0: 80 mouse moves in at least 1.2 s
    drawing_ms = int(page.evaluate("performance.now()") - start)
    answer = shown(page, before)
    settled(page)  # nothing more is sent once the answer is in
    allowed = allowed_requests(drawing_ms)
    print(f"a 0 drawn in {drawing_ms} ms sent {len(requests)} requests (allowed {allowed}); the page shows {answer['digit']}")
    assert 2 <= len(requests) <= allowed  # live while drawing, but not one per mouse move
    assert answer["digit"] == "0"


def test_unsure_answer_names_the_runner_up(open_page):
    page = open_page()
    before = drawn(page)
    draw(page, SCRIBBLE)
    answer = shown(page, before)
    path = screenshot(page, "unsure")
    ranked = sorted(range(10), key=lambda d: -answer["probs"][d])
    print(f"a scribble: {answer}; screenshot: {path}")
    assert answer["probs"][ranked[0]] < 0.5, f"the model is sure of a scribble ({answer}): this test needs another one"
    assert answer["state"] == "unsure"
    assert answer["digit"] == str(ranked[0]) and answer["alt"] == f"or {ranked[1]}?"
    assert answer["says"].startswith("Not sure: maybe") and f" {ranked[1]} (" in answer["says"]
    assert answer["hint"] == "Try again, bigger and clearer."

    page.click("#clear")
    before = drawn(page)
    draw(page, TWO_ONES)
    assert shown(page, before)["hint"] == "Draw one digit only."


def test_no_digit_and_error_states_speak_plainly(open_page, tmp_path):
    page = open_page()
    empty = layout(page)
    requests = predict_requests(page)

    before = drawn(page)
    draw(page, DOT)  # a tap: no digit, and not worth a request
    dot = shown(page, before)
    assert (dot["state"], dot["says"], dot["hint"]) == ("nodigit", "Too small to read.", "Draw bigger, to fill the dashed box.")
    assert requests == [] and dot["digit"] == "?" and not page.locator("#bars").is_visible()
    screenshot(page, "dot")

    page.click("#clear")
    before = drawn(page)
    draw(page, SMALL_SEVEN)  # answered, with the hint that would make it reliable
    small = shown(page, before)
    assert small["state"] in ("sure", "unsure") and small["hint"] == "Draw bigger, to fill the dashed box."

    blank, not_an_image = tmp_path / "blank.png", tmp_path / "notes.png"
    Image.new("L", (200, 150), 255).save(blank)
    not_an_image.write_text("shopping list: milk, eggs")
    for path, state, says in [
        (blank, "nodigit", "No digit found."),
        (not_an_image, "error", "This file can't be read as a picture. Try a PNG or JPEG photo."),
    ]:
        before = drawn(page)
        page.set_input_files("#upload", str(path))
        answer = shown(page, before)
        screenshot(page, f"upload_{path.stem}")
        assert (answer["state"], answer["says"], answer["digit"]) == (state, says, "?")
        assert "Pillow" not in page.locator("#result").inner_text()
        # The server's own words stay one click away, folded.
        assert page.locator("#details summary").is_visible() and page.locator("#details").get_attribute("open") is None
        assert page.locator("#detail").text_content()
        assert layout(page) == empty, f"the columns moved for a {state} message"
    assert "Pillow" in page.locator("#detail").text_content()

    page.route("**/predict*", lambda route: route.abort())  # the server gone
    page.click("#clear")
    before = drawn(page)
    draw(page, STROKES[7])
    gone = shown(page, before)
    assert (gone["state"], gone["says"]) == ("error", "The server can't be reached. Is lenet-serve still running?")


def test_live_off_waits_for_predict(open_page):
    page = open_page()
    page.uncheck("#live")
    requests = predict_requests(page)
    assert page.locator("#predict").is_visible()
    draw(page, STROKES[7])
    page.wait_for_function("() => document.getElementById('hint').textContent.startsWith('Live is off')")
    settled(page)
    assert requests == [] and page.locator("#digit").inner_text() == "?"
    assert page.locator("#hint").inner_text() == "Live is off: press Predict to read your drawing."
    before = drawn(page) - 1  # Predict asks for the drawing as it is
    page.click("#predict")
    assert shown(page, before)["digit"] == "7" and len(requests) == 1
    page.check("#live")
    assert not page.locator("#predict").is_visible()


def test_uploaded_photo_is_recognised(open_page, mnist_test, tmp_path):
    digit, label = Image.fromarray(255 - mnist_test[0][1, 0].numpy()), int(mnist_test[1][1])
    photo = Image.new("L", (400, 300), 235)  # a small dark digit off-centre on grey paper
    photo.paste(digit.resize((90, 90), Image.Resampling.BILINEAR).point(lambda v: v * 235 // 255), (260, 40))
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=90)
    page = open_page()
    before = drawn(page)
    page.set_input_files("#upload", str(path))
    answer = shown(page, before)
    screenshot(page, "uploaded")
    print(f"uploaded a {label}, the page shows {answer['digit']}")
    assert answer["digit"] == str(label) and answer["probs"][label] == max(answer["probs"])


SENT_IMAGES = """
// Keeps every image the page posts (Chromium does not expose multipart file bodies to Playwright).
window.sentImages = [];
const originalFetch = window.fetch;
window.fetch = (url, init) => {
  if (init && init.body instanceof FormData) window.sentImages.push(init.body.get("file"));
  return originalFetch(url, init);
};
"""
READ_SENT = """async (index) => {
  const blob = window.sentImages.at(index);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""


def test_drawing_over_a_photo_keeps_the_photo(open_page, mnist_test, tmp_path):
    """A stroke over an uploaded photo is sent on the photo itself, at the photo's resolution."""
    seven = Image.fromarray(255 - mnist_test[0][0, 0].numpy()).resize((280, 280), Image.Resampling.BILINEAR)
    assert int(mnist_test[1][0]) == 7
    photo = Image.new("L", (800, 600), 225)  # a dark 7 on grey paper, 10 photo pixels per MNIST pixel
    photo.paste(seven.point(lambda v: v * 225 // 255), (260, 160))
    path = tmp_path / "seven.png"
    photo.save(path)
    page = open_page()
    page.add_init_script(SENT_IMAGES)
    page.reload()

    before = drawn(page)
    page.set_input_files("#upload", str(path))
    assert shown(page, before)["digit"] == "7"
    assert base64.b64decode(page.evaluate(READ_SENT, 0)) == path.read_bytes()  # a photo alone is sent as it is

    # A continental 7's bar across the stem (MNIST row 17, columns 12-22), with a pen to match the photo's.
    page.locator("#pen").focus()
    for _ in range(7):  # 24 -> 10, as the keyboard moves a slider
        page.keyboard.press("ArrowLeft")
    assert page.locator("#pen-value").inner_text() == "10"
    before = drawn(page)
    draw(page, [[(133, 152), (168, 152)]])
    answer = shown(page, before)
    screenshot(page, "photo_drawn_over")
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(page.evaluate(READ_SENT, -1)))).convert("L"), np.float32)
    original = np.asarray(photo, np.float32)
    assert sent.shape == original.shape, "the drawing was sent at the screen's size, not on the photo"
    untouched = np.abs(sent - original)[:300]  # the photo above the bar, the 7's top included
    assert untouched.mean() < 1 and untouched.max() < 40
    assert sent[335, 380:480].max() < 30, "the stroke is not on the photo sent"
    assert answer["digit"] == "7", f"a crossed 7 reads as {answer}"


def test_phone_viewport(open_page):
    """390x844, touch: the pad fits the screen, the model's view stays in sight, buttons fit a finger."""
    page = open_page(PHONE)
    width, height = PHONE["viewport"]["width"], PHONE["viewport"]["height"]
    pad = page.locator("#pad").bounding_box()
    assert pad["x"] >= 0 and pad["x"] + pad["width"] <= width
    assert pad["width"] >= 0.85 * width, f"the pad does not scale to the screen: {pad['width']:.0f} of {width} px"
    for control in ("#clear", ".upload"):
        box = page.locator(control).bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44, f"{control} is {box['width']:.0f}x{box['height']:.0f} px"

    before = drawn(page)
    touch_draw(page, [ELLIPSE])
    answer = shown(page, before)
    path = screenshot(page, "phone")
    assert answer["digit"] == "0", f"drew a 0 with a finger, the page shows {answer}; see {path}"
    preview = page.locator("#preview").bounding_box()
    assert page.locator("#preview").is_visible() and preview["y"] + preview["height"] <= height, "the model's view is below the screen"
    assert page.evaluate("window.scrollY") == 0  # drawing did not scroll the page


# ----------------------------------------------------------------------------- corrections (lenet-serve --collect)


@pytest.fixture(scope="module")
def collecting_server(synthetic_run, tmp_path_factory):
    """`lenet-serve --collect` with a model trained briefly on synthetic digits, on a free loopback port:
    (its URL, its corrections database), once uvicorn says its start-up is complete."""
    database = tmp_path_factory.mktemp("collect") / "corrections.db"
    port = free_port()
    command = [sys.executable, "-m", "lenet.serve", "--ckpt", str(synthetic_run), "--collect", str(database),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()  # the server's output, read on (a full pipe would stall it)
    threading.Thread(target=lambda: [*map(lines.put, process.stdout), lines.put(None)], daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180  # importing torch on a busy CI machine can take a while
        while not output or "Application startup complete" not in output[-1]:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"lenet-serve --collect did not start within 180 s:\n{''.join(output)}")
            if line is None:
                pytest.fail(f"lenet-serve --collect exited with {process.wait()}:\n{''.join(output)}")
            output.append(line)
        yield f"http://127.0.0.1:{port}", database
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_wrong_answer_buttons_send_the_right_label(collecting_server, browser):
    """With collection on, the page says drawings are kept, and a button under the answer stores the
    drawing with that label (and the writer's tag): read back from the database."""
    from lenet.corrections import NOT_A_DIGIT, CorrectionStore

    url, database = collecting_server
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_function("document.body.dataset.collecting === 'on'")
    assert page.locator("#kept").is_visible() and "keeps the drawings you correct" in page.locator("#kept").inner_text()
    assert not page.locator("#correct").is_visible()  # nothing to correct yet

    before = drawn(page)
    draw(page, STROKES[7])
    answer = shown(page, before)
    assert page.locator("#correct").is_visible() and page.locator("#correct-label").inner_text() == "Wrong? It was:"
    page.fill("#writer", "page test")
    page.click('#correct button[data-label="3"]')
    page.wait_for_function("document.getElementById('correct-says').textContent !== ''")
    assert page.locator("#correct-says").inner_text() == "Thank you: kept as a 3."
    assert page.locator('#correct button[data-label="3"]').is_disabled()  # one correction per answer
    screenshot(page, "corrected")

    page.click("#clear")
    assert not page.locator("#correct").is_visible()
    before = drawn(page)
    draw(page, SCRIBBLE)
    shown(page, before)
    page.click('#correct button[data-label="not_a_digit"]')
    page.wait_for_function("document.getElementById('correct-says').textContent !== ''")
    assert page.locator("#correct-says").inner_text() == "Thank you: kept as not a digit."
    context.close()
    assert errors == [], f"script errors on the page: {errors}"

    rows = CorrectionStore(database, create=False).rows()
    assert [(row.label, row.writer) for row in rows] == [(3, "page test"), (NOT_A_DIGIT, "page test")]
    assert rows[0].predicted == int(answer["digit"]) and rows[0].upload.startswith(b"\x89PNG")


def test_corrections_are_offered_only_when_collecting(open_page):
    page = open_page()
    page.wait_for_function("document.body.dataset.collecting === 'off'")
    before = drawn(page)
    draw(page, STROKES[7])
    shown(page, before)
    assert not page.locator("#correct").is_visible() and not page.locator("#kept").is_visible()
