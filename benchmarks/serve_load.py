"""Load test of a real `lenet-serve` process on loopback: throughput and latency under concurrency.

    python benchmarks/serve_load.py RUN_DIR_OR_CKPT [--requests 1000] [--clients 32] [--workers 1,2] [--images pad] [--native]

For each worker count, starts `lenet-serve --workers N` on a free 127.0.0.1 port, sends --requests
POST /predict uploads from --clients concurrent clients, each with its own keep-alive connection,
then --requests // 4 from one client alone (one request at a time: the latency a user of the page
sees), then stops the server. The images are drawing-pad PNGs (`--images pad`: lenet.realdigits's
pen set, 280x280, as the page sends them) or user-like PNGs of MNIST test digits (`--images
mnist`). The clients are plain http.client connections with the multipart body built in advance,
so that on a small machine the load generator takes little of the CPU the server needs. Prints
requests/s, p50/p99 latency and the error count per setting, and writes them to
benchmarks/results/serve_load.json and .md (or --results-dir); exits non-zero if any request failed.
Only 127.0.0.1 is ever contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
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

from results_file import add_results_dir_option, text_block, write_results


def user_like_pngs(data_dir: str, count: int) -> list[tuple[bytes, int]]:
    """MNIST test digits as dark ink, enlarged 3x, on a 200x160 white canvas: (PNG bytes, label)."""
    from lenet.datafiles import load_split  # here: serve_memory.py imports start_server without the data side

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


def pad_pngs(count: int) -> list[tuple[bytes, int]]:
    """Drawing-pad digits as the page sends them: 280x280 PNGs, black round pen on white (lenet.realdigits's pen set)."""
    from lenet.realdigits import make_set

    digits = make_set("pen", limit=count)
    pngs = []
    for image, label in zip(digits.images, digits.labels):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append((buffer.getvalue(), int(label)))
    return pngs


def multipart(data: bytes, fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body with the image in the field `file` (after the text `fields`), and its content type."""
    boundary = "lenetloadtestboundary"
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n' for name, value in (fields or {}).items())
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\nContent-Type: image/png\r\n\r\n'
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def start_server(checkpoint: str, workers: int, native: bool = False, options: list[str] = ()) -> tuple[subprocess.Popen, str]:
    """`lenet-serve` (with `options` more) on a free 127.0.0.1 port, once /healthz answers (its stderr
    in a temporary file, so a chatty server never blocks on a full pipe)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(sys.executable).with_name("lenet-serve")
    command = [str(script), "--ckpt", checkpoint, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += (["--native"] if native else []) + list(options)
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


def post(connection: http.client.HTTPConnection, path: str, body: bytes, content_type: str) -> tuple[int, bytes, str]:
    """One POST on a keep-alive connection: (status, body, a line for the log); status 0 for a
    transport error, after which the connection is closed (it reconnects on the next request)."""
    try:
        connection.request("POST", path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        text = response.read()
        return response.status, text, f"HTTP {response.status}: {text[:200]!r}"
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        return 0, b"", f"{type(error).__name__}: {error}"


def in_threads(client, clients: int) -> float:
    """client(0) ... client(clients - 1), each in its own thread, all at once: the seconds they took."""
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def run_load(url: str, pngs: list[tuple[bytes, int]], requests: int, clients: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    correct = 0
    lock = threading.Lock()
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    bodies = [(*multipart(data), label) for data, label in pngs]
    host, port = url.removeprefix("http://").split(":")

    def client(number: int) -> None:
        nonlocal correct
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for i in range(shares[number]):
                body, content_type, label = bodies[(number * 31 + i) % len(bodies)]
                started = time.perf_counter()
                status, text, detail = post(connection, "/predict", body, content_type)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if status == 200:
                        correct += json.loads(text)["digit"] == label
                    else:
                        failures.append(detail)
        finally:
            connection.close()

    seconds = in_threads(client, clients)
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
    parser.add_argument("checkpoint", help="run directory, .ckpt or exported .onnx file")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="lenet-serve worker processes, comma-separated settings (default: 1,2)")
    parser.add_argument("--images", choices=("pad", "mnist"), default="pad", help="drawing-pad PNGs (default) or user-like MNIST PNGs")
    parser.add_argument("--data-dir", default=os.environ.get("LENET_DATA_DIR", "data"))
    parser.add_argument("--native", action="store_true", help="serve with `lenet-serve --native` (the C kernel)")
    add_results_dir_option(parser)
    args = parser.parse_args()

    pngs = pad_pngs(200) if args.images == "pad" else user_like_pngs(args.data_dir, 200)
    size = statistics.median(len(data) for data, _ in pngs)
    lines = [f"images: {len(pngs)} {'drawing-pad 280x280' if args.images == 'pad' else 'user-like MNIST'} PNGs, median {size:,.0f} bytes; "
             f"{os.cpu_count()} CPU cores"]  # fmt: skip
    print(lines[-1])
    failed, settings = False, []
    for workers in [int(n) for n in args.workers.split(",")]:
        server, url = start_server(args.checkpoint, workers, args.native)
        try:
            run_load(url, pngs, requests=4 * args.clients, clients=args.clients)  # warm-up: connections, threads
            loaded = run_load(url, pngs, args.requests, args.clients)
            alone = run_load(url, pngs, max(args.requests // 4, 50), 1)
        finally:
            server.terminate()
            server.wait(timeout=30)
        for clients, result in ((args.clients, loaded), (1, alone)):
            name = f"{clients} client{'s' if clients > 1 else ''}"
            printed = [
                f"lenet-serve --workers {workers}{' --native' if args.native else ''}, {name:>10}: {result['rps']:5.0f} requests/s, p50 {1000 * result['p50']:6.1f} ms, "
                f"p99 {1000 * result['p99']:6.1f} ms, {len(result['failures'])} errors, {100 * result['accuracy']:.1f}% correct",
                *(f"  {failure}" for failure in result["failures"][:5]),
            ]
            print("\n".join(printed))
            lines += printed
            failed = failed or bool(result["failures"])
            settings.append({"workers": workers, "clients": clients, "native": args.native,
                             **{k: v for k, v in result.items() if k != "failures"},
                             "errors": len(result["failures"]), "first_errors": result["failures"][:5]})  # fmt: skip
    report = {"checkpoint": args.checkpoint, "images": args.images, "median_png_bytes": size, "requests": args.requests,
              "settings": settings}  # fmt: skip
    paths = write_results("serve_load", report, text_block("\n".join(lines)), results_dir=args.results_dir,
                          title="lenet-serve under load", packages=["fastapi", "uvicorn", "httpx"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
