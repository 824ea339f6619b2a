"""One comparison of every model: networks, their seed ensembles and scikit-learn baselines, one table.

    python train.py -m experiment=cnn_augmented,lenet5_classic seed=1,2,3 hydra.sweep.dir=multirun/cmp
    lenet-compare --from-sweep multirun/cmp --out benchmarks/results    # the sweep's jobs + ensembles + baselines
    lenet-compare --from-sweep multirun/cmp multirun/kd --out ...       # the jobs of several sweeps, one table
    lenet-compare --out benchmarks/results                              # or train the presets below here

Networks are what Hydra multiruns wrote (each job's metrics.json, .hydra/overrides.yaml and
checkpoints/best.ckpt), or the presets of NETWORKS trained through `lenet.experiment.run` into
--runs-dir. Jobs that differ only in `seed` form an ensemble (mean probabilities, scored by
lenet.evaluation); baselines use the same split. Writes comparison.md, comparison.csv and
comparison.png into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lenet.config import load_config
from lenet.evaluation import default_data_dir, test_split
from lenet.metrics import METRIC_LABELS, SUMMARY_METRICS
from lenet.plots import comparison_figure, save

# The networks trained without --from-sweep: row name -> (experiment preset, extra overrides).
# The CNN is trained once per seed; the first seed is its single-model row and all form the ensemble.
NETWORKS: dict[str, tuple[str, list[str]]] = {
    "lenet5 + augmentation": ("lenet5_augmented", []),
    "lenet5_classic (1998)": ("lenet5_classic", []),
}
CNN_PRESET = "cnn_augmented"
BASELINE_NAMES = ("linear_svm", "svm_rbf", "random_forest", "knn")
METRIC_COLUMNS = tuple(f"test/{name}" for name in SUMMARY_METRICS)
COLUMNS = ("model", "kind", *METRIC_COLUMNS, "parameters", "fit_seconds", "inference_images_per_second", "recipe")


def real_digit_columns(model: Any, sets: dict[str, Any] | None) -> dict[str, float]:
    """Accuracy on each set of the real-digits benchmark (lenet.realdigits), as `real/<set>` columns."""
    if not sets:
        return {}
    from lenet.realdigits import benchmark

    return {f"real/{name}": round(score.accuracy, 4) for name, score in benchmark(model, sets).items()}


def images_per_second(loaded, images: Tensor) -> float:
    started = time.perf_counter()
    loaded.predict_probs(images)
    return round(len(images) / (time.perf_counter() - started), 1)


# ----------------------------------------------------------------------------- rows


def network_row(run_dir: Path, name: str, recipe: str, test_images: Tensor, sets: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished run's row: its metrics.json (what trainer.test scored), its inference speed and its
    accuracy on the real-digits sets."""
    from lenet.inference import load_model

    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = load_model(run_dir)
    speed = images_per_second(model, test_images)
    return {
        **metrics, **real_digit_columns(model, sets), "model": name, "kind": "network",
        "inference_images_per_second": speed, "recipe": recipe, "run_dir": str(run_dir),
    }


