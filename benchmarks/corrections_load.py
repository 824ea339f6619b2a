"""Load check of POST /feedback on a real `lenet-serve --collect` on loopback: every correction stored, no 5xx.

    python benchmarks/corrections_load.py [CHECKPOINT] [--clients 32] [--seconds 30] [--workers 2] [--max-rows N]

Starts `lenet-serve --workers N --collect DB` (DB in a temporary folder) on a free 127.0.0.1 port;
--clients concurrent clients, each with its own keep-alive connection and its own writer tag, post
drawing-pad PNGs (lenet.realdigits's pen set, as the page sends them) with a label for --seconds, at
most --max-requests in all. Then the server is stopped and the database read back: the rows of each
writer must be exactly the corrections it was answered 200 for, and the totals within the limits.
With --max-rows, the database fills up during the run: past the limit the answer must be 507, and
the rows stored exactly the limit. Prints and writes benchmarks/results/corrections_load.json and .md
(or --results-dir); exits non-zero when a row is missing or an answer was another 5xx or a transport
error. Only 127.0.0.1 is ever contacted; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from results_file import add_results_dir_option, text_block, write_results
from serve_load import in_threads, multipart, pad_pngs, post, start_server

from lenet.corrections import MAX_BYTES, CorrectionStore
from lenet.inference import SERVED_WEIGHTS


def run_clients(url: str, pngs: list[tuple[bytes, int]], clients: int, seconds: float, max_requests: int) -> dict:
    """Each client posts corrections until the time or its share of requests runs out: per-writer 200s,
    statuses, latencies, and the failures (other 5xx, transport errors)."""
    host, port = url.removeprefix("http://").split(":")
    stored: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(number: int) -> None:
        writer = f"client{number:02d}"
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for i in range(max_requests // clients):
                if time.monotonic() > deadline:
                    break
                data, label = pngs[(number * 31 + i) % len(pngs)]
                body, content_type = multipart(data, {"label": str((label + 1) % 10), "writer": writer})  # a wrong answer corrected
                started = time.perf_counter()
                status, _, detail = post(connection, "/feedback", body, content_type)
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] += 1
                    stored[writer] += status == 200
                    if status == 0 or (status >= 500 and status != 507):
                        failures.append(detail)
        finally:
            connection.close()

    elapsed = in_threads(client, clients)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {"seconds": elapsed, "requests": len(latencies), "per_second": len(latencies) / elapsed, "p50": quantiles[49],
            "p99": quantiles[98], "statuses": dict(statuses), "stored": dict(stored), "failures": failures}  # fmt: skip


def check_database(database: Path, answered: dict[str, int], max_rows: int | None) -> list[str]:
    """What is wrong with the database after the run: rows missing or extra per writer, limits passed."""
    store = CorrectionStore(database, create=False)
    found = store.counts("writer")
    problems = [f"{writer}: {answered.get(writer, 0)} answered 200, {found.get(writer, 0)} rows"
                for writer in sorted(set(found) | set(answered)) if found.get(writer, 0) != answered.get(writer, 0)]  # fmt: skip
    rows, stored = store.totals()
    if max_rows is not None and rows != max_rows:
        problems.append(f"{rows} rows stored, the limit is {max_rows}: the database should have filled up exactly")
    if rows > (max_rows or rows) or stored > MAX_BYTES:
        problems.append(f"{rows} rows, {stored:,} bytes: over the limits")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", nargs="?", default=str(SERVED_WEIGHTS), help="run directory, .ckpt, .onnx or .safetensors (default: the shipped model)"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the clients send (default: 30)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="requests at most, all clients together (default: 50,000)")
    parser.add_argument("--workers", type=int, default=2, help="lenet-serve worker processes writing to one database (default: 2)")
    parser.add_argument("--max-rows", type=int, help="lenet-serve --collect-max-rows: fill the database up during the run")
    add_results_dir_option(parser)
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and 0 < args.seconds <= 600 and args.max_requests >= args.clients):
        parser.error("--clients 1 to 256, --seconds above 0 up to 600, --max-requests at least --clients")

    pngs = pad_pngs(200)
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "corrections.db"
        options = ["--collect", str(database)] + (["--collect-max-rows", str(args.max_rows)] if args.max_rows else [])
        server, url = start_server(args.checkpoint, args.workers, options=options)
        try:
            result = run_clients(url, pngs, args.clients, args.seconds, args.max_requests)
        finally:
            server.terminate()
            server.wait(timeout=30)
        problems = check_database(database, result["stored"], args.max_rows)
        size = database.stat().st_size

    stored = sum(result["stored"].values())
    limit = f", --collect-max-rows {args.max_rows}" if args.max_rows else ""
    lines = [
        f"lenet-serve --workers {args.workers} --collect{limit}: {args.clients} clients for {result['seconds']:.1f} s",
        f"{result['requests']} corrections sent, {result['per_second']:.0f}/s; "
        f"p50 {1000 * result['p50']:.1f} ms, p99 {1000 * result['p99']:.1f} ms",
        "answers: " + ", ".join(f"{status or 'transport error'}: {n}" for status, n in sorted(result["statuses"].items())),
        f"rows stored: {stored} (database file {size:,} bytes); other 5xx or transport errors: {len(result['failures'])}",
        *(f"  {failure}" for failure in result["failures"][:5]),
        "every row stored, within the limits" if not problems else "PROBLEMS:",
        *(f"  {problem}" for problem in problems[:10]),
    ]
    print("\n".join(lines))
    report = {
        "checkpoint": args.checkpoint, "clients": args.clients, "workers": args.workers, "max_rows": args.max_rows,
        **{key: value for key, value in result.items() if key not in ("failures", "stored")},
        "rows_stored": stored, "database_bytes": size, "errors": len(result["failures"]), "first_errors": result["failures"][:5],
        "problems": problems,
    }  # fmt: skip
    paths = write_results("corrections_load", report, text_block("\n".join(lines)), results_dir=args.results_dir,
                          title="POST /feedback under load", packages=["fastapi", "uvicorn"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")
    sys.exit(1 if problems or result["failures"] else 0)


if __name__ == "__main__":
    main()
