"""Load test of a real `lenet-serve` process on loopback: throughput and latency under concurrency.

    python benchmarks/serve_load.py RUN_DIR_OR_CKPT [--requests 1000] [--clients 32] [--workers 1]

Starts `lenet-serve` on a free 127.0.0.1 port, sends --requests POST /predict uploads (user-like
PNGs of MNIST test digits) from --clients concurrent clients, each with its own keep-alive
connection, then stops the server. Prints requests/s, p50/p99 latency and the error count; exits
non-zero if any request failed. Only 127.0.0.1 is ever contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image


def user_like_pngs(data_dir: str, count: int) -> list[tuple[bytes, int]]:
    """MNIST test digits as dark ink, enlarged 3x, on a 200x160 white canvas: (PNG bytes, label)."""
    from lenet.data import load_split  # here: serve_memory.py imports start_server without the data side

    images, labels = load_split(data_dir, "mnist", "test")
    pngs = []
    for index in range(count):
        digit = Image.fromarray(255 - images[index, 0].numpy()).resize((84, 84), Image.Resampling.BILINEAR)
        paper = Image.new("L", (200, 160), 255)
        paper.paste(digit, (20 + index % 90, 30 + index % 40))
        buffer = io.BytesIO()
        paper.save(buffer, format="PNG")
        pngs.append((buffer.getvalue(), int(labels[index])))
    return pngs


def start_server(checkpoint: str, workers: int) -> tuple[subprocess.Popen, str]:
    """`lenet-serve` on a free 127.0.0.1 port, once /healthz answers (its stderr in a temporary file,
    so a chatty server never blocks on a full pipe)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(sys.executable).with_name("lenet-serve")
    command = [str(script), "--ckpt", checkpoint, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    log.seek(0)
    raise SystemExit(f"lenet-serve did not start: {log.read()[-2000:]}")


def run_load(url: str, pngs: list[tuple[bytes, int]], requests: int, clients: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    correct = 0
    lock = threading.Lock()
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(number: int) -> None:
        nonlocal correct
        with httpx.Client(base_url=url, timeout=60) as session:
            for i in range(shares[number]):
                data, label = pngs[(number * 31 + i) % len(pngs)]
                started = time.perf_counter()
                try:
                    response = session.post("/predict", files={"file": ("digit.png", data, "image/png")})
                    ok, detail = response.status_code == 200, f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as error:
                    ok, detail = False, f"{type(error).__name__}: {error}"
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if ok:
                        correct += response.json()["digit"] == label
                    else:
                        failures.append(detail)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50": quantiles[49],
        "p99": quantiles[98],
        "failures": failures,
        "accuracy": correct / max(len(latencies) - len(failures), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run directory or .ckpt file")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="lenet-serve worker processes (default: 1)")
    parser.add_argument("--data-dir", default=os.environ.get("LENET_DATA_DIR", "data"))
    args = parser.parse_args()

    pngs = user_like_pngs(args.data_dir, 200)
    server, url = start_server(args.checkpoint, args.workers)
    try:
        run_load(url, pngs, requests=2 * args.clients, clients=args.clients)  # warm-up: connections, threads
        result = run_load(url, pngs, args.requests, args.clients)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"server:     lenet-serve --workers {args.workers} on {url} ({os.cpu_count()} CPU cores)")
    print(f"load:       {args.requests} POST /predict (multipart PNG, {len(pngs[0][0]):,}-byte images) from {args.clients} concurrent clients")
    print(f"throughput: {result['rps']:.0f} requests/s ({result['seconds']:.1f} s)")
    print(f"latency:    p50 {1000 * result['p50']:.0f} ms, p99 {1000 * result['p99']:.0f} ms")
    print(f"errors:     {len(result['failures'])}")
    print(f"accuracy:   {100 * result['accuracy']:.1f}% of the answers correct")
    for failure in result["failures"][:5]:
        print(f"  {failure}")
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
