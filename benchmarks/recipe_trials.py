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
Accuracies are on the official 10,000-image MNIST test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from time_to_accuracy import TARGET, bare_loop  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", help='overrides of one candidate, space-separated ("" for the preset as is)')
    parser.add_argument("--experiment", default="fast", help="the preset the overrides apply to (conf/experiment/)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--device", default="cpu", help="where the bare loop trains: cpu or cuda")
    args = parser.parse_args(argv)
    for candidate in args.candidates:
        overrides = [f"experiment={args.experiment}", *candidate.split()]
        runs = [bare_loop(overrides, seed, validate=False, device=args.device) for seed in args.seeds]
        accuracies = [round(run["test_acc"], 4) for run in runs]
        print(json.dumps({
            "overrides": overrides,
            "seeds": args.seeds,
            "test_acc": accuracies,
            "min": min(accuracies),
            "reached_99": f"{sum(acc >= TARGET for acc in accuracies)}/{len(accuracies)}",
            "fit_seconds_median": round(statistics.median(run["fit_seconds"] for run in runs), 2),
        }), flush=True)


if __name__ == "__main__":
    main()
