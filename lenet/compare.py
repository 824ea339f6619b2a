"""One comparison of every model: networks, an ensemble and scikit-learn baselines, one table.

    lenet-compare --out benchmarks/results                           # the full comparison
    lenet-compare --epochs 1 --train-batches 5 --baseline-train-size 1000 --out /tmp/cmp   # a smoke run

Networks train through `lenet.experiment.run` from the presets in conf/experiment/ (same Hydra
configs as `python train.py experiment=...`), each in its own run directory; the ensemble averages
the probabilities of the CNN runs; baselines use the same split. All are scored by
lenet.metrics.evaluate_predictions on the official test set. Writes comparison.md, comparison.csv
and comparison.png into --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lenet.config import load_config
from lenet.evaluation import default_data_dir, test_split
from lenet.report import pyplot

# The networks: row name -> (experiment preset, extra overrides). The CNN is trained once per seed;
# the first seed is its single-model row and all of them form the ensemble.
NETWORKS: dict[str, tuple[str, list[str]]] = {
    "lenet5 + augmentation": ("lenet5_augmented", []),
    "lenet5_classic (1998)": ("lenet5_classic", []),
}
CNN_PRESET = "cnn_augmented"
BASELINE_NAMES = ("linear_svm", "svm_rbf", "random_forest", "knn")
COLUMNS = (
    "model", "kind", "test/acc", "test/precision", "test/recall", "test/f1",
    "parameters", "fit_seconds", "inference_images_per_second", "recipe",
)


def compose(preset: str, run_dir: Path, data_dir: str, overrides: Sequence[str]):
    """The real conf/train.yaml with a preset and overrides, as `python train.py` would compose it."""
    return load_config([f"experiment={preset}", f"data.data_dir={data_dir}", *overrides], run_dir=run_dir)


def images_per_second(loaded, images) -> float:
    started = time.perf_counter()
    loaded.predict_probs(images)
    return round(len(images) / (time.perf_counter() - started), 1)


def train_network(name: str, preset: str, overrides: list[str], run_dir: Path, data_dir: str, test_images) -> dict[str, Any]:
    """Train one network like `python train.py experiment=PRESET OVERRIDES` and add its inference speed."""
    from lenet.experiment import run
    from lenet.inference import load_model

    print(f"[lenet-compare] training {name}: experiment={preset} {' '.join(overrides)} -> {run_dir}", flush=True)
    # No progress bar: a comparison runs for many minutes, usually into a log file.
    metrics = run(compose(preset, run_dir, data_dir, [*overrides, "++trainer.enable_progress_bar=false"]))
    return {
        **metrics,
        "model": name,
        "kind": "network",
        "inference_images_per_second": images_per_second(load_model(run_dir), test_images),
        "recipe": " ".join([f"experiment={preset}", *overrides]),
        "run_dir": str(run_dir),
    }


def run_comparison(
    out: Path,
    data_dir: str,
    runs_dir: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    ensemble_seeds: Sequence[int] = (1, 2, 3),
    baseline_train_size: int | None = None,
    only: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Train/fit every model, write comparison.{md,csv,png} into `out`; returns the rows."""
    from lenet.baselines import fit_and_evaluate, load_data
    from lenet.ensemble import evaluate_ensemble
    from lenet.inference import load_ensemble

    out.mkdir(parents=True, exist_ok=True)
    runs_dir = runs_dir or Path("outputs") / "compare" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    test_images, test_labels = test_split("mnist", data_dir)
    wanted = (lambda name: only is None or any(part in name for part in only))
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        write_outputs(rows, out, overrides, baseline_train_size)  # after every model: a long run keeps what it finished

    for name, (preset, extra) in NETWORKS.items():
        if wanted(name):
            add(train_network(name, preset, [*extra, *overrides], runs_dir / preset, data_dir, test_images))

    if wanted("cnn"):
        cnn_rows = []
        for seed in ensemble_seeds:
            run_dir = runs_dir / f"{CNN_PRESET}_seed{seed}"
            cnn_rows.append(train_network(f"cnn (seed {seed})", CNN_PRESET, [f"seed={seed}", *overrides], run_dir, data_dir, test_images))
            add(cnn_rows[-1])
        if len(cnn_rows) > 1:
            ensemble = load_ensemble([row["run_dir"] for row in cnn_rows])
            add({
                **evaluate_ensemble(ensemble, test_images, test_labels),
                "model": f"cnn ensemble of {len(cnn_rows)} (seeds {', '.join(map(str, ensemble_seeds))})",
                "kind": "ensemble",
                "fit_seconds": round(sum(row["fit_seconds"] for row in cnn_rows), 2),
                "recipe": f"mean probabilities of the {len(cnn_rows)} cnn runs above; fit time is their sum",
            })

    baselines = [name for name in BASELINE_NAMES if wanted(name)]
    if baselines:
        data = load_data(data_dir, train_size=baseline_train_size)
        for name in baselines:
            print(f"[lenet-compare] fitting {name} on {len(data.train_y)} images", flush=True)
            result = fit_and_evaluate(name, data)
            add({**result, "model": name, "kind": "scikit-learn", "recipe": result["estimator"]})

    if not rows:
        raise ValueError(f"--only {list(only or [])} matched no model; names: {model_names()}")
    return rows


