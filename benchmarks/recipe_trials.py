"""Test accuracy of candidate recipes over seeds, trained as the bare PyTorch loop of time_to_accuracy.py.

Each argument is one candidate: train.py overrides separated by spaces, applied on top of --experiment.
The bare loop follows the composed recipe step for step (same data split and order, optimiser and
schedule), and `python train.py` reaches the same test accuracies seed for seed, in less time than a
whole train.py process per trial:

    python benchmarks/recipe_trials.py "" "model.optimizer.betas=[0.9,0.98]"           # experiment=fast as is, and a variant
    python benchmarks/recipe_trials.py "" --seeds 6 7 8 9 10                            # seeds nothing was tuned on
    python benchmarks/recipe_trials.py --experiment fast_gpu "trainer.max_epochs=5"     # on the CPU: CPU arithmetic
    python benchmarks/recipe_trials.py --experiment fast_gpu --device cuda ""            # on a GPU (no deterministic kernels)

Prints one JSON line per candidate: its overrides, the accuracy per seed, the minimum, how many
seeds reached 99%, and the median fit time (for orientation only: trials are not interleaved).
Accuracies are on the official 10,000-image MNIST test set. Writes benchmarks/results/recipe_trials.json
and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import add_results_dir_option, markdown_table, write_results  # noqa: E402
from time_to_accuracy import TARGET, bare_loop  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", help='overrides of one candidate, space-separated ("" for the preset as is)')
    parser.add_argument("--experiment", default="fast", help="the preset the overrides apply to (conf/experiment/)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--device", default="cpu", help="where the bare loop trains: cpu or cuda")
    add_results_dir_option(parser)
    args = parser.parse_args(argv)
    trials = []
    for candidate in args.candidates:
        overrides = [f"experiment={args.experiment}", *candidate.split()]
        runs = [bare_loop(overrides, seed, validate=False, device=args.device) for seed in args.seeds]
        accuracies = [round(run["test_acc"], 4) for run in runs]
        trials.append({
            "overrides": overrides,
            "seeds": args.seeds,
            "test_acc": accuracies,
            "min": min(accuracies),
            "reached_99": f"{sum(acc >= TARGET for acc in accuracies)}/{len(accuracies)}",
            "fit_seconds_median": round(statistics.median(run["fit_seconds"] for run in runs), 2),
        })
        print(json.dumps(trials[-1]), flush=True)
    table = markdown_table(
        ["overrides", "test accuracy per seed", "min", "≥ 99%", "median fit s"],
        [[f"`{' '.join(t['overrides'])}`", ", ".join(f"{a:.4f}" for a in t["test_acc"]), f"{t['min']:.4f}", t["reached_99"],
          t["fit_seconds_median"]] for t in trials],
    )  # fmt: skip
    body = f"Bare PyTorch loop on {args.device}, seeds {', '.join(map(str, args.seeds))}; official MNIST test set.\n\n{table}"
    paths = write_results("recipe_trials", {"device": args.device, "trials": trials}, body, results_dir=args.results_dir,
                          title="Candidate recipes over seeds")  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
