"""Evaluation report of a model on a labelled set: metrics.json, Matplotlib figures, report.md.

`write_evaluation_report` is what training and `train=false` evaluation both end with; the figure
functions are importable for notebooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from lenet.evaluation import Evaluation
from lenet.metrics import SUMMARY_METRICS

FIGURE_NAMES = ("learning_curves", "confusion_matrix", "per_class", "misclassified")
METRIC_LABELS = {"acc": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1", "loss": "loss"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; notebooks add `%matplotlib inline`)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def best_epoch(history: Sequence[dict[str, float]]) -> int | None:
    """The epoch with the highest validation accuracy (the first, on ties): the one best.ckpt holds."""
    scored = [row for row in history if "val/acc" in row]
    return max(scored, key=lambda row: row["val/acc"])["epoch"] if scored else None


def learning_curves_figure(history: Sequence[dict[str, float]], best: int | None = None):
    """Loss and accuracy per epoch, train vs validation, over the whole run; the best epoch marked."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc")):
        values = []
        for stage in ("train", "val"):
            points = [(row["epoch"], row[f"{stage}/{metric}"]) for row in history if f"{stage}/{metric}" in row]
            if points:
                ax.plot(*zip(*points), marker="o", label=stage)
                values += [value for epoch, value in points if epoch > 1 or len(points) == 1]
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best})")
        if metric == "acc" and values:
            # The range that matters: first-epoch accuracy would squash the rest into a line at the top.
            ax.set_ylim(max(0.0, min(0.98, math.floor(min(values) * 200) / 200)), 1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title({"loss": "Loss", "acc": "Accuracy"}[metric])
        ax.grid(alpha=0.3)
        if history:
            ax.legend()
    if not history:
        axes[0].text(0.5, 0.5, "no training history in this checkpoint", ha="center", transform=axes[0].transAxes)
    fig.tight_layout()
    return fig


def confusion_matrix_figure(matrix: Tensor, class_names: Sequence[str] | None = None):
    plt = pyplot()
    n = matrix.shape[0]
    names = list(class_names or [str(i) for i in range(n)])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    shown = matrix.float().clone()
    shown.fill_diagonal_(float("nan"))  # errors only: the diagonal would wash out the colour scale
    image = ax.imshow(shown.numpy(), cmap="Reds")
    fig.colorbar(image, ax=ax, label="misclassified images")
    darkest = float(shown.nan_to_num(0).max()) or 1.0
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            # White text on the darker half of the colour scale, so every count stays readable.
            colour = "tab:green" if i == j else ("white" if value > darkest / 2 else "black")
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (diagonal: correct)")
    fig.tight_layout()
    return fig


def per_class_figure(metrics: dict[str, float], prefix: str = "test/", num_classes: int = 10):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.27
    for k, name in enumerate(("precision", "recall", "f1")):
        values = [metrics[f"{prefix}class_{c}/{name}"] for c in range(num_classes)]
        ax.bar([c + (k - 1) * width for c in range(num_classes)], values, width, label=METRIC_LABELS[name])
    low = min(metrics[f"{prefix}class_{c}/{n}"] for c in range(num_classes) for n in ("precision", "recall", "f1"))
    ax.set_ylim(max(0.0, math.floor((low - 0.01) * 50) / 50), 1.0)
    ax.set_xticks(range(num_classes))
    ax.set_xlabel("class")
    ax.set_title("Per-class precision, recall and F1")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def misclassified_figure(images: Tensor, targets: Tensor, probs: Tensor, limit: int = 36):
    """Grid of the most confidently wrong images, titled `true→predicted (confidence)`."""
    plt = pyplot()
    confidence, predicted = probs.max(dim=1)
    wrong = (predicted != targets).nonzero().flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:limit]
    cols = 9
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        ax.imshow(images[i].squeeze(0).numpy(), cmap="gray")
        ax.set_title(f"{int(targets[i])}→{int(predicted[i])} ({float(confidence[i]):.2f})", fontsize=8)
    fig.suptitle(
        f"Misclassified test digits, most confident first: {int((predicted != targets).sum())} in all\n"
        "each titled true→predicted (the model's probability for its wrong answer)"
    )
    fig.tight_layout()
    return fig


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
) -> dict[str, Any]:
    """metrics.json, figures and report.md for an Evaluation of `images`; returns the metrics written.

    `history` is the whole run's per-epoch metrics, `recipe` the settings that made the model."""
    metrics: dict[str, Any] = {**evaluation.metrics, **(extra or {})}
    matrix = evaluation.confusion()
    figures = {
        "learning_curves": learning_curves_figure(history, best_epoch(history)),
        "confusion_matrix": confusion_matrix_figure(matrix),
        "per_class": per_class_figure(metrics),
        "misclassified": misclassified_figure(images, evaluation.labels, evaluation.probs),
    }
    write_report(run_dir, metrics, figures, matrix, title, tensorboard, step, history, recipe or {})
    return metrics


def write_report(run_dir, metrics, figures, matrix, title, tensorboard=None, step: int = 0, history=(), recipe=None) -> None:
    plt = pyplot()
    run_dir = Path(run_dir)
    figure_dir = run_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(figure_dir / f"{name}.png", dpi=110)
        if tensorboard is not None:
            tensorboard.add_figure(f"report/{name}", fig, global_step=step)
        plt.close(fig)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    markdown = report_markdown(metrics, matrix, title, history, recipe or {}, run_dir)
    (run_dir / "report.md").write_text(markdown)
    if tensorboard is not None:
        tensorboard.add_text("report/per_class", per_class_table(metrics, matrix.shape[0]), global_step=step)


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
        columns = [key for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1") if any(key in row for row in history)]
        lines += ["## Epochs", "", "| epoch | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for row in history:
            mark = " (best)" if row["epoch"] == best else ""
            values = " | ".join(f"{row[key]:.4f}" if key in row else "" for key in columns)
            lines.append(f"| {row['epoch']}{mark} | {values} |")
        lines.append("")
    lines += ["## Per class", "", per_class_table(metrics, matrix.shape[0], prefix), ""]
    for name in FIGURE_NAMES:
        lines += [f"## {name.replace('_', ' ').capitalize()}", "", f"![{name}](figures/{name}.png)", ""]
    return "\n".join(lines)
