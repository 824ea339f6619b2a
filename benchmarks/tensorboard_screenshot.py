"""Screenshot of TensorBoard's HPARAMS tab over a folder of runs, for README.

    python benchmarks/tensorboard_screenshot.py LOGDIR [--results-dir benchmarks/results]

Starts `tensorboard --logdir LOGDIR` on 127.0.0.1, opens the HPARAMS tab in headless Chromium
(Debian's /usr/bin/chromium, else Playwright's own) and saves a 1800x700 screenshot as
screenshots/tensorboard_hparams.png in the results folder, with tensorboard_screenshot.md and .json
saying when, from which runs and with which versions.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from results_file import add_results_dir_option, write_results

SCREENSHOT = Path("screenshots") / "tensorboard_hparams.png"  # inside the results folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    add_results_dir_option(parser)
    args = parser.parse_args()
    screenshot = args.results_dir / SCREENSHOT
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        chromium = shutil.which("chromium")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium) if chromium else playwright.chromium.launch()
            page = browser.new_page(viewport={"width": 1800, "height": 700})
            for _ in range(60):  # TensorBoard takes a few seconds to read the event files
                try:
                    page.goto(f"http://127.0.0.1:{port}/#hparams", timeout=5000)
                    break
                except Exception:
                    time.sleep(1)
            page.wait_for_timeout(8000)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    runs = sorted(str(path.parent.relative_to(args.logdir)) for path in Path(args.logdir).rglob("events.out.tfevents.*"))
    body = f"TensorBoard's HPARAMS tab over `{args.logdir}` ({len(runs)} event files).\n\n![HPARAMS tab]({SCREENSHOT.as_posix()})"
    paths = write_results("tensorboard_screenshot", {"logdir": str(args.logdir), "screenshot": SCREENSHOT.as_posix(), "event_folders": runs},
                          body, results_dir=args.results_dir, title="TensorBoard's HPARAMS tab",
                          packages=["tensorboard", "playwright"])  # fmt: skip
    print(f"Written: {screenshot}, {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
