"""What serving an ensemble costs: per-image latency of prepare + predict, one model against several.

    python benchmarks/ensemble_latency.py RUN_A RUN_B RUN_C [--repeats 300] [--out benchmarks/results/ensemble_latency.json]

A 280x280 drawing-pad PNG (an MNIST test digit drawn large, dark on white) goes through the product's
own path: `lenet.preprocess.prepare_image`, then `lenet.inference.predict_tensors` with the first
checkpoint alone and with all of them averaged (`load_ensemble`). One thread, as each server worker runs.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from lenet.evaluation import test_split
from lenet.inference import load_ensemble, predict_tensors
from lenet.preprocess import prepare_image


def drawing_png() -> bytes:
    digit = Image.fromarray(255 - test_split("mnist")[0][0, 0].numpy()).resize((200, 200), Image.Resampling.BILINEAR)
    pad = Image.new("L", (280, 280), 255)
    pad.paste(digit, (40, 40))
    buffer = io.BytesIO()
    pad.save(buffer, format="PNG")
    return buffer.getvalue()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ensemble_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    png = drawing_png()
    image = prepare_image(png)
    single, ensemble = load_ensemble(args.checkpoints[:1]), load_ensemble(args.checkpoints)
    result = {
        "cpu": cpu_model(),
        "members": len(args.checkpoints),
        "prepare_ms": median_ms(lambda: prepare_image(png), args.repeats),
        "predict_single_ms": median_ms(lambda: predict_tensors(single, [image]), args.repeats),
        "predict_ensemble_ms": median_ms(lambda: predict_tensors(ensemble, [image]), args.repeats),
    }
    result["added_by_ensemble_ms"] = round(result["predict_ensemble_ms"] - result["predict_single_ms"], 3)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
