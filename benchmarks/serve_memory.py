"""Memory and responsiveness of a real `lenet-serve` process under worst-case uploads and slow clients.

    python benchmarks/serve_memory.py RUN_DIR_OR_CKPT [--rounds 2]

Starts `lenet-serve` (1 worker) on a free 127.0.0.1 port and, while sampling the server's resident
memory every 20 ms and timing GET /healthz every 50 ms (from a process of its own), sends:
  - 8, then 32, concurrent uploads of the worst image found: a 190 KB PNG of 7000x7000 transparent
    pixels (49 MP, 196 MB once decoded), --rounds each; a client answered 503 waits its Retry-After
    and tries again, at most twice;
  - 8, then 32, concurrent JSON batches of 64 such images (49 MP each, palette PNGs: 0.5 MB a batch),
    5 x --rounds each (they are answered at once);
  - 40 slow clients that send half of a 6.6 MB JSON body and stall, and 40 that send half a request head.
It reports status codes, peak and settled memory, healthz latency (also on the idle server first, as
the floor this machine's other load sets), and how long the slow clients were held, then stops the server. Only 127.0.0.1 is contacted; every loop is bounded in count and time.
Writes benchmarks/results/serve_memory.json and serve_memory.md (or --results-dir).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import multiprocessing
import os
import selectors
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import add_results_dir_option, write_results  # noqa: E402
from serve_load import start_server  # noqa: E402

SETTLE_S = 3.0  # after a scenario, wait this long before reading the settled memory


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def worst_images() -> dict[str, bytes]:
    transparent = png(Image.new("RGBA", (7000, 7000), (0, 0, 0, 0)))
    palette = Image.new("P", (7000, 7000), 0)
    return {"rgba_7000": transparent, "palette_7000": png(palette)}


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn's workers), in MB."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024
        pending += [int(child) for child in children]
    return total


def ping_healthz(url: str, ready, stop, answers) -> None:
    """GET /healthz every 50 ms (`ready` set after the first answer) until `stop` is set, then put
    ([seconds per answer], [failures]) on `answers`. It runs in a process of its own: timed from among this process's 32 client threads,
    which share one GIL, the answers would look slower than the server gave them."""
    seconds, failures = [], []
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.wait(0.05):
            started = time.perf_counter()
            try:
                status = client.get("/healthz").status_code
            except httpx.HTTPError as error:
                failures.append(f"{type(error).__name__}: {error}")
                continue
            seconds.append(time.perf_counter() - started)
            ready.set()
            if status != 200:
                failures.append(f"HTTP {status}")
    answers.put((seconds, failures))


class Watch:
    """While open: the server's memory every 20 ms (a thread) and GET /healthz every 50 ms (a process)."""

    def __init__(self, pid: int, url: str) -> None:
        self.pid, self.url = pid, url
        self.memory: list[float] = []
        self.health: list[float] = []  # seconds per answer
        self.health_failures: list[str] = []
        self.stop = threading.Event()
        context = multiprocessing.get_context("spawn")
        self.pinging, self.stop_pinging, self.answers = context.Event(), context.Event(), context.Queue()
        self.pinger = context.Process(target=ping_healthz, args=(url, self.pinging, self.stop_pinging, self.answers))

    def __enter__(self) -> Watch:
        self.pinger.start()
        self.pinging.wait(timeout=60)  # the scenario starts once healthz is being timed
        self.sampler = threading.Thread(target=self.sample_memory)
        self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.stop_pinging.set()
        self.sampler.join(timeout=10)
        self.health, self.health_failures = self.answers.get(timeout=30)
        self.pinger.join(timeout=10)

    def sample_memory(self) -> None:
        while not self.stop.wait(0.02):
            self.memory.append(rss_mb(self.pid))

    def summary(self) -> dict:
        ordered = sorted(self.health)

        def percentile(share: float) -> float | None:  # nearest rank: an answer that was really seen
            return round(1000 * ordered[max(0, math.ceil(share * len(ordered)) - 1)], 1) if ordered else None

        return {
            "peak_rss_mb": round(max(self.memory, default=0), 1),
            "healthz_answers": len(ordered),
            "healthz_p50_ms": percentile(0.5),
            "healthz_p99_ms": percentile(0.99),
            "healthz_max_ms": percentile(1.0),
            "healthz_failures": self.health_failures[:5],
        }


def upload_storm(url: str, clients: int, rounds: int, send) -> dict:
    """`clients` threads, each sending `rounds` requests with `send(client)`; on 503 a client waits
    Retry-After (at most 10 s) and retries, twice at most. Returns first and final status counts."""
    first, final, seconds = Counter(), Counter(), []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as session:
            for _ in range(rounds):
                started = time.perf_counter()
                statuses = []
                for _attempt in range(3):
                    try:
                        response = send(session)
                        statuses.append(response.status_code)
                    except httpx.HTTPError as error:
                        statuses.append(type(error).__name__)
                        break
                    if response.status_code != 503:
                        break
                    time.sleep(min(float(response.headers.get("retry-after", 1)), 10))
                with lock:
                    first[str(statuses[0])] += 1
                    final[str(statuses[-1])] += 1
                    seconds.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return {
        "clients": clients,
        "requests": clients * rounds,
        "first_answers": dict(first),
        "final_answers": dict(final),
        "seconds": round(time.perf_counter() - started, 1),
        "slowest_request_s": round(max(seconds), 1) if seconds else None,
    }


