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


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; notebooks add `%matplotlib inline`)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def learning_curves_figure(history: Sequence[dict[str, float]]):
    """Loss and accuracy per epoch, train vs validation."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc")):
        for stage in ("train", "val"):
            points = [(row["epoch"], row[f"{stage}/{metric}"]) for row in history if f"{stage}/{metric}" in row]
            if points:
                ax.plot(*zip(*points), marker="o", label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title({"loss": "Loss", "acc": "Accuracy"}[metric])
        ax.grid(alpha=0.3)
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
    for i in range(n):
        for j in range(n):
            value = int(matrix[i, j])
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color="black" if i != j else "tab:green")
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
        ax.bar([c + (k - 1) * width for c in range(num_classes)], values, width, label=name)
    low = min(metrics[f"{prefix}class_{c}/{n}"] for c in range(num_classes) for n in ("precision", "recall", "f1"))
    ax.set_ylim(max(0.0, math.floor((low - 0.01) * 50) / 50), 1.0)
    ax.set_xticks(range(num_classes))
    ax.set_xlabel("class")
    ax.set_title("Per-class precision, recall and F1")
    ax.legend(loc="lower right")
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
    fig.suptitle(f"Misclassified test digits: {int((predicted != targets).sum())} in all (true→predicted)")
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
) -> dict[str, Any]:
    """metrics.json, figures and report.md for an Evaluation of `images`; returns the metrics written."""
    metrics: dict[str, Any] = {**evaluation.metrics, **(extra or {})}
    matrix = evaluation.confusion()
    figures = {
        "learning_curves": learning_curves_figure(history),
        "confusion_matrix": confusion_matrix_figure(matrix),
        "per_class": per_class_figure(metrics),
        "misclassified": misclassified_figure(images, evaluation.labels, evaluation.probs),
    }
    write_report(run_dir, metrics, figures, matrix, title, tensorboard, step)
    return metrics


def write_report(run_dir, metrics, figures, matrix, title, tensorboard=None, step: int = 0) -> None:
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
    (run_dir / "report.md").write_text(report_markdown(metrics, matrix, title))


def report_markdown(metrics: dict[str, Any], matrix: Tensor, title: str, prefix: str = "test/") -> str:
    lines = [f"# {title}", ""]
    summary = " | ".join(f"{name} {metrics[prefix + name]:.4f}" for name in SUMMARY_METRICS)
    lines += [
        f"Official MNIST test set ({int(matrix.sum())} images): {summary}.",
        f"Errors: {int(matrix.sum() - matrix.trace())}.",
        "",
    ]
    facts = {k: v for k, v in metrics.items() if not k.startswith(prefix)}
    if facts:
        lines += ["| run fact | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(facts.items())] + [""]
    lines += ["| class | precision | recall | F1 |", "|---|---|---|---|"]
    for c in range(matrix.shape[0]):
        row = [metrics[f"{prefix}class_{c}/{n}"] for n in ("precision", "recall", "f1")]
        lines.append(f"| {c} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    lines.append("")
    for name in FIGURE_NAMES:
        lines += [f"## {name.replace('_', ' ').capitalize()}", "", f"![{name}](figures/{name}.png)", ""]
    return "\n".join(lines)
