"""The drawing page in a real browser: Chromium, driven by Playwright, draws digits with the mouse
on the page served by a real `lenet-serve` process, and reads back the predictions it shows.

Needs Debian's Chromium at /usr/bin/chromium (CI installs it); without it the test fails, it does
not skip. Screenshots are saved under artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("LENET_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"

# Mouse strokes in the pad's 280x280 pixels, one list of points per stroke.
ELLIPSE = [(140 + 55 * math.sin(2 * math.pi * t / 40), 140 - 90 * math.cos(2 * math.pi * t / 40)) for t in range(41)]
STROKES = {
    1: [[(140, 45), (140, 235)]],
    0: [ELLIPSE],
    7: [[(75, 55), (205, 55), (115, 235)]],
}


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
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) or point "
            "LENET_CHROMIUM at a Chromium binary. The browser test does not skip."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
        page.mouse.up()


def shown_prediction(page) -> tuple[int, list[float]]:
    """Waits until the answer for the final drawing is on screen, then reads digit and bars."""
    page.wait_for_function("document.body.dataset.shown === document.body.dataset.drawn", timeout=60_000)
    digit = page.locator("#digit").inner_text()
    probs = [float(page.locator(f'#bars li[data-digit="{d}"]').get_attribute("data-prob")) for d in range(10)]
    return int(digit), probs


def test_drawn_digits_are_recognised(server, browser):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server)
    assert page.locator("#digit").inner_text() == "?"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    for expected, strokes in STROKES.items():
        page.click("#clear")
        draw(page, strokes)
        digit, probs = shown_prediction(page)
        screenshot = ARTIFACTS / f"drawn_{expected}.png"
        page.screenshot(path=str(screenshot))
        print(f"drew {expected}, page shows {digit} ({max(probs):.1%}); screenshot: {screenshot}")
        assert digit == expected, f"drew {expected}, the page shows {digit}; see {screenshot}"
        assert sum(probs) == pytest.approx(1, abs=1e-3) and probs[expected] == max(probs)
        assert page.locator("#preview").get_attribute("src").startswith("data:image/png;base64,")
        bar_width = page.locator(f'#bars li[data-digit="{expected}"] .bar').evaluate("bar => bar.style.width")
        assert float(bar_width.rstrip("%")) == pytest.approx(100 * probs[expected], abs=0.1)

    page.click("#clear")  # a cleared pad shows no prediction, even when a late answer arrives
    page.wait_for_timeout(2000)
    assert page.locator("#digit").inner_text() == "?"
    assert errors == []


def test_uploaded_photo_is_recognised(server, browser, mnist_test, tmp_path):
    digit, label = Image.fromarray(255 - mnist_test[0][1, 0].numpy()), int(mnist_test[1][1])
    photo = Image.new("L", (400, 300), 235)  # a small dark digit off-centre on grey paper
    photo.paste(digit.resize((90, 90), Image.Resampling.BILINEAR).point(lambda v: v * 235 // 255), (260, 40))
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=90)
    page = browser.new_page()
    page.goto(server)
    page.set_input_files("#upload", str(path))
    shown, probs = shown_prediction(page)
    screenshot = ARTIFACTS / "uploaded.png"
    page.screenshot(path=str(screenshot))
    print(f"uploaded a {label}, page shows {shown}; screenshot: {screenshot}")
    assert shown == label and probs[label] == max(probs)
