"""What serving an ensemble costs: per-image latency of prepare + predict, one model against several.

    python benchmarks/ensemble_latency.py RUN_A RUN_B RUN_C [--repeats 300] [--results-dir benchmarks/results]

A 280x280 drawing-pad PNG (an MNIST test digit drawn large, dark on white) goes through the product's
own path: `lenet.preprocess.prepare_image`, then `lenet.inference.predict_tensors` with the first
checkpoint alone and with all of them averaged (`load_ensemble`). One thread, as each server worker runs.
Writes benchmarks/results/ensemble_latency.json and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time

import torch
from PIL import Image

from lenet.evaluation import test_split
from lenet.inference import load_ensemble, predict_tensors
from lenet.preprocess import prepare_image
from results_file import add_results_dir_option, markdown_table, write_results


def drawing_png() -> bytes:
    digit = Image.fromarray(255 - test_split("mnist")[0][0, 0].numpy()).resize((200, 200), Image.Resampling.BILINEAR)
    pad = Image.new("L", (280, 280), 255)
    pad.paste(digit, (40, 40))
    buffer = io.BytesIO()
    pad.save(buffer, format="PNG")
    return buffer.getvalue()


def median_ms(work, repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--repeats", type=int, default=300)
    add_results_dir_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    png = drawing_png()
    image = prepare_image(png)
    single, ensemble = load_ensemble(args.checkpoints[:1]), load_ensemble(args.checkpoints)
    result = {
        "members": len(args.checkpoints),
        "prepare_ms": median_ms(lambda: prepare_image(png), args.repeats),
        "predict_single_ms": median_ms(lambda: predict_tensors(single, [image]), args.repeats),
        "predict_ensemble_ms": median_ms(lambda: predict_tensors(ensemble, [image]), args.repeats),
    }
    result["added_by_ensemble_ms"] = round(result["predict_ensemble_ms"] - result["predict_single_ms"], 3)
    print(json.dumps(result, indent=2))
    table = markdown_table(["step, one image, one thread", "median ms"], [
        ["prepare_image (280x280 drawing-pad PNG)", result["prepare_ms"]],
        ["predict, first checkpoint alone", result["predict_single_ms"]],
        [f"predict, ensemble of {result['members']}", result["predict_ensemble_ms"]],
        ["added by the ensemble", result["added_by_ensemble_ms"]],
    ])  # fmt: skip
    paths = write_results("ensemble_latency", result, table, results_dir=args.results_dir, title="What serving an ensemble costs")
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
