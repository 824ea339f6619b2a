"""REST API and drawing page for trained models: `lenet-serve [--ckpt RUN_DIR [--ckpt RUN_DIR ...]] [--port 8000] [--collect FILE]`.

Without --ckpt it serves the model shipped inside the package (lenet/served/: LeNet-5 trained on
MNIST and UNIPEN's writers, `experiment=served`).

The command checks its arguments and loads the model(s) once, so a mistake is one line, then runs
uvicorn, which makes the app in each worker process from settings passed through the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from lenet.corrections import MAX_BYTES, MAX_ROWS, CorrectionsError, CorrectionStore
from lenet.serve.app import create_app
from lenet.serve.limits import MAX_HEAD_BYTES, MAX_UPLOAD_BYTES, HeadTimeoutH11, map_large_buffers_apart
from lenet.startup import imports_without_collector

CONFIG_VARIABLE = "LENET_SERVE_CONFIG"  # create_app's arguments, as JSON, for each uvicorn worker process


def app_from_environment() -> FastAPI:
    """The app `lenet-serve` runs in each uvicorn worker process, configured through the environment,
    made without the cyclic garbage collector (lenet/startup.py)."""
    with imports_without_collector():
        import torch

        # One request is one small forward pass: requests run in parallel threads instead of splitting one.
        torch.set_num_threads(1)
        map_large_buffers_apart()
        return create_app(**json.loads(os.environ[CONFIG_VARIABLE]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lenet-serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt",
        action="append",
        help="run directory (uses checkpoints/best.ckpt), .ckpt, exported .onnx or .safetensors file; repeat it, or separate with "
        "commas, to serve an ensemble (default: the model shipped in the package)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model (default: 1)")
    parser.add_argument(
        "--native", action="store_true",
        help="run LeNet-5 checkpoints in the project's C kernel (lenet/native.py: built once with this machine's C compiler)",
    )  # fmt: skip
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 1e6, help="largest image accepted, in MB (default: 5)")
    parser.add_argument(
        "--collect", metavar="FILE",
        help="keep the corrections sent to POST /feedback (and the page's 'Wrong?' buttons) in this SQLite file, "
        "created when missing (default: off; see lenet-corrections)",
    )  # fmt: skip
    parser.add_argument("--collect-max-rows", type=int, default=MAX_ROWS, help=f"corrections kept at most (default: {MAX_ROWS:,})")
    parser.add_argument(
        "--collect-max-mb", type=float, default=MAX_BYTES / 1e6,
        help=f"MB of images, uploads and tags kept at most (default: {MAX_BYTES / 1e6:g})",
    )  # fmt: skip
    parser.add_argument(
        "--unsure-below",
        type=float,
        default=None,
        help="answers whose top probability is below this are marked unsure (default: lenet.inference.UNSURE_BELOW, 0.5)",
    )
    args = parser.parse_args(argv)
    args.ckpt = checkpoint_names(parser, args.ckpt)
    if args.workers < 1 or not 0 < args.port < 65536:
        parser.error(f"--workers must be at least 1 and --port between 1 and 65535 (got {args.workers} and {args.port})")
    if not 0 < args.max_upload_mb <= 100:
        parser.error(f"--max-upload-mb must be above 0 and at most 100, got {args.max_upload_mb:g}")
    if args.collect_max_rows < 1 or args.collect_max_mb <= 0:
        parser.error(f"--collect-max-rows and --collect-max-mb must be above 0 (got {args.collect_max_rows} and {args.collect_max_mb:g})")
    if args.unsure_below is not None and not 0 <= args.unsure_below <= 1:
        parser.error(f"--unsure-below is a probability between 0 and 1, got {args.unsure_below:g}")
    return args


def checkpoint_names(parser: argparse.ArgumentParser, values: list[str] | None) -> list[str]:
    """The models to serve, from the repeated or comma-separated --ckpt values (none: the shipped model)."""
    if values is None:
        with imports_without_collector():
            from lenet.inference import SERVED_WEIGHTS
        return [str(SERVED_WEIGHTS)]
    names = [name for value in values for name in value.split(",") if name]
    if not names:
        parser.error("--ckpt needs a run directory or .ckpt file")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = model_problem(args.ckpt, args.native) or collect_problem(args.collect)
    if problem:
        print(f"lenet-serve: {problem}", file=sys.stderr)
        return 2
    os.environ[CONFIG_VARIABLE] = json.dumps(app_settings(args))
    run_server(args)
    return 0


def model_problem(names: list[str], native: bool) -> str | None:
    """Load the models once here, so a bad one is one line rather than a failure in every worker
    (and the C kernel is built once): the line, or None when they load."""
    with imports_without_collector():
        from lenet.inference import LOAD_ERRORS, load_ensemble, load_problem

        try:
            load_ensemble(names, native=native)
        except LOAD_ERRORS as error:
            return load_problem(error, names)
    return None


def collect_problem(path: str | None) -> str | None:
    """Open the corrections database once here (made when missing), so a damaged or foreign file is one line."""
    if path is None:
        return None
    try:
        CorrectionStore(path)
    except CorrectionsError as error:
        return str(error)
    return None


def app_settings(args: argparse.Namespace) -> dict[str, Any]:
    """create_app's arguments for the workers: only those the command line sets, the rest left to its defaults."""
    settings: dict[str, Any] = {
        "ckpts": [str(Path(name).resolve()) for name in args.ckpt],
        "max_upload_bytes": int(args.max_upload_mb * 1e6),
    }
    if args.unsure_below is not None:
        settings["unsure_below"] = args.unsure_below
    if args.native:
        settings["native"] = True
    if args.collect:
        settings["collect"] = str(Path(args.collect).resolve())
        settings["collect_max_rows"] = args.collect_max_rows
        settings["collect_max_bytes"] = int(args.collect_max_mb * 1e6)
    return settings


def run_server(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run(
        "lenet.serve.cli:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=HeadTimeoutH11,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        # Each worker imports torch before it answers uvicorn's health pings; on a busy machine that
        # takes longer than uvicorn's default 5 s, after which it would kill and restart the worker.
        timeout_worker_healthcheck=120,
    )
