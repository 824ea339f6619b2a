"""Accuracy on MNIST test digits dressed up as users' images, against the model's plain test accuracy.

    python benchmarks/user_like_accuracy.py RUN_DIR_OR_CKPT [--limit N] [--seed 0]

Each official test image becomes a "user-like" file: dark ink on light, unevenly lit, noisy paper,
the digit enlarged 2-5x and placed off-centre in a canvas several times its size, saved as PNG,
JPEG, WebP or BMP bytes. The bytes go through `lenet.preprocess.prepare_image`, the same path as
`lenet-predict` and `lenet-serve`, and the predictions are scored with `lenet.metrics`. The target:
within 0.5 points of the plain accuracy on the unmodified 28x28 images. Writes
benchmarks/results/user_like_accuracy.json and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lenet.evaluation import default_data_dir, test_split
from lenet.inference import load_model
from lenet.metrics import evaluate_predictions
from lenet.preprocess import prepare_image
from results_file import add_results_dir_option, text_block, write_results

FORMATS = [("PNG", {}), ("JPEG", {"quality": 90}), ("WEBP", {"quality": 90}), ("BMP", {})]


def user_like_bytes(digit: np.ndarray, rng: np.random.Generator, file_format: str, options: dict) -> bytes:
    """A uint8 (28, 28) MNIST digit -> encoded image bytes of it as a user might photograph or scan it."""
    scale = rng.uniform(2, 5)
    side = round(28 * scale)
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255
    height, width = (round(side * rng.uniform(2, 4)) for _ in range(2))
    # Light paper with a brightness gradient (uneven lighting) and sensor noise.
    rows, cols = np.mgrid[0:height, 0:width]
    paper = 225 + 20 * (rows / height) * rng.uniform(-1, 1) + 20 * (cols / width) * rng.uniform(-1, 1)
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    ink_level = rng.uniform(20, 80)  # pencil grey to black pen
    patch = paper[top : top + side, left : left + side]
    paper[top : top + side, left : left + side] = patch - ink * (patch - ink_level)
    paper += rng.normal(0, 6, paper.shape)
    image = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="run directory or .ckpt file")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--limit", type=int, default=10_000, help="first N test images (default: all 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    add_results_dir_option(parser)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model = load_model(args.checkpoint)
    images, labels = test_split("mnist", args.data_dir)
    images, labels = images[: args.limit], labels[: args.limit]
    plain = evaluate_predictions(model.predict_probs(images), labels)["test/acc"]

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    prepared = []
    for index, digit in enumerate(images[:, 0].numpy()):
        file_format, options = FORMATS[index % len(FORMATS)]
        prepared.append(prepare_image(user_like_bytes(digit, rng, file_format, options)))
    seconds = time.perf_counter() - started
    user_like = evaluate_predictions(model.predict_probs(torch.stack(prepared)), labels)["test/acc"]

    lines = [
        f"checkpoint:              {model.checkpoint_path}",
        f"test images:             {len(labels):,} (official MNIST test set)",
        f"plain test accuracy:     {100 * plain:.2f}%",
        f"user-like test accuracy: {100 * user_like:.2f}%  ({', '.join(f for f, _ in FORMATS)} files)",
        f"difference:              {100 * (user_like - plain):+.2f} points (target: within 0.5)",
        f"preprocessing:           {1000 * seconds / len(labels):.1f} ms per image (encode + decode + prepare)",
    ]
    print("\n".join(lines))
    example = Path("artifacts") / "user_like_example.png"
    example.parent.mkdir(exist_ok=True)
    example.write_bytes(user_like_bytes(images[0, 0].numpy(), np.random.default_rng(args.seed), "PNG", {}))
    print(f"example input:           {example}")
    result = {"checkpoint": str(model.checkpoint_path), "images": len(labels), "seed": args.seed, "plain_test_acc": plain,
              "user_like_test_acc": user_like, "ms_per_image": 1000 * seconds / len(labels)}  # fmt: skip
    paths = write_results("user_like_accuracy", result, text_block("\n".join(lines)), results_dir=args.results_dir,
                          title="Accuracy on user-like images", packages=["pillow"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
