"""Predict the digit in image files: `lenet-predict RUN_DIR_OR_CKPT IMAGE_OR_DIR ... [--json] [--top-k K]`.

Every image goes through `lenet.preprocess.prepare_image`, the same path as the REST API, so a
photo, a scan or a drawing is read the way MNIST digits were prepared. Directories are read in
batches; a file that cannot be read, a broken symlink or a directory without images is reported on
its own line and the others are still predicted, with a non-zero exit status at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from lenet.inference import CheckpointError, Prediction, load_ensemble, predict_tensors
from lenet.preprocess import ImageError, prepare_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def batches(items: Iterator[tuple[Path, str | None]], size: int) -> Iterator[list[tuple[Path, str | None]]]:
    batch: list[tuple[Path, str | None]] = []
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
        "checkpoint",
        help="run directory (uses checkpoints/best.ckpt) or .ckpt file; several, comma-separated, are averaged (an ensemble)",
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF, WebP, TIFF) or directories")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (default: text)")
    parser.add_argument("--top-k", type=int, default=1, help="show the K most likely digits (default: 1)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= 10:
        parser.error(f"--top-k must be between 1 and 10, got {args.top_k}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [name for name in args.checkpoint.split(",") if name]
    try:
        model = load_ensemble(names, args.device)
    except (CheckpointError, ValueError, TypeError, RuntimeError) as error:  # one line, never a traceback
        detail = str(error)
        if not isinstance(error, CheckpointError):  # a failure the checks before building did not foresee
            detail = f"{', '.join(names)} cannot be used ({error}): use a checkpoint written by `python train.py`."
        print(f"lenet-predict: {detail}", file=sys.stderr)
        return 2

    failures = 0
    for batch in batches(image_paths(args.images), args.batch_size):
        results: list[torch.Tensor | str] = []  # the prepared image, or why there is none
        for path, problem in batch:
            try:
                results.append(problem or prepare_image(path))
            except ImageError as error:
                results.append(str(error))
        predictions = iter(predict_tensors(model, [r for r in results if isinstance(r, torch.Tensor)]))
        for (path, _), result in zip(batch, results):  # in the order given
            if isinstance(result, str):
                failures += 1
                print(f"lenet-predict: {path}: {result}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"path": str(path), "error": result}))
            else:
                print(format_line(path, next(predictions), args.top_k, args.json))
        sys.stdout.flush()
    if failures:
        print(f"lenet-predict: {failures} input(s) could not be predicted (see above)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
