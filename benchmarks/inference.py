"""Inference speed of a trained model: images/s at batch 1024 and latency at batch 1, for eager
PyTorch, ONNX Runtime and the project's C kernel (lenet.native, LeNet-5 only; on
x86-64 also built for AVX2 and for SSE2), on 1 thread and on one per core, after checking they give
the same probabilities and scoring each on the whole MNIST test set.

    python benchmarks/inference.py RUN_DIR_OR_CKPT [--seconds 3]

Inputs are official MNIST test images as floats in 0..1 (what lenet.preprocess produces).
Prints a table and writes benchmarks/results/inference.json and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet.datafiles import load_split  # noqa: E402
from lenet.export import export_onnx, probability_model  # noqa: E402
from lenet.inference import load_model, onnx_session  # noqa: E402
from lenet.native import NativeError, cpu_identity, load_native  # noqa: E402
from results_file import add_results_dir_option, markdown_table, write_results  # noqa: E402

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
    add_results_dir_option(parser)
    args = parser.parse_args()

    loaded = load_model(args.checkpoint)
    images, labels = load_split(DATA_DIR, "mnist", "test")
    inputs = (images.float() / 255).numpy()  # (10000, 1, 28, 28) in 0..1
    batch = inputs[:1024]
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export_onnx(loaded, Path(folder) / "model.onnx")
        sessions = {
            f"ONNX Runtime, {threads} thread{'s' if threads > 1 else ''}": onnx_session(onnx_path, threads)
            for threads in sorted({1, cores})
        }
    eager = probability_model(loaded)

    @torch.inference_mode()
    def run_eager(x):
        return eager(torch.from_numpy(x)).numpy()

    @torch.inference_mode()
    def run_eager_channels_last(x):  # the path of lenet-predict and lenet-serve for checkpoints
        return loaded.predict_probs(torch.from_numpy(x), batch_size=len(x)).numpy()

    def onnx_runner(session):
        return lambda x: session.run(None, {"images": x})[0]

    runtimes = {"eager PyTorch": run_eager, "eager PyTorch, channels_last": run_eager_channels_last}
    runtimes.update({name: onnx_runner(session) for name, session in sessions.items()})
    # The C kernel as --native builds it, and on x86-64 also built for CPUs without AVX-512 (AVX2,
    # where this CPU has it) and for any x86-64 (SSE2), as other machines would run it.
    builds = [("native", "--native", threads) for threads in sorted({1, cores})]
    if platform.machine() in ("x86_64", "AMD64"):
        builds += [("x86-64-v3", "built for AVX2", cores)] if "avx2" in cpu_identity().split() else []
        builds += [("x86-64", "built for SSE2", cores)]
    try:
        for march, label, threads in builds:
            kernel = load_native(loaded, threads, march)  # one image always runs on the calling thread
            lanes = kernel.library.lenet5_lanes()  # what the compiler made of it: 16, 8 or 4 floats a vector
            name = f"C kernel ({label}, {lanes} lanes), {threads} thread{'s' if threads > 1 else ''}"
            runtimes[name] = lambda x, kernel=kernel: kernel.predict_probs(torch.from_numpy(x)).numpy()
    except NativeError as error:
        print(f"C kernel left out: {error}")
    reference = run_eager(inputs)
    results = {}
    for name, predict in runtimes.items():
        probs = np.concatenate([predict(inputs[i : i + 1000]) for i in range(0, len(inputs), 1000)])
        results[name] = {
            "max_abs_prob_diff_vs_eager": float(np.abs(probs - reference).max()),
            "same_predictions": float((probs.argmax(1) == reference.argmax(1)).mean()),
            "test_accuracy": float((probs.argmax(1) == labels.numpy()).mean()),
            "images_per_second_batch_1024": throughput(predict, batch, args.seconds),
            **latency(predict, inputs, args.repeats),
        }
    # What this machine can use: every runtime, with the C kernel as --native builds it.
    usable = {name: r for name, r in results.items() if "built for" not in name}
    fastest = max(usable, key=lambda name: usable[name]["images_per_second_batch_1024"])
    quickest = min(usable, key=lambda name: usable[name]["p50_us"])
    report = {
        "checkpoint": str(loaded.checkpoint_path), "threads": torch.get_num_threads(), "cpus": cores,
        "fastest_batch_1024": fastest, "lowest_latency_batch_1": quickest,
        "results": results,
    }  # fmt: skip
    print(f"{'runtime':44} {'img/s @1024':>12} {'p50 µs @1':>10} {'p99 µs @1':>10} {'max |Δp|':>9} {'agree':>7} {'test acc':>9}")
    for name, r in results.items():
        print(
            f"{name:44} {r['images_per_second_batch_1024']:12.0f} {r['p50_us']:10.1f} {r['p99_us']:10.1f} "
            f"{r['max_abs_prob_diff_vs_eager']:9.1e} {100 * r['same_predictions']:6.2f}% {100 * r['test_accuracy']:8.2f}%"
        )
    print(f"fastest at batch 1024: {fastest}; lowest latency at batch 1: {quickest}")
    table = markdown_table(
        ["runtime", "img/s @1024", "p50 µs @1", "p99 µs @1", "max |Δp|", "agree", "test acc"],
        [[name, f"{r['images_per_second_batch_1024']:,.0f}", f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}",
          f"{r['max_abs_prob_diff_vs_eager']:.1e}", f"{100 * r['same_predictions']:.2f}%", f"{100 * r['test_accuracy']:.2f}%"]
         for name, r in results.items()],
    )  # fmt: skip
    body = f"{table}\n\nFastest at batch 1024: {fastest}; lowest latency at batch 1: {quickest}."
    paths = write_results("inference", report, body, results_dir=args.results_dir, title="Inference speed",
                          packages=["onnx", "onnxruntime"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
