"""Facts about the datasets that both sides need, training and inference, with nothing heavy imported.

The per-pixel mean/std of each training set, the class count, and `normalize`, the one
normalisation used by training, evaluation, prediction and serving.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Each dataset: torchvision's folder and class name, and the per-pixel mean/std of its training set.
DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {"folder": "MNIST", "torchvision_class": "MNIST", "mean": 0.1307, "std": 0.3081},
    "fashion_mnist": {"folder": "FashionMNIST", "torchvision_class": "FashionMNIST", "mean": 0.2860, "std": 0.3530},
}
NUM_CLASSES = 10


def dataset_stats(name: str) -> tuple[float, float]:
    """(mean, std) of a known dataset; a clear error for any other name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]["mean"], DATASETS[name]["std"]


def unit_floats(images: Tensor) -> Tensor:
    """uint8 images (0..255) or float images (0..1) -> contiguous float32 in 0..1 on the CPU: what an
    exported model (normalisation inside) and the C kernel (normalisation folded in) take."""
    x = images.to("cpu", torch.float32)
    return (x / 255 if images.dtype == torch.uint8 else x).contiguous()


def normalize(images: Tensor, mean: float = DATASETS["mnist"]["mean"], std: float = DATASETS["mnist"]["std"]) -> Tensor:
    """uint8 images (0..255) or float images (0..1), shape (B, 1, 28, 28) -> the network's input."""
    scale = 1 / (255 * std) if images.dtype == torch.uint8 else 1 / std
    x = images.to(torch.float32, memory_format=torch.channels_last, copy=True)
    # One copy and two in-place passes; channels_last is what oneDNN's convolutions run fastest on.
    return x.mul_(scale).sub_(mean / std)