def ensemble_row(
    members: list[dict[str, Any]], name: str, test_images: Tensor, test_labels: Tensor, sets: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The members' mean probabilities, scored on the test set and the real-digits sets; its fit time is the members' sum."""
    from lenet.ensemble import evaluate_ensemble
    from lenet.inference import load_ensemble

    ensemble = load_ensemble([row["run_dir"] for row in members])
    return {
        **evaluate_ensemble(ensemble, test_images, test_labels),
        **real_digit_columns(ensemble, sets),
        "model": name,
        "kind": "ensemble",
        "fit_seconds": round(sum(row["fit_seconds"] for row in members), 2),
        "recipe": f"mean probabilities of the {len(members)} runs above: " + "; ".join(row["recipe"] for row in members),
    }


def recipe_key(overrides: str) -> tuple[tuple[str, str], ...]:
    """The overrides of a job without its seed, values parsed: a sweep records `figures=False` where a
    single run records `figures=false`, and both are one recipe."""
    import yaml

    items = (item.partition("=") for item in overrides.split() if not item.startswith("seed="))
    return tuple(sorted((key, repr(yaml.safe_load(value))) for key, _, value in items))


def sweep_rows(sweep_dir: Path, test_images: Tensor, test_labels: Tensor, sets: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every finished job of a Hydra multirun, then one ensemble per group of jobs that differ only in seed."""
    from lenet.sweep import collect  # the sweep summary's own reading of job folders

    jobs = [job for job in collect(sweep_dir) if job["status"] == "ok"]
    if not jobs:
        raise ValueError(
            f"{sweep_dir} holds no finished job (a folder with .hydra/ and metrics.json): run `python train.py -m ...` first"
        )
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for job in jobs:
        row = network_row(sweep_dir / job["job"], job["overrides"] or f"job {job['job']}", job["overrides"], test_images, sets)
        yield row
        groups.setdefault(recipe_key(job["overrides"]), []).append(row)
    for members in groups.values():
        if len(members) > 1:
            recipe = " ".join(item for item in members[0]["recipe"].split() if not item.startswith("seed="))
            seeds = ", ".join(sorted((item[5:] for row in members for item in row["recipe"].split() if item.startswith("seed=")), key=lambda seed: (len(seed), seed)))
            yield ensemble_row(members, f"{recipe or 'defaults'}: ensemble of {len(members)} (seeds {seeds})", test_images, test_labels, sets)


def trained_rows(
    runs_dir: Path,
    data_dir: str,
    overrides: Sequence[str],
    seeds: Sequence[int],
    wanted: Callable[[str], bool],
    test_images: Tensor,
    test_labels: Tensor,
    sets: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Train each preset like `python train.py experiment=PRESET OVERRIDES`; the CNN once per seed, then their ensemble."""
    from lenet.experiment import run

    def train(name: str, preset: str, extra: list[str], run_dir: Path) -> dict[str, Any]:
        recipe = [f"experiment={preset}", *extra]
        print(f"[lenet-compare] training {name}: {' '.join(recipe)} -> {run_dir}", flush=True)
        # No progress bar: a comparison runs for many minutes, usually into a log file.
        run(load_config([*recipe, f"data.data_dir={data_dir}", "++trainer.enable_progress_bar=false"], run_dir=run_dir))
        return network_row(run_dir, name, " ".join(recipe), test_images, sets)

    for name, (preset, extra) in NETWORKS.items():
        if wanted(name):
            yield train(name, preset, [*extra, *overrides], runs_dir / preset)
    if wanted("cnn"):
        cnn_rows = []
        for seed in seeds:
            cnn_rows.append(train(f"cnn (seed {seed})", CNN_PRESET, [f"seed={seed}", *overrides], runs_dir / f"{CNN_PRESET}_seed{seed}"))
            yield cnn_rows[-1]
        if len(cnn_rows) > 1:
            yield ensemble_row(cnn_rows, f"cnn ensemble of {len(cnn_rows)} (seeds {', '.join(map(str, seeds))})", test_images, test_labels, sets)


def run_comparison(
    out: Path,
    data_dir: str,
    sweep_dirs: Sequence[Path] = (),
    runs_dir: Path | None = None,
    overrides: Sequence[str] = (),
    ensemble_seeds: Sequence[int] = (1, 2, 3),
    baseline_train_size: int | None = None,
    only: Sequence[str] | None = None,
    real_digits: Sequence[str] | None = (),
    real_limit: int | None = None,
) -> list[dict[str, Any]]:
    """The networks (from a sweep, or trained here), their ensembles and the baselines; writes
    comparison.{md,csv,png} into `out` after every model, so a long run keeps what it finished.
    `real_digits` names sets of lenet.realdigits to add as columns (None: every set this machine can make)."""
    from lenet.baselines import fit_and_evaluate, load_data

    out.mkdir(parents=True, exist_ok=True)
    test_images, test_labels = test_split("mnist", data_dir)
    wanted = (lambda name: only is None or any(part in name for part in only))
    sets = None
    if real_digits is None or real_digits:
        from lenet.realdigits import load_sets

        sets = load_sets(real_digits, limit=real_limit, data_dir=data_dir, reference=False)
    if sweep_dirs:
        sweeps = " and of ".join(f"the Hydra multirun `{sweep_dir}`" for sweep_dir in sweep_dirs)
        source = f"Networks: the finished jobs of {sweeps} (their overrides are the recipe)."
        networks = (row for sweep_dir in sweep_dirs for row in sweep_rows(sweep_dir, test_images, test_labels, sets))
    else:
        source = f"Overrides for every network: `{' '.join(overrides) or 'none'}`."
        runs_dir = runs_dir or Path("outputs") / "compare" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        networks = trained_rows(runs_dir, data_dir, overrides, ensemble_seeds, wanted, test_images, test_labels, sets)
    rows: list[dict[str, Any]] = []
    for row in networks:
        rows.append(row)
        write_outputs(rows, out, source, baseline_train_size)

    baselines = [name for name in BASELINE_NAMES if wanted(name)]
    if baselines:
        data = load_data(data_dir, train_size=baseline_train_size)
        for name in baselines:
            print(f"[lenet-compare] fitting {name} on {len(data.train_y)} images", flush=True)
            result = fit_and_evaluate(name, data)
            fitted = result.pop("fitted")
            rows.append({**result, **real_digit_columns(fitted, sets), "model": name, "kind": "scikit-learn", "recipe": result["estimator"]})
            write_outputs(rows, out, source, baseline_train_size)

    if not rows:
        raise ValueError(f"--only {list(only or [])} matched no model; names: {model_names()}")
    return rows


def model_names() -> list[str]:
    return [*NETWORKS, "cnn", *BASELINE_NAMES]


# ----------------------------------------------------------------------------- outputs


def write_outputs(rows: list[dict[str, Any]], out: Path, source: str, baseline_train_size: int | None) -> None:
    real = real_columns(rows)
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS[:-1], *real, COLUMNS[-1]], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "comparison.md").write_text(markdown(rows, source, baseline_train_size))
    save(comparison_figure(rows), out / "comparison.png")
    print(f"[lenet-compare] wrote {out / 'comparison.md'}, comparison.csv, comparison.png", flush=True)


def real_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The `real/<set>` columns present, in the order they first appear."""
    return list(dict.fromkeys(key for row in rows for key in row if key.startswith("real/")))


def markdown(rows: list[dict[str, Any]], source: str, baseline_train_size: int | None) -> str:
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
        source,
        "",
        "| model | kind | " + " | ".join(METRIC_LABELS[name] for name in SUMMARY_METRICS)
        + "".join(f" | {key[5:]}" for key in real_columns(rows)) + " | parameters | fit s | inference img/s | recipe |",
        "|---" * (len(METRIC_COLUMNS) + len(real_columns(rows)) + 6) + "|",
    ]
    for row in rows:
        metrics = " | ".join(f"{100 * row[k]:.2f}%" if k == "test/acc" else f"{row[k]:.4f}" for k in METRIC_COLUMNS)
        real = "".join(f" | {100 * row[key]:.2f}%" if key in row else " | " for key in real_columns(rows))
        lines.append(
            f"| {row['model']} | {row['kind']} | {metrics}{real} | {row['parameters']:,} | {row['fit_seconds']:.0f} | "
            f"{row['inference_images_per_second']:,.0f} | `{row['recipe']}` |"
        )
    if real_columns(rows):
        lines += ["", "Real-digit columns: accuracy on the sets of `benchmarks/real_digits.py` (lenet.realdigits), read "
                  "through `prepare_image`; baselines read the same prepared 28x28 images."]
    lines += ["", "![comparison](comparison.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="lenet-compare", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="folder for comparison.md/csv/png (default: ./comparison)")
    parser.add_argument("--from-sweep", type=Path, nargs="+", default=[], metavar="SWEEP_DIR", help="take the networks from these `python train.py -m ...` sweeps instead of training them")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run directories of the networks trained here (default: outputs/compare/<time>)")
    parser.add_argument("--data-dir", default=default_data_dir(), help="default: $LENET_DATA_DIR or ./data")
    parser.add_argument("--epochs", type=int, default=None, help="override every preset's trainer.max_epochs (quick runs)")
    parser.add_argument("--train-batches", type=float, default=None, help="trainer.limit_train_batches for every network (quick runs)")
    parser.add_argument("--ensemble-seeds", type=int, nargs="+", default=[1, 2, 3], help="one cnn run per seed (default: 1 2 3)")
    parser.add_argument("--baseline-train-size", type=int, default=None, help="fit baselines on this many train images (default: all 54,000)")
    parser.add_argument("--only", nargs="+", default=None, help=f"models whose name contains one of these words (sweeps: baselines only); names: {model_names()}")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra Hydra override for every network (repeatable)")
    parser.add_argument("--real-digits", default="all", help="real-digits sets as extra columns: all, none, or names like usps,pen (default: all this machine can make)")
    parser.add_argument("--real-limit", type=int, default=None, help="images per real-digits set (default: each set's full size)")
    args = parser.parse_args(argv)

    overrides = list(args.override)
    if args.epochs is not None:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    if args.train_batches is not None:
        batches = int(args.train_batches) if args.train_batches >= 1 else args.train_batches
        overrides.append(f"++trainer.limit_train_batches={batches}")
    real_digits = None if args.real_digits == "all" else [name for name in args.real_digits.split(",") if name and name != "none"]
    return run_comparison(
        args.out, args.data_dir, args.from_sweep, args.runs_dir, overrides, args.ensemble_seeds, args.baseline_train_size,
        args.only, real_digits, args.real_limit,
    )


def cli() -> None:
    """`lenet-compare`: main() without its return value, which an entry point would take for the exit status."""
    main()


if __name__ == "__main__":
    main()
