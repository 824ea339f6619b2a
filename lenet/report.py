"""Evaluation report of a model on a labelled set: metrics.json, figures (lenet.plots), report.md.

`write_evaluation_report` is what training and `train=false` evaluation both end with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from lenet.evaluation import Evaluation
from lenet.metrics import HISTORY_KEYS, METRIC_LABELS, SUMMARY_METRICS

FIGURE_NAMES = ("learning_curves", "confusion_matrix", "per_class", "misclassified")


def best_epoch(history: Sequence[dict[str, float]]) -> int | None:
    """The epoch with the highest validation accuracy (the first, on ties): the one best.ckpt holds."""
    scored = [row for row in history if "val/acc" in row]
    return max(scored, key=lambda row: row["val/acc"])["epoch"] if scored else None


def write_evaluation_report(
    evaluation: Evaluation,
    images: Tensor,
    run_dir: str | Path,
    history: Sequence[dict[str, float]] = (),
    extra: dict[str, Any] | None = None,
    tensorboard=None,
    title: str = "LeNet-5 on MNIST",
    step: int = 0,
    recipe: dict[str, Any] | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """metrics.json, figures (unless `figures` is false) and report.md for an Evaluation of `images`;
    returns the metrics written. `history` is the whole run's per-epoch metrics, `recipe` the
    settings that made the model."""
    metrics: dict[str, Any] = {**evaluation.metrics, **(extra or {})}
    matrix = evaluation.confusion()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if figures:
        draw_figures(evaluation, matrix, images, metrics, history, run_dir / "figures", tensorboard, step)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    markdown = report_markdown(metrics, matrix, title, history, recipe or {}, run_dir, figures=figures)
    (run_dir / "report.md").write_text(markdown)
    if tensorboard is not None:
        tensorboard.add_text("report/per_class", per_class_table(metrics, matrix.shape[0]), global_step=step)
    return metrics


def draw_figures(
    evaluation: Evaluation, matrix: Tensor, images: Tensor, metrics, history, figure_dir: Path, tensorboard=None, step: int = 0
) -> None:
    """The report's figures as figure_dir/<name>.png and TensorBoard images (report/<name>)."""
    from lenet.plots import (  # Matplotlib is imported only when figures are drawn
        confusion_matrix_figure, learning_curves_figure, misclassified_figure, per_class_figure, save,
    )

    figures = {
        "learning_curves": learning_curves_figure(history, best_epoch(history)),
        "confusion_matrix": confusion_matrix_figure(matrix),
        "per_class": per_class_figure(metrics),
        "misclassified": misclassified_figure(images, evaluation.labels, evaluation.probs),
    }
    figure_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        save(fig, figure_dir / f"{name}.png", tensorboard, f"report/{name}", step)


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


def per_class_table(metrics: dict[str, Any], num_classes: int = 10, prefix: str = "test/") -> str:
    lines = ["| class | precision | recall | F1 |", "|---|---|---|---|"]
    for c in range(num_classes):
        row = [metrics[f"{prefix}class_{c}/{n}"] for n in ("precision", "recall", "f1")]
        lines.append(f"| {c} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines)


def report_markdown(
    metrics: dict[str, Any],
    matrix: Tensor,
    title: str,
    history: Sequence[dict[str, float]] = (),
    recipe: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    prefix: str = "test/",
    figures: bool = True,
) -> str:
    run_dir = Path(run_dir) if run_dir is not None else None
    lines = [f"# {title}", ""]
    summary = " | ".join(f"{METRIC_LABELS[name]} {metrics[prefix + name]:.4f}" for name in SUMMARY_METRICS)
    lines += [
        f"Official MNIST test set ({int(matrix.sum())} images): {summary} (precision, recall and F1 are macro averages).",
        f"Errors: {int(matrix.sum() - matrix.trace())}.",
        "",
    ]
    if recipe:
        lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {_plain(value)} |" for key, value in recipe.items()] + [""]
    facts = {k: v for k, v in metrics.items() if not k.startswith(prefix)}
    if facts:
        lines += ["## Run", "", "| fact | value |", "|---|---|"]
        lines += [f"| {k} | {_plain(v, run_dir)} |" for k, v in sorted(facts.items())] + [""]
    if history:
        best = best_epoch(history)
        columns = [key for key in HISTORY_KEYS if any(key in row for row in history)]
        lines += ["## Epochs", "", "| epoch | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for row in history:
            mark = " (best)" if row["epoch"] == best else ""
            values = " | ".join(f"{row[key]:.4f}" if key in row else "" for key in columns)
            lines.append(f"| {row['epoch']}{mark} | {values} |")
        lines.append("")
    lines += ["## Per class", "", per_class_table(metrics, matrix.shape[0], prefix), ""]
    if not figures:
        lines += ["Figures were not drawn (`figures=false`); `python train.py train=false ckpt_path=<this run folder>` draws them.", ""]
        return "\n".join(lines)
    for name in FIGURE_NAMES:
        lines += [f"## {name.replace('_', ' ').capitalize()}", "", f"![{name}](figures/{name}.png)", ""]
    return "\n".join(lines)
