"""Time the served model's preset as a user meets it: `python train.py experiment=served` on a fresh
cache (UNIPEN's renders drawn, then the training), and read what it reached.

    python benchmarks/served_preset.py [--seed 0] [--results-dir benchmarks/results]

Writes served_preset.json / .md: the whole command's wall time, the part spent drawing the renders
(start-up to the first training step, from the run's fit_started_at), fit and test seconds, and the
run's MNIST test accuracy and last UNIPEN validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import add_results_dir_option, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overrides", nargs="*", default=[], help="more train.py overrides (default: none)")
    add_results_dir_option(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        environment = {**os.environ, "LENET_CACHE_DIR": str(Path(scratch) / "cache")}  # nothing drawn before
        command = [sys.executable, "train.py", "experiment=served", f"seed={args.seed}", f"run_dir={run_dir}", "figures=false",
                   "trainer.enable_progress_bar=false", *args.overrides]  # fmt: skip
        started, started_at = time.perf_counter(), time.time()
        subprocess.run(command, cwd=REPO, env=environment, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        metrics = json.loads((run_dir / "metrics.json").read_text())
    result = {
        "command": " ".join(command[1:]).replace(str(run_dir), "RUN_DIR"),
        "wall_seconds": round(wall, 1),
        "start_up_and_drawing_seconds": round(metrics["fit_started_at"] - started_at, 1),
        "fit_seconds": metrics["fit_seconds"],
        "test_seconds": metrics["test_seconds"],
        "epochs": metrics["epochs"],
        "mnist_test_acc": metrics["test/acc"],
        "val_unipen_acc": metrics.get("val_unipen/acc"),
    }
    rows = [[key, value] for key, value in result.items()]
    write_results("served_preset", result, markdown_table(["", "value"], rows), results_dir=args.results_dir,
                  title="The served preset, trained from a fresh cache")  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
