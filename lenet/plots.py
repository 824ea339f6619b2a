"""Every Matplotlib figure of the project: run reports, explanations of a network, model comparisons.

Each function takes computed values (tensors, metric dicts, table rows) and returns a figure, so
reports, `lenet-explain`, `lenet-compare`, notebooks and tests draw with the same code; `save`
writes one to a PNG file (and to TensorBoard).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from lenet.metrics import METRIC_LABELS


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only; notebooks add `%matplotlib inline`)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, tensorboard=None, tag: str = "", step: int = 0) -> Path:
    """Write a figure as a PNG (and to a TensorBoard SummaryWriter under `tag`), then close it."""
    fig.savefig(path, dpi=110)
    if tensorboard is not None:
        tensorboard.add_figure(tag, fig, global_step=step, close=False)
    pyplot().close(fig)
    return Path(path)


# ----------------------------------------------------------------------------- run reports


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


# ----------------------------------------------------------------------------- explaining a network


def _hide_axes(axes) -> None:
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def filters_figure(filters: Tensor, max_filters: int = 64):
    """First-layer kernels on one shared red/blue scale (blue negative, red positive)."""
    plt = pyplot()
    kernels = filters[:max_filters].mean(dim=1)  # (F, k, k); MNIST has one input channel, so the mean is exact
    cols = min(8, len(kernels))
    rows = math.ceil(len(kernels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.4 * rows + 0.6), squeeze=False)
    limit = float(kernels.abs().max()) or 1.0
    for k, ax in enumerate(axes.flat):
        if k < len(kernels):
            image = ax.imshow(kernels[k].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"filter {k}", fontsize=8)
        else:
            ax.axis("off")
    _hide_axes(axes)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    shape = "×".join(str(s) for s in filters.shape)
    fig.suptitle(f"First-layer filters ({shape}: out × in × height × width)")
    return fig


def feature_maps_figure(image: Tensor, maps: dict[str, Tensor], max_channels: int = 16):
    """One row per conv/pool layer (first image of the batch), channels side by side, one scale per layer."""
    plt = pyplot()
    cols = max([min(m.shape[1], max_channels) for m in maps.values()] + [1])
    rows = 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols + 2.2, 1.0 * rows + 0.5), squeeze=False)
    _hide_axes(axes)
    for ax in axes.flat:
        ax.set_frame_on(False)
    axes[0, 0].imshow(image.squeeze().cpu().numpy(), cmap="gray")
    axes[0, 0].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=8)
    for row, (name, output) in zip(axes[1:], maps.items()):
        channels = output[0]  # (C, H, W)
        low, high = float(channels.min()), float(channels.max())
        for c, ax in enumerate(row[: min(len(channels), max_channels)]):
            ax.imshow(channels[c].numpy(), cmap="viridis", vmin=low, vmax=high)
        shown = f"{min(len(channels), max_channels)} of {len(channels)} ch" if len(channels) > max_channels else f"{len(channels)} ch"
        label = f"{name}\n{shown}, {channels.shape[1]}×{channels.shape[2]}"
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Feature maps of every conv/pool layer (one colour scale per layer)")
    fig.tight_layout()
    return fig


@dataclass
class Saliency:
    """Where the network looked for one image, as lenet.explain.saliency computes it: both maps have
    the input's height × width, in [0, 1]."""

    gradients: Tensor  # |d logit / d pixel|, max over input channels
    grad_cam: Tensor  # Grad-CAM on the last convolution executed, upsampled to the input size
    target: int  # the class explained (the predicted one unless asked otherwise)
    probability: float  # the network's probability for that class
    layer: str  # the convolution Grad-CAM used


def saliency_figure(image: Tensor, result: Saliency, title: str = ""):
    """The image, its input-gradient map and its Grad-CAM overlay."""
    plt = pyplot()
    picture = image.squeeze().cpu().float().numpy()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    axes[0].imshow(picture, cmap="gray")
    axes[0].set_title(title or "input", fontsize=9)
    axes[1].imshow(result.gradients.numpy(), cmap="hot", vmin=0, vmax=1)
    axes[1].set_title("input gradients |∂logit/∂pixel|", fontsize=9)
    axes[2].imshow(picture, cmap="gray")
    axes[2].imshow(result.grad_cam.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[2].set_title(f"Grad-CAM on {result.layer}", fontsize=9)
    _hide_axes(axes)
    fig.suptitle(f"Why class {result.target}? (probability {result.probability:.3f})")
    fig.tight_layout()
    return fig


def embedding_figure(points: np.ndarray, labels: Tensor, title: str = "Penultimate layer, 2-D embedding"):
    """Scatter of (N, 2) points, one colour per class, one point per sample."""
    plt = pyplot()
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    colours = plt.get_cmap("tab10")
    for c in np.unique(labels):
        chosen = labels == c
        ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours(int(c) % 10), label=str(c))
    ax.legend(title="class", markerscale=3, fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({len(points)} test images)")
    fig.tight_layout()
    return fig


def confused_pairs_figure(images: Tensor, targets: Tensor, probs: Tensor, pairs: Sequence[tuple[int, int, int]], examples: int = 8):
    """One row per confused pair: its most confidently wrong test images."""
    plt = pyplot()
    rows = max(1, len(pairs))
    fig, axes = plt.subplots(rows, examples, figsize=(1.1 * examples + 1.2, 1.25 * rows + 0.6), squeeze=False)
    _hide_axes(axes)
    for ax in axes.flat:
        ax.set_frame_on(False)
    confidence, predicted = probs.max(dim=1)
    for row, (true, wrong, count) in zip(axes, pairs):
        chosen = ((targets == true) & (predicted == wrong)).nonzero().flatten()
        chosen = chosen[confidence[chosen].argsort(descending=True)][:examples]
        for ax, i in zip(row, chosen.tolist()):
            ax.imshow(images[i].squeeze().cpu().numpy(), cmap="gray")
            ax.set_title(f"{float(confidence[i]):.2f}", fontsize=7)
        row[0].set_ylabel(f"{true}→{wrong}\n{count} images", rotation=0, ha="right", va="center", fontsize=9)
    if not pairs:
        axes[0, 0].text(0, 0.5, "no misclassified images", transform=axes[0, 0].transAxes)
    fig.suptitle("Most confused pairs (true→predicted), most confident errors first")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- comparing models


def comparison_figure(rows: list[dict[str, Any]]):
    """Test error per model (bars) and against fit seconds (scatter), coloured by kind of model."""
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