def slow_clients(port: int, count: int, hold_s: float) -> dict:
    """`count` connections sending half a 6.6 MB JSON body and `count` sending half a request head;
    then wait (at most hold_s) for the server to answer or close each. Returns how they ended."""
    declared = 6_600_000
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    connections = []
    for _ in range(count):
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(head + b'{"images": ["' + b"A" * (declared // 2))
        partial = socket.create_connection(("127.0.0.1", port))
        partial.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        connections += [("body", body), ("head", partial)]
    # Wait on all of them at once, noting when each is answered or closed by the server.
    started = time.monotonic()
    waiting = selectors.DefaultSelector()
    for kind, connection in connections:
        connection.setblocking(False)
        waiting.register(connection, selectors.EVENT_READ, kind)
    ended: dict[str, list[float]] = {"body": [], "head": []}
    answers: Counter = Counter()
    while waiting.get_map() and time.monotonic() - started < hold_s:
        for key, _ in waiting.select(timeout=0.5):
            try:
                reply = key.fileobj.recv(200)
            except ConnectionError as error:
                reply = f"{type(error).__name__}".encode()
            answers[f"{key.data}: " + (reply.split(b"\r\n")[0].decode() or "closed without an answer")] += 1
            ended[key.data].append(time.monotonic() - started)
            waiting.unregister(key.fileobj)
            key.fileobj.close()
    for key in list(waiting.get_map().values()):
        answers[f"{key.data}: still open after {hold_s:g} s"] += 1
        key.fileobj.close()
    return {
        "connections": {kind: count for kind in ended},
        "how_they_ended": dict(answers),
        "closed_by_server_after_s": {kind: round(max(times), 1) if times else None for kind, times in ended.items()},
    }


def idle(seconds: float) -> dict:
    time.sleep(seconds)
    return {}


def scenario(name: str, pid: int, url: str, work) -> dict:
    print(f"{name} ...", flush=True)
    with Watch(pid, url) as watch:
        outcome = work()
    time.sleep(SETTLE_S)
    result = {"scenario": name, **outcome, **watch.summary(), "settled_rss_mb": round(rss_mb(pid), 1)}
    print(f"  {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run directory or .ckpt file")
    parser.add_argument("--rounds", type=int, default=2, help="worst-case uploads per client (default: 2)")
    add_results_dir_option(parser)
    args = parser.parse_args()

    images = worst_images()
    batch = json.dumps({"images": [base64.b64encode(images["palette_7000"]).decode()] * 64}).encode()
    json_headers = {"content-type": "application/json"}
    upload = {"file": ("worst.png", images["rgba_7000"], "image/png")}

    server, url = start_server(args.checkpoint, workers=1)
    port = int(url.rsplit(":", 1)[1])
    try:
        httpx.get(f"{url}/healthz", timeout=10)
        time.sleep(SETTLE_S)
        results = {"load_average_at_start": os.getloadavg(), "baseline_rss_mb": round(rss_mb(server.pid), 1), "scenarios": []}
        # The floor: healthz on an idle server, so that the other rows can be read against this machine's load.
        results["scenarios"].append(scenario("idle server (healthz alone, 10 s)", server.pid, url, lambda: idle(10)))
        for clients in (8, 32):
            results["scenarios"].append(scenario(
                f"{clients} concurrent uploads of a 7000x7000 transparent PNG ({len(images['rgba_7000']):,} bytes)",
                server.pid, url,
                lambda: upload_storm(url, clients, args.rounds, lambda s: s.post("/predict", files=upload)),
            ))
        for clients in (8, 32):
            results["scenarios"].append(scenario(
                f"{clients} concurrent JSON batches of 64 images of 49 MP ({len(batch):,} bytes each)",
                server.pid, url,
                lambda: upload_storm(
                    url, clients, 5 * args.rounds, lambda s: s.post("/predict/batch", content=batch, headers=json_headers)
                ),
            ))
        results["scenarios"].append(scenario(
            "40 slow clients holding half of a 6.6 MB body, 40 holding half a request head",
            server.pid, url, lambda: slow_clients(port, 40, hold_s=60),
        ))
        results["final_rss_mb"] = round(rss_mb(server.pid), 1)
    finally:
        server.terminate()
        server.wait(timeout=30)

    paths = write_results("serve_memory", results, markdown(results), results_dir=args.results_dir,
                          title="lenet-serve under worst-case uploads and slow clients", packages=["fastapi", "uvicorn", "pillow"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


def counts(counter: dict) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in sorted(counter.items()))


def markdown(results: dict) -> str:
    lines = [
        f"One worker, load average {results['load_average_at_start'][0]:.1f} at the start. Memory is the server's resident set; healthz was "
        f"asked every 50 ms throughout. Idle: {results['baseline_rss_mb']:.0f} MB; at the end: {results['final_rss_mb']:.0f} MB.",
        "",
        "| scenario | answers (first try → after Retry-After) | peak RSS | settled RSS | healthz p50 / p99 / max | slowest |",
        "|---|---|---|---|---|---|",
    ]
    for s in results["scenarios"]:
        if "first_answers" in s:
            answers = f"{counts(s['first_answers'])} → {counts(s['final_answers'])}"
            slowest = f"{s['slowest_request_s']} s"
        elif "how_they_ended" in s:
            answers = counts(s["how_they_ended"])
            slowest = "closed after " + ", ".join(f"{t} s ({kind})" for kind, t in s["closed_by_server_after_s"].items())
        else:
            answers, slowest = "", ""
        health = f"{s['healthz_p50_ms']} / {s['healthz_p99_ms']} / {s['healthz_max_ms']} ms ({s['healthz_answers']} asked)"
        if s["healthz_failures"]:
            health += f" ({len(s['healthz_failures'])} failed)"
        lines.append(f"| {s['scenario']} | {answers} | {s['peak_rss_mb']:.0f} MB | {s['settled_rss_mb']:.0f} MB | {health} | {slowest} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
