"""Predict the digit in image files: `lenet-predict RUN_DIR_OR_CKPT IMAGE_OR_DIR ... [--json] [--top-k K]`.

Every image goes through `lenet.preprocess.prepare_image`, the same path as the REST API, so a
photo, a scan or a drawing is read the way MNIST digits were prepared. Directories are read in
batches; a file that cannot be read is reported on its own line and the others are still predicted,
with a non-zero exit status at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from lenet.inference import CheckpointError, Prediction, load_ensemble, predict_tensors
from lenet.preprocess import ImageError, prepare_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_paths(inputs: list[str]) -> Iterator[Path]:
    """Files as given; directories expanded to their image files (by suffix), sorted, recursively."""
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path  # a missing or unreadable file is reported by prepare_image


def batches(paths: Iterator[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for path in paths:
        batch.append(path)
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
    try:
        model = load_ensemble([name for name in args.checkpoint.split(",") if name], args.device)
    except (CheckpointError, ValueError) as error:
        print(f"lenet-predict: {error}", file=sys.stderr)
        return 2

    failures = 0
    for batch in batches(image_paths(args.images), args.batch_size):
        prepared: dict[Path, torch.Tensor] = {}
        errors: dict[Path, ImageError] = {}
        for path in batch:
            try:
                prepared[path] = prepare_image(path)
            except ImageError as error:
                errors[path] = error
        predictions = dict(zip(prepared, predict_tensors(model, list(prepared.values()))))
        for path in batch:  # in the order given
            if path in errors:
                failures += 1
                print(f"lenet-predict: {path}: {errors[path]}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"path": str(path), "error": str(errors[path])}))
            else:
                print(format_line(path, predictions[path], args.top_k, args.json))
        sys.stdout.flush()
    if failures:
        print(f"lenet-predict: {failures} file(s) could not be predicted (see above)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
