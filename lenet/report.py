"""A run's report on the official test set: metrics.json, figures (lenet.plots), report.md.

Training and `train=false` evaluation both end the same way: they gather a `RunSummary` once, and
`write_report` draws its figures, then writes its files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from lenet.evaluation import Evaluation
from lenet.metrics import HISTORY_KEYS, METRIC_LABELS, SUMMARY_METRICS

TEST_PREFIX = "test/"  # the official test set's metrics; every other key of metrics.json is about the run


@dataclass
class RunSummary:
    """What a run's report says, gathered once (lenet.experiment builds it): the model's evaluation
    on the official test set and what made the model."""

    evaluation: Evaluation  # probabilities, labels and test/ metrics on the official test set
    test_images: Tensor  # (N, 1, 28, 28) uint8: the images evaluated, for the misclassified figure
    dataset: str  # the test set's: "mnist", "fashion_mnist"
    training_recipe: dict[str, Any]  # how the model was trained (lenet.experiment.recipe): report.md, TensorBoard's HPARAMS
    run_details: dict[str, Any]  # epochs, timings, checkpoint, other sources' validation: metrics.json beside the test metrics
    history: Sequence[dict[str, float]] = ()  # the whole run's per-epoch metrics
    step: int = 0  # the training step the report belongs to: the x-axis of its TensorBoard figures

    @property
    def title(self) -> str:
        return f"{self.training_recipe['network']} on {self.dataset} (official test set)"

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json: the test metrics, then the run's details."""
        return {**self.evaluation.metrics, **self.run_details}


def best_epoch(history: Sequence[dict[str, float]]) -> int | None:
    """The epoch with the highest validation accuracy (the first, on ties): the one best.ckpt holds."""
    scored = [row for row in history if "val/acc" in row]
    return max(scored, key=lambda row: row["val/acc"])["epoch"] if scored else None


def write_report(summary: RunSummary, run_dir: str | Path, *, tensorboard=None, figures: bool = True) -> dict[str, Any]:
    """A run's report from its summary: the figures (unless `figures` is false), then metrics.json
    and report.md in run_dir (and the per-class table in TensorBoard); returns the metrics written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    matrix = summary.evaluation.confusion()
    metrics = summary.metrics
    drawn = draw_figures(summary, matrix, run_dir / "figures", tensorboard) if figures else []
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (run_dir / "report.md").write_text(report_markdown(summary, matrix, run_dir, drawn))
    if tensorboard is not None:
        tensorboard.add_text("report/per_class", per_class_table(metrics, matrix.shape[0]), global_step=summary.step)
    return metrics


def draw_figures(summary: RunSummary, matrix: Tensor, figure_dir: Path, tensorboard=None) -> list[str]:
    """The report's figures as figure_dir/<name>.png and TensorBoard images (report/<name>); returns their names."""
    from lenet.plots import (  # Matplotlib is imported only when figures are drawn
        confusion_matrix_figure, learning_curves_figure, misclassified_figure, per_class_figure, save,
    )

    evaluation = summary.evaluation
    figures = {
        "learning_curves": learning_curves_figure(summary.history, best_epoch(summary.history)),
        "confusion_matrix": confusion_matrix_figure(matrix),
        "per_class": per_class_figure(summary.metrics),
        "misclassified": misclassified_figure(summary.test_images, evaluation.labels, evaluation.probs),
    }
    figure_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        save(fig, figure_dir / f"{name}.png", tensorboard, f"report/{name}", summary.step)
    return list(figures)


def _plain(value: Any, run_dir: Path | None = None) -> str:
    """A value as a reader wants it: 4 significant decimals, paths relative to the run folder."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, str) and run_dir is not None and value.startswith("/"):
        try:
            return str(Path(value).relative_to(run_dir.resolve()))
        except ValueError:
            return Path(value).name
    return str(value)


def per_class_table(metrics: dict[str, Any], num_classes: int = 10, prefix: str = TEST_PREFIX) -> str:
    lines = ["| class | precision | recall | F1 |", "|---|---|---|---|"]
    for c in range(num_classes):
        row = [metrics[f"{prefix}class_{c}/{n}"] for n in ("precision", "recall", "f1")]
        lines.append(f"| {c} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines)


def report_markdown(summary: RunSummary, matrix: Tensor, run_dir: Path | None = None, figures: Sequence[str] = ()) -> str:
    """report.md: the test results, the recipe, the run's details, the epochs, the per-class table and
    the figures drawn (`figures`: their names under figures/)."""
    metrics = summary.metrics
    lines = [f"# {summary.title}", ""]
    results = " | ".join(f"{METRIC_LABELS[name]} {metrics[TEST_PREFIX + name]:.4f}" for name in SUMMARY_METRICS)
    lines += [
        f"Official MNIST test set ({int(matrix.sum())} images): {results} (precision, recall and F1 are macro averages).",
        f"Errors: {int(matrix.sum() - matrix.trace())}.",
        "",
    ]
    if summary.training_recipe:
        lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {_plain(value)} |" for key, value in summary.training_recipe.items()] + [""]
    if summary.run_details:
        lines += ["## Run", "", "| fact | value |", "|---|---|"]
        lines += [f"| {k} | {_plain(v, run_dir)} |" for k, v in sorted(summary.run_details.items())] + [""]
    if summary.history:
        lines += epochs_table(summary.history) + [""]
    lines += ["## Per class", "", per_class_table(metrics, matrix.shape[0]), ""]
    if not figures:
        lines += ["Figures were not drawn (`figures=false`); `python train.py train=false ckpt_path=<this run folder>` draws them.", ""]
    for name in figures:
        lines += [f"## {name.replace('_', ' ').capitalize()}", "", f"![{name}](figures/{name}.png)", ""]
    return "\n".join(lines)


def epochs_table(history: Sequence[dict[str, float]]) -> list[str]:
    """One row per epoch of the metrics any epoch logged; the epoch best.ckpt holds marked (best)."""
    best = best_epoch(history)
    columns = [key for key in HISTORY_KEYS if any(key in row for row in history)]
    lines = ["## Epochs", "", "| epoch | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in history:
        mark = " (best)" if row["epoch"] == best else ""
        values = " | ".join(f"{row[key]:.4f}" if key in row else "" for key in columns)
        lines.append(f"| {row['epoch']}{mark} | {values} |")
    return lines
