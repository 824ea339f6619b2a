"""Start-up cost of the commands, as a user meets it: whole-process wall times, medians of 5.

    python benchmarks/startup.py RUN_DIR_OR_CKPT [--repeat 5]

Times, each in a fresh process, the commands taking turns: `import torch` (the floor), `import
lenet.serve`, `lenet-predict CKPT one.png` for one 280x280 drawing-pad PNG, and train.py's heavy
import, `import lightning`, with the cyclic garbage collector on and off (lenet/startup.py). Also checks that neither
`lenet.serve` nor `lenet.predict` imports Lightning, torchmetrics or Hydra.
Writes benchmarks/results/startup.json and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from results_file import add_results_dir_option, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("lightning", "torchmetrics", "hydra")


def walls(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Median wall time of each command, the commands taking turns in every round (so a slow spell on
    these shared cores falls on all of them)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, cwd=REPO, check=True, capture_output=True)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def heavy_imports(module: str) -> list[str]:
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    return [name for name in HEAVY if name in loaded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--repeat", type=int, default=5)
    add_results_dir_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        drawing = Path(folder) / "one.png"  # a 1 as the drawing page sends it: black pen on a white pad
        pad = Image.new("L", (280, 280), 255)
        ImageDraw.Draw(pad).line([(140, 50), (140, 230)], fill=0, width=20)
        pad.save(drawing)
        predict = [str(Path(sys.executable).parent / "lenet-predict"), args.checkpoint, str(drawing)]
        results = walls({
            "import torch": [sys.executable, "-c", "import torch"],
            "import lenet.serve": [sys.executable, "-c", "import lenet.serve"],
            "lenet-predict CKPT one.png": predict,
            # train.py's start-up imports, with the cyclic garbage collector on and off (lenet/startup.py)
            "import lightning": [sys.executable, "-c", "import lightning"],
            "import lightning, collector off": [sys.executable, "-c", "import gc; gc.disable(); import lightning"],
        }, args.repeat)
    report = {"repeat": args.repeat, "median_wall_seconds": results,
              "heavy_imports": {m: heavy_imports(m) for m in ("lenet.serve", "lenet.predict")}}
    for name, seconds in results.items():
        print(f"{name:32} {seconds:6.2f} s")
    imports = [f"`{module}` imports {', '.join(heavy) if heavy else 'none of ' + ', '.join(HEAVY)}."
               for module, heavy in report["heavy_imports"].items()]  # fmt: skip
    print("\n".join(imports))
    table = markdown_table(["command, a fresh process", f"median of {args.repeat}, s"], [[f"`{n}`", f"{s:.2f}"] for n, s in results.items()])
    paths = write_results("startup", report, f"{table}\n\n" + "\n".join(imports), results_dir=args.results_dir,
                          title="Start-up cost of the commands", packages=["fastapi", "hydra-core", "torchmetrics"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
