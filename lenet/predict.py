"""Predict the digit in image files: `lenet-predict [RUN_DIR_OR_CKPT] IMAGE_OR_DIR ... [--json] [--top-k K]`.

Without a model, the one shipped inside the package reads the images (lenet/served/: LeNet-5
trained on MNIST and UNIPEN's writers, `experiment=served`).

Every image goes through `lenet.preprocess.prepare_image`, the same path as the REST API, so a
photo, a scan or a drawing is read the way MNIST digits were prepared. Directories are read in
batches; a file that cannot be read, a broken symlink or a directory without images is reported on
its own line and the others are still predicted, with a non-zero exit status at the end.

Preparing the images is nearly all the work (the network reads a batch of 256 in a few
milliseconds), so from PARALLEL_FROM images on they are prepared in one process per core (--jobs),
answers still printed in the order given. Those processes are forked before torch is imported
(they need numpy, scipy and Pillow only) and prepare while this one imports torch and loads the
model. A checkpoint runs in PyTorch (a LeNet-5 one in the C kernel of lenet.native with --native);
an exported .onnx file (`lenet-export`) in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lenet.preprocess import ImageError, prepare_array
from lenet.startup import end_of_startup

if TYPE_CHECKING:
    from lenet.inference import Prediction

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PARALLEL_FROM = 32  # fewer images are prepared in this process: starting workers would cost more than it saves


def image_paths(inputs: list[str]) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for each image to predict: files as given, directories expanded to their image
    files (by suffix), sorted, recursively. (path, problem) for what cannot be predicted and would
    otherwise pass unseen: a broken symlink in a directory, a directory without any image."""
    for name in inputs:
        path = Path(name)
        if not path.is_dir():
            yield path, None  # a missing or unreadable file is reported by prepare_image
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))
        if not found:
            yield path, f"the directory holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}): nothing to predict there."
        for image in found:
            yield image, broken_link(image)


def broken_link(path: Path) -> str | None:
    """What is wrong with a symlink that leads nowhere (None for anything else)."""
    if not path.is_symlink() or path.exists():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"a symlink to {os.readlink(path)}, which does not exist: fix or delete the link."
    except (OSError, RuntimeError):  # ELOOP; Python 3.11 raises RuntimeError("Symlink loop ...")
        return "a symlink loop (it leads back to itself): fix or delete the link."
    return f"a symlink that cannot be followed ({os.readlink(path)}): fix or delete the link."


def prepare_file(item: tuple[Path, str | None]) -> np.ndarray | str:
    """One image prepared by prepare_image's own path, (1, 28, 28) float32, or why it cannot be (what
    image_paths found, or the ImageError)."""
    path, problem = item
    if problem:
        return problem
    try:
        return prepare_array(path)[None]  # (1, 28, 28)
    except ImageError as error:
        return str(error)


def in_parallel(count: int, jobs: int) -> bool:
    """Whether `count` images are prepared by `jobs` worker processes (fork only: spawn would import
    everything again in each)."""
    return jobs > 1 and count >= PARALLEL_FROM and "fork" in multiprocessing.get_all_start_methods()


@contextmanager
def preparer(count: int, jobs: int) -> Iterator:
    """A function mapping (path, problem) items to `prepare_file`'s answers, in order: in `jobs` forked
    worker processes when `in_parallel`, else here."""
    if not in_parallel(count, jobs):
        yield lambda items: map(prepare_file, items)
        return
    # gc.enable: the workers are forked during cli()'s start-up, with the collector off.
    with multiprocessing.get_context("fork").Pool(min(jobs, count), initializer=gc.enable) as pool:
        yield lambda items: pool.imap(prepare_file, items, chunksize=8)


def batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def format_line(path: Path, prediction: Prediction, top_k: int, as_json: bool) -> str:
    ranked = prediction.top_k(max(top_k, 2 if prediction.unsure else 1))
    if as_json:
        record = {"path": str(path), "digit": prediction.digit, "confidence": round(prediction.confidence, 6)}
        record.update(unsure=prediction.unsure, runner_up=prediction.runner_up, probs=prediction.probs)
        if top_k > 1:
            record["top_k"] = [{"digit": d, "probability": p} for d, p in ranked]
        return json.dumps(record)
    answer = ", ".join(f"{d} ({100 * p:.1f}%)" for d, p in ranked)
    return f"{path}: unsure: {answer}" if prediction.unsure else f"{path}: {answer}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lenet-predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "inputs", nargs="+", metavar="[MODEL] IMAGE",
        help="MODEL (optional; default: the model shipped in the package): run directory (uses checkpoints/best.ckpt), "
        ".ckpt, exported .onnx or .safetensors file; several, comma-separated, are averaged (an ensemble). "
        "IMAGE: image files (PNG, JPEG, BMP, GIF, WebP, TIFF) or directories",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per line (default: text)")
    parser.add_argument("--top-k", type=int, default=1, help="show the K most likely digits (default: 1)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--native", action="store_true",
        help="run LeNet-5 checkpoints in the project's C kernel (lenet/native.py: built once with this machine's C compiler; "
        "the same answers as PyTorch, faster)",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1,
        help=f"processes preparing images, for {PARALLEL_FROM} images or more (default: one per core)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.checkpoint, args.images = split_model(args.inputs)
    if not args.images:
        parser.error(f"no image given after the model {args.checkpoint}: name image files or directories")
    if not 1 <= args.top_k <= 10:
        parser.error(f"--top-k must be between 1 and 10, got {args.top_k}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive integer, got {args.jobs}")
    if args.native and args.device != "cpu":
        parser.error(f"--native runs on the CPU: leave out --device {args.device} or --native")
    return args


def split_model(inputs: list[str]) -> tuple[str, list[str]]:
    """(model, images) of `[MODEL] IMAGE ...`: the first input is the model ("" for the shipped one) unless it
    is the only input, an image file or a directory holding images (and no checkpoint)."""
    first = Path(inputs[0])
    run_dir = (first / "checkpoints" / "best.ckpt").is_file() or (first / "best.ckpt").is_file()  # its figures are PNGs
    image_folder = first.is_dir() and not run_dir and any(p.suffix.lower() in IMAGE_SUFFIXES for p in first.rglob("*"))
    if len(inputs) == 1 or first.suffix.lower() in IMAGE_SUFFIXES or image_folder:
        return "", inputs
    return inputs[0], inputs[1:]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [name for name in args.checkpoint.split(",") if name]
    items = list(image_paths(args.images))
    parallel = in_parallel(len(items), args.jobs)
    with preparer(len(items), args.jobs) as prepare_all:
        prepared = prepare_all(items)  # the workers start now, and prepare while torch loads here
        import torch

        from lenet.inference import LOAD_ERRORS, SERVED_WEIGHTS, load_ensemble, load_problem

        end_of_startup()  # cli() imported without the collector: on again, torch's objects frozen

        threads = torch.get_num_threads()
        if parallel:  # the workers have the cores: the network reads a batch of 256 in milliseconds on one
            torch.set_num_threads(1)
        names = names or [str(SERVED_WEIGHTS)]
        try:
            model = load_ensemble(names, args.device, cpu_threads=1 if parallel else 0, native=args.native)
            failures = predict_all(model, items, prepared, args)
        except LOAD_ERRORS as error:
            print(f"lenet-predict: {load_problem(error, names)}", file=sys.stderr)
            return 2
        finally:
            torch.set_num_threads(threads)
    if failures:
        print(f"lenet-predict: {failures} input(s) could not be predicted (see above)", file=sys.stderr)
    return 1 if failures else 0


def predict_all(model, items: list[tuple[Path, str | None]], prepared: Iterable, args: argparse.Namespace) -> int:
    """Print one answer (or problem) per item, in order, predicting a batch at a time; the failures."""
    import torch

    from lenet.inference import predict_tensors

    failures = 0
    for batch in batches(zip(items, prepared), args.batch_size):
        images = [torch.from_numpy(result) for _, result in batch if not isinstance(result, str)]
        predictions = iter(predict_tensors(model, images))
        for (path, _), result in batch:  # in the order given
            if isinstance(result, str):  # the prepared image, or why there is none
                failures += 1
                print(f"lenet-predict: {path}: {result}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"path": str(path), "error": result}))
            else:
                print(format_line(path, next(predictions), args.top_k, args.json))
        sys.stdout.flush()
    return failures


def cli() -> None:
    """The `lenet-predict` command: main(), its start-up (importing torch) without the cyclic garbage
    collector (lenet/startup.py), then an exit that spares the interpreter's last garbage collections
    over every object torch created (about 0.4 s of each command)."""
    gc.disable()
    status = main()
    sys.stdout.flush()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    cli()
