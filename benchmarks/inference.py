"""Inference speed of a trained model: images/s at batch 1024 and latency at batch 1, for eager
PyTorch and ONNX Runtime, after checking they give the same probabilities.

    python benchmarks/inference.py RUN_DIR_OR_CKPT [--seconds 3]

Inputs are official MNIST test images as floats in 0..1 (what lenet.preprocess produces).
Prints a table and writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet.data import load_split  # noqa: E402
from lenet.export import export_onnx, onnx_session, probability_model  # noqa: E402
from lenet.inference import load_model  # noqa: E402

DATA_DIR = os.environ.get("LENET_DATA_DIR", str(REPO.parent / "shared" / "data"))


def throughput(predict, batch, seconds: float) -> float:
    """Images per second, repeating whole-batch predictions for about `seconds`."""
    for _ in range(3):
        predict(batch)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predict(batch)
        count += 1
    return count * len(batch) / (time.perf_counter() - started)


def latency(predict, images, repeats: int) -> dict[str, float]:
    """Per-call latency at batch 1, microseconds (median and 99th percentile)."""
    singles = [images[i : i + 1] for i in range(repeats)]
    for single in singles[:50]:
        predict(single)
    times = []
    for single in singles:
        started = time.perf_counter()
        predict(single)
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return {"p50_us": statistics.median(times), "p99_us": times[int(0.99 * (len(times) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run directory or .ckpt")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per throughput measurement")
    parser.add_argument("--repeats", type=int, default=2000, help="batch-1 calls per latency measurement")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint)
    images, _ = load_split(DATA_DIR, "mnist", "test")
    inputs = images.float() / 255  # (10000, 1, 28, 28) in 0..1
    batch = inputs[:1024]

    with tempfile.TemporaryDirectory() as folder:
        session = onnx_session(export_onnx(loaded, Path(folder) / "model.onnx"))
    eager = probability_model(loaded)

    @torch.inference_mode()
    def run_eager(x):
        return eager(x)

    @torch.inference_mode()
    def run_eager_channels_last(x):
        return loaded.predict_probs(x, batch_size=len(x))

    def run_onnx(x):
        return session.run(None, {"images": x.numpy()})[0]

    runtimes = {
        "eager PyTorch": run_eager,
        "eager PyTorch, channels_last": run_eager_channels_last,
        "ONNX Runtime": run_onnx,
    }
    reference = run_eager(batch).numpy()
    results = {}
    for name, predict in runtimes.items():
        probs = np.asarray(predict(batch))
        results[name] = {
            "max_abs_prob_diff_vs_eager": float(np.abs(probs - reference).max()),
            "same_predictions": bool((probs.argmax(1) == reference.argmax(1)).all()),
            "images_per_second_batch_1024": throughput(predict, batch, args.seconds),
            **latency(predict, inputs, args.repeats),
        }
    report = {"checkpoint": str(loaded.checkpoint_path), "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{'runtime':30} {'img/s @1024':>12} {'p50 µs @1':>10} {'p99 µs @1':>10} {'max |Δp|':>9}")
    for name, r in results.items():
        print(f"{name:30} {r['images_per_second_batch_1024']:12.0f} {r['p50_us']:10.1f} {r['p99_us']:10.1f} {r['max_abs_prob_diff_vs_eager']:9.1e}")
    print(f"Written: {args.out}")


if __name__ == "__main__":
    main()
