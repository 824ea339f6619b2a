"""Classical baselines with scikit-learn, on the same split and scored by the same metrics code.

Each baseline trains on the data module's 54,000-image train split (pixels scaled to [0, 1],
flattened) and is scored on the official 10,000-image test set by
lenet.metrics.evaluate_predictions, exactly like the networks. `lenet-compare` runs them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import SVC
from torch import Tensor

from lenet.data import MNISTDataModule
from lenet.metrics import evaluate_predictions

# name -> estimator factory (seeded). Choices keep each fit within a few minutes on 2 CPU cores.
BASELINES: dict[str, Callable[[int], BaseEstimator]] = {
    # Linear SVM (hinge loss) on raw pixels by SGD: the linear reference, in seconds rather than minutes.
    "linear_svm": lambda seed: SGDClassifier(loss="hinge", alpha=1e-4, max_iter=20, tol=None, random_state=seed),
    # RBF SVM on the first 50 principal components (about 80% of the variance): 10x faster than
    # on 784 pixels for the same accuracy.
    "svm_rbf": lambda seed: make_pipeline(PCA(50, random_state=seed), SVC(C=10, gamma="scale", random_state=seed)),
    "random_forest": lambda seed: RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed),
    # k-NN with distance weighting; PCA denoises and makes each distance 16x cheaper.
    "knn": lambda seed: make_pipeline(
        PCA(50, random_state=seed), KNeighborsClassifier(n_neighbors=4, weights="distance", n_jobs=-1)
    ),
}


@dataclass
class BaselineData:
    """Flattened float32 pixels in [0, 1] and int labels: train split and official test set."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _flat(images: Tensor) -> np.ndarray:
    """(N, 1, 28, 28) uint8 (0..255) or float (0..1) images -> (N, 784) floats in [0, 1]."""
    scale = 255 if images.dtype == torch.uint8 else 1
    return (images.reshape(len(images), -1).float() / scale).numpy()


class FittedBaseline:
    """A fitted estimator behind the networks' interface: `predict_probs` gives one-hot answers,
    so the real-digits benchmark and the metrics score it like any model."""

    def __init__(self, estimator: BaseEstimator) -> None:
        self.estimator = estimator

    def predict_probs(self, images: Tensor, batch_size: int = 0) -> Tensor:
        predicted = torch.from_numpy(self.estimator.predict(_flat(images))).long()
        return torch.nn.functional.one_hot(predicted, 10).float()


def load_data(data_dir: str, train_size: int | None = None, split_seed: int = 42, dataset: str = "mnist") -> BaselineData:
    """The data module's own train split (first `train_size` images of it, if given) and test set."""
    datamodule = MNISTDataModule(data_dir=data_dir, dataset=dataset, split_seed=split_seed, download=False)
    datamodule.setup()
    train_images, train_labels = datamodule.splits["train"]
    test_images, test_labels = datamodule.splits["test"]
    if train_size is not None:
        if not 0 < train_size <= len(train_labels):
            raise ValueError(f"train_size={train_size} must be between 1 and {len(train_labels)}")
        train_images, train_labels = train_images[:train_size], train_labels[:train_size]
    return BaselineData(_flat(train_images), train_labels.numpy(), _flat(test_images), test_labels.numpy())


def stored_parameters(estimator: BaseEstimator) -> int:
    """Numbers the fitted model keeps for inference: weights, support vectors, tree nodes or, for
    k-NN, the training set itself (a rough but comparable size for a table beside the networks)."""
    if isinstance(estimator, Pipeline):
        return sum(stored_parameters(step) for _, step in estimator.steps)
    if isinstance(estimator, RandomForestClassifier):
        return sum(tree.tree_.node_count for tree in estimator.estimators_)  # one split or leaf each
    if isinstance(estimator, KNeighborsClassifier):
        return int(estimator._fit_X.size)
    if isinstance(estimator, SVC):
        return int(estimator.support_vectors_.size + estimator.dual_coef_.size + estimator.intercept_.size)
    if isinstance(estimator, PCA):
        return int(estimator.components_.size + estimator.mean_.size)
    if isinstance(estimator, SGDClassifier):
        return int(estimator.coef_.size + estimator.intercept_.size)
    raise TypeError(f"stored_parameters does not know {type(estimator).__name__}; add a case for it")


def fit_and_evaluate(name: str, data: BaselineData, seed: int = 0) -> dict[str, Any]:
    """Fit one baseline and score it: test metrics, fit seconds, inference images/s, parameters."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    estimator = BASELINES[name](seed)
    started = time.perf_counter()
    estimator.fit(data.train_x, data.train_y)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predicted = estimator.predict(data.test_x)
    predict_seconds = time.perf_counter() - started
    return {
        **evaluate_predictions(torch.from_numpy(predicted).long(), torch.from_numpy(data.test_y)),
        "fit_seconds": round(fit_seconds, 2),
        "inference_images_per_second": round(len(predicted) / predict_seconds, 1),
        "parameters": stored_parameters(estimator),
        "train_size": len(data.train_y),
        "estimator": repr(estimator).replace("\n", "").replace("  ", ""),
        "fitted": FittedBaseline(estimator),
    }
