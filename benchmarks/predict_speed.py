"""Wall time of `lenet-predict` on drawing-pad PNGs: a directory of 3,000, and one image, start-up included.

    python benchmarks/predict_speed.py RUN_DIR_OR_CKPT [--count 3000] [--repeats 3] [--dir DIR]

Writes --count 280x280 drawing-pad PNGs (lenet.realdigits's pen set: white pad, black round pen
14-30 px, digit 110-230 px high, anywhere on the pad) to a temporary directory (or --dir, reused
when it already holds them), then times whole `lenet-predict` commands, the median of --repeats:
the directory with one preparing process per core (the default), with --jobs 1, with --native (the
C kernel) and with the model exported to ONNX (run by ONNX Runtime); one image alone; and prepare_image alone, per image, in
this process. Checks every answer against the drawn digit's label. Prints a table and writes
benchmarks/results/predict_speed.json and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet.preprocess import prepare_image  # noqa: E402
from results_file import add_results_dir_option, text_block, write_results  # noqa: E402


def write_pads(folder: Path, count: int) -> dict[str, int]:
    """`count` pad PNGs in `folder` (kept when already there) -> {file name: label}."""
    labels_file = folder / "labels.json"
    if labels_file.is_file() and len(json.loads(labels_file.read_text())) == count:
        return json.loads(labels_file.read_text())
    from lenet.realdigits import make_set

    digits = make_set("pen", limit=count, count=max(count, 2000))
    labels = {}
    for index, (image, label) in enumerate(zip(digits.images, digits.labels)):
        Image.fromarray(image).save(folder / f"{index:05d}.png")
        labels[f"{index:05d}.png"] = int(label)
    labels_file.write_text(json.dumps(labels))
    return labels


def timed(command: list[str], repeats: int) -> tuple[float, str]:
    """Median wall seconds of a command over `repeats` runs, and the last run's stdout."""
    times, out = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
        out = result.stdout
    return statistics.median(times), out


def accuracy(output: str, labels: dict[str, int]) -> float:
    records = [json.loads(line) for line in output.splitlines()]
    assert len(records) == len(labels), "an answer is missing"
    return sum(r["digit"] == labels[Path(r["path"]).name] for r in records) / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run directory or .ckpt")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to write (or find) the PNGs (default: a temporary directory)")
    add_results_dir_option(parser)
    args = parser.parse_args()

    script = str(Path(sys.executable).with_name("lenet-predict"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch) / "pads"
        folder.mkdir(parents=True, exist_ok=True)
        labels = write_pads(folder, args.count)
        onnx = Path(scratch) / "model.onnx"
        subprocess.run([str(Path(sys.executable).with_name("lenet-export")), args.checkpoint, "--onnx", str(onnx)],
                       check=True, capture_output=True)  # fmt: skip
        runs = {
            "directory, one process per core (default)": [script, args.checkpoint, str(folder), "--json"],
            "directory, --jobs 1": [script, args.checkpoint, str(folder), "--json", "--jobs", "1"],
            "directory, --native (C kernel)": [script, args.checkpoint, str(folder), "--json", "--native"],
            "directory, exported .onnx (ONNX Runtime)": [script, str(onnx), str(folder), "--json"],
        }
        results = {}
        for name, command in runs.items():
            seconds, output = timed(command, args.repeats)
            results[name] = {"seconds": seconds, "ms_per_image": 1000 * seconds / args.count, "accuracy": accuracy(output, labels)}
        one = str(folder / "00000.png")
        results["one image"] = {"seconds": timed([script, args.checkpoint, one], args.repeats)[0]}
        paths = sorted(folder.glob("*.png"))[:500]
        prepare_image(paths[-1])  # imports torch (prepare_image's tensor): not part of the per-image time
        started = time.perf_counter()
        for path in paths:
            prepare_image(path)
        results["prepare_image alone, this process"] = {"ms_per_image": 1000 * (time.perf_counter() - started) / len(paths)}

    report = {"checkpoint": args.checkpoint, "images": args.count, "repeats": args.repeats, "cpus": os.cpu_count(), "results": results}
    lines = [f"lenet-predict on {args.count:,} drawing-pad PNGs (280x280), {os.cpu_count()} CPU cores, median of {args.repeats}:"]
    for name, r in results.items():
        parts = [f"{r['seconds']:.2f} s" if "seconds" in r else "", f"{r['ms_per_image']:.2f} ms/image" if "ms_per_image" in r else ""]
        parts.append(f"{100 * r['accuracy']:.2f}% correct" if "accuracy" in r else "")
        lines.append(f"  {name:44} " + ", ".join(p for p in parts if p))
    print("\n".join(lines))
    paths = write_results("predict_speed", report, text_block("\n".join(lines)), results_dir=args.results_dir,
                          title="Wall time of lenet-predict", packages=["onnxruntime", "pillow"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
