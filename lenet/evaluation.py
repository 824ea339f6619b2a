"""The one evaluation path: a model (or an ensemble) on a labelled split -> probabilities, labels, metrics.

Training reports what `trainer.test` predicted (`score`); evaluating a checkpoint, ensembles,
`lenet-explain`, `lenet-compare` and the real-digits benchmark call `evaluate`. The metrics are
always lenet.metrics's.

    evaluation = evaluate(load_model("outputs/<run>"), *test_split("mnist"))
    evaluation.metrics["test/acc"], evaluation.probs.shape   # 0.99..., (10000, 10)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from lenet.metrics import confusion_matrix, evaluate_predictions

DATA_DIR_VARIABLE = "LENET_DATA_DIR"


def default_data_dir() -> str:
    """$LENET_DATA_DIR, else ./data: the same default as conf/data/mnist.yaml."""
    return os.environ.get(DATA_DIR_VARIABLE, "data")


@dataclass
class Evaluation:
    probs: Tensor  # (N, 10) class probabilities
    labels: Tensor  # (N,) true classes
    metrics: dict[str, Any]  # flat keys: `<prefix>acc`, `<prefix>class_<c>/f1`, ...

    @property
    def predicted(self) -> Tensor:
        return self.probs.argmax(dim=1)

    def confusion(self) -> Tensor:
        return confusion_matrix(self.probs, self.labels, self.probs.shape[1])


def score(probs: Tensor, labels: Tensor, prefix: str = "test/") -> Evaluation:
    """An Evaluation of probabilities already computed (e.g. by `trainer.test`)."""
    probs, labels = probs.cpu(), labels.cpu()
    return Evaluation(probs, labels, evaluate_predictions(probs, labels, probs.shape[1], prefix))


def evaluate(model: Any, images: Tensor, labels: Tensor, prefix: str = "test/") -> Evaluation:
    """Predict `images` with anything that has `predict_probs` (LoadedModel, Ensemble) and score it."""
    return score(model.predict_probs(images), labels, prefix)


def test_split(dataset: str = "mnist", data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """The official test images (N, 1, 28, 28) uint8 and labels of a dataset."""
    from lenet.datafiles import load_split  # Lightning-free

    return load_split(data_dir if data_dir is not None else default_data_dir(), dataset, "test")