def model_names() -> list[str]:
    return [*NETWORKS, "cnn", *BASELINE_NAMES]


# ----------------------------------------------------------------------------- outputs


def write_outputs(rows: list[dict[str, Any]], out: Path, overrides: Sequence[str], baseline_train_size: int | None) -> None:
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "comparison.md").write_text(markdown(rows, overrides, baseline_train_size))
    fig = figure(rows)
    fig.savefig(out / "comparison.png", dpi=110)
    pyplot().close(fig)
    print(f"[lenet-compare] wrote {out / 'comparison.md'}, comparison.csv, comparison.png", flush=True)


def markdown(rows: list[dict[str, Any]], overrides: Sequence[str], baseline_train_size: int | None) -> str:
    threads = torch.get_num_threads()
    lines = [
        "# Model comparison on MNIST (official 10,000-image test set)",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({threads} threads). "
        "Networks train on the 54,000-image train split (6,000 held out for validation and checkpoint "
        f"choice); baselines on {baseline_train_size or '54,000'} images of the same split. "
        "Accuracy is micro, precision/recall/F1 macro over the 10 classes (lenet.metrics). "
        "Fit seconds are wall-clock training time; inference is images/s on the whole test set, one "
        "process. Parameters: trainable weights for networks; numbers stored for inference for "
        "baselines (tree nodes for the forest, the training set for k-NN).",
        "",
        f"Overrides for every network: `{' '.join(overrides) or 'none'}`.",
        "",
        "| model | kind | test acc | precision | recall | F1 | parameters | fit s | inference img/s | recipe |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        metrics = " | ".join(f"{100 * row[k]:.2f}%" if k == "test/acc" else f"{row[k]:.4f}" for k in COLUMNS[2:6])
        lines.append(
            f"| {row['model']} | {row['kind']} | {metrics} | {row['parameters']:,} | {row['fit_seconds']:.0f} | "
            f"{row['inference_images_per_second']:,.0f} | `{row['recipe']}` |"
        )
    lines += ["", "![comparison](comparison.png)", ""]
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]]):
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter
    colours = {"network": "tab:blue", "ensemble": "tab:purple", "scikit-learn": "tab:orange"}
    fig, (bars, scatter) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2.5))
    names = [row["model"] for row in rows]
    errors = [100 * (1 - row["test/acc"]) for row in rows]
    bars.barh(names, errors, color=[colours[row["kind"]] for row in rows])
    for y, (error, row) in enumerate(zip(errors, rows)):
        bars.text(error, y, f" {100 - error:.2f}%  ({row['fit_seconds']:.0f} s)", va="center", fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("test error (%), lower is better; label: accuracy (fit seconds)")
    bars.set_xlim(0, max(errors) * 1.45)
    bars.grid(axis="x", alpha=0.3)
    for row, error in zip(rows, errors):
        scatter.scatter(max(row["fit_seconds"], 0.01), error, color=colours[row["kind"]])
        scatter.annotate(row["model"], (max(row["fit_seconds"], 0.01), error), fontsize=7, xytext=(4, 2), textcoords="offset points")
    scatter.set_xscale("log")
    scatter.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.6, 1, 2 rather than 6x10^-1
    scatter.yaxis.set_major_formatter(plain)
    scatter.yaxis.set_minor_formatter(plain)
    scatter.set_xlabel("fit seconds (log scale)")
    scatter.set_ylabel("test error (%, log scale)")
    scatter.set_title("Error against training cost")
    scatter.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="lenet-compare", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="folder for comparison.md/csv/png (default: ./comparison)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run directories of the networks (default: outputs/compare/<time>)")
    parser.add_argument("--data-dir", default=default_data_dir(), help="default: $LENET_DATA_DIR or ./data")
    parser.add_argument("--epochs", type=int, default=None, help="override every preset's trainer.max_epochs (quick runs)")
    parser.add_argument("--train-batches", type=float, default=None, help="trainer.limit_train_batches for every network (quick runs)")
    parser.add_argument("--ensemble-seeds", type=int, nargs="+", default=[1, 2, 3], help="one cnn run per seed (default: 1 2 3)")
    parser.add_argument("--baseline-train-size", type=int, default=None, help="fit baselines on this many train images (default: all 54,000)")
    parser.add_argument("--only", nargs="+", default=None, help=f"models whose name contains one of these words; names: {model_names()}")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra override for every network (repeatable)")
    args = parser.parse_args(argv)

    overrides = list(args.override)
    if args.epochs is not None:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    if args.train_batches is not None:
        batches = int(args.train_batches) if args.train_batches >= 1 else args.train_batches
        overrides.append(f"++trainer.limit_train_batches={batches}")
    return run_comparison(
        args.out, args.data_dir, args.runs_dir, overrides, args.ensemble_seeds, args.baseline_train_size, args.only
    )


if __name__ == "__main__":
    main()
