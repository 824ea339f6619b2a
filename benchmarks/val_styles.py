"""Recipes compared on validation data only: UNIPEN's validation writers drawn in every style, and MNIST's
validation digits. Never the test writers, USPS or MNIST's test set: those are read once a recipe is chosen
(benchmarks/real_digits.py).

    python benchmarks/val_styles.py [LABEL=]MODEL[,MODEL...] [...] [--styles page,grey_scan,...]
        [--data-dir DIR] [--name val_styles] [--results-dir DIR]

Each positional argument is one model: a run directory, .ckpt or .safetensors file, or several joined by
commas (an ensemble), named by an optional `LABEL=` prefix. The 1,790 digits of UNIPEN's 21 validation
writers are drawn once in each style of lenet.render (seed 0, cached as training renders are) and
prepared as served images are; MNIST's validation digits are the 6,000 every run held out. Per model
and set: accuracy, mistakes, and the mean negative log-likelihood of the true digit (how well the
probabilities are calibrated, which the "unsure" answers rest on) and the expected calibration error
(lenet.calibration). Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from lenet.calibration import calibration_error  # noqa: E402
from lenet.data import mnist_validation  # noqa: E402
from lenet.evaluation import default_data_dir, evaluate  # noqa: E402
from lenet.inference import load_ensemble  # noqa: E402
from lenet.render import STYLES  # noqa: E402
from lenet.unipen_images import load_renders  # noqa: E402
from results_file import add_results_dir_option, markdown_table, write_results  # noqa: E402


def validation_sets(data_dir: str, styles: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """`val_unipen_<style>` for each style (UNIPEN's validation writers, one drawing each) and `val_mnist`."""
    sets = {}
    for style in styles:
        part = load_renders(data_dir, "val", 1, {style: 1.0}, log=lambda line: print(line, file=sys.stderr))
        sets[f"val_unipen_{style}"] = (part.images[:, 0], part.labels)
    sets["val_mnist"] = mnist_validation(data_dir)
    return sets


def scores(model, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy (lenet.evaluation's), mistakes, mean negative log-likelihood of the true digit, calibration error."""
    evaluation = evaluate(model, images, labels)
    accuracy = evaluation.metrics["test/acc"]
    true = evaluation.probs[torch.arange(len(labels)), labels].clamp_min(1e-12)
    return {"accuracy": accuracy, "wrong": round((1 - accuracy) * len(labels)), "nll": float(-true.log().mean()),
            "calibration_error": calibration_error(evaluation.probs, labels)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="[LABEL=]run directory, .ckpt or .safetensors; comma-joined: an ensemble")
    parser.add_argument("--styles", default=",".join(STYLES), help=f"drawing styles of the validation writers (default: {','.join(STYLES)})")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="val_styles", help="results file name (default: val_styles)")
    add_results_dir_option(parser)
    args = parser.parse_args(argv)

    styles = args.styles.split(",")
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        parser.error(f"unknown style(s) {unknown}; choose from {', '.join(STYLES)}")
    sets = validation_sets(args.data_dir, styles)
    rows, results = [], []
    for spec in args.models:
        label, _, paths = spec.rpartition("=")
        model = load_ensemble(paths.split(","))
        measured = {name: scores(model, images, labels) for name, (images, labels) in sets.items()}
        results.append({"model": label or paths, "paths": paths.split(","), "sets": measured})
        first = measured[f"val_unipen_{styles[0]}"]
        rows.append([label or paths, *(f"{100 * m['accuracy']:.2f} ({m['wrong']})" for m in measured.values()),
                     f"{first['nll']:.4f}", f"{first['calibration_error']:.3f}"])  # fmt: skip
        print(label or paths, " ".join(f"{name} {m['accuracy']:.2%} ({m['wrong']})" for name, m in measured.items()))
    counts = {name: len(labels) for name, (_, labels) in sets.items()}
    headers = ["model", *(f"{name} ({counts[name]:,})" for name in sets), f"NLL val_unipen_{styles[0]}", f"ECE val_unipen_{styles[0]}"]
    intro = ("Accuracy % (mistakes) on validation data only; NLL: mean negative log-likelihood of the true digit; "
             "ECE: expected calibration error (15 bins).\n\n")  # fmt: skip
    write_results(args.name, {"styles": styles, "counts": counts, "models": results}, intro + markdown_table(headers, rows) + "\n",
                  results_dir=args.results_dir)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
