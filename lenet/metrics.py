"""The one definition of the metrics, used by training, evaluation, ensembles and baselines.

Accuracy is micro-averaged (fraction of correct images); precision, recall and F1 are macro
averages over the ten classes, each class weighing the same whatever its size.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

# The headline metrics of every table (runs, sweeps, comparisons, ensembles), in this order, and their names for readers.
SUMMARY_METRICS = ("acc", "precision", "recall", "f1")
# The per-epoch learning-curve values lenet.callbacks.History records and report.md tabulates.
HISTORY_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1")
METRIC_LABELS = {"acc": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1", "loss": "loss"}


def classification_metrics(num_classes: int = 10, prefix: str = "") -> MetricCollection:
    """Accuracy and macro precision/recall/F1 under keys like `val/acc` (one instance per stage)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
        compute_groups=True,  # all four share one set of per-class counts
    )


def per_class_metrics(num_classes: int = 10) -> MetricCollection:
    """Per-class precision, recall and F1 (vectors of length num_classes)."""
    return MetricCollection(
        {
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "f1": MulticlassF1Score(num_classes, average=None),
        },
        compute_groups=True,
    )


def per_class_keys(values: dict[str, Tensor], prefix: str) -> dict[str, float]:
    """{"precision": tensor([...])} -> {"test/class_3/precision": 0.99, ...}"""
    return {
        f"{prefix}class_{c}/{name}": float(vector[c])
        for name, vector in values.items()
        for c in range(len(vector))
    }


def evaluate_predictions(scores: Tensor, targets: Tensor, num_classes: int = 10, prefix: str = "test/") -> dict[str, float]:
    """Flat metric dict for predictions given as class scores (N, C) or labels (N,).

    >>> import torch
    >>> m = evaluate_predictions(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 1, 1, 0]), 2)
    >>> m["test/acc"], m["test/class_0/recall"], m["test/precision"]
    (0.75, 0.5, 0.8333333134651184)
    """
    scores, targets = scores.cpu(), targets.cpu()
    summary = classification_metrics(num_classes, prefix)(scores, targets)
    per_class = per_class_metrics(num_classes)(scores, targets)
    return {**{k: float(v) for k, v in summary.items()}, **per_class_keys(per_class, prefix)}


def confusion_matrix(scores: Tensor, targets: Tensor, num_classes: int = 10) -> Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    return MulticlassConfusionMatrix(num_classes)(scores.cpu(), targets.cpu())
