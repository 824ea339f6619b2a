"""Temperature scaling: one number T that divides every member's logits before the softmax, fitted on
validation data, so that a probability of 0.8 is right about 80% of the time.

Label smoothing (the recipes' 0.1) trains networks to leave a tenth of their probability on wrong
digits, and averaging an ensemble flattens the probabilities further; "unsure" answers (a top
probability under lenet.inference.UNSURE_BELOW) then flag digits the model reads correctly. T < 1
sharpens the probabilities back; it never changes a single network's answer (the order of the logits
is kept), and changes an ensemble's rarely.

    logits = member_logits(model, images)                         # (members, N, 10)
    T = fit_temperature([(logits, labels), (other_logits, other_labels)])
    fitted = calibrate(models, data_dir)                          # the served model's: {"temperature": ..., ...}

The served model's T is fitted by `python -m lenet.served` on UNIPEN's validation writers (drawn as
the page draws) and MNIST's validation digits, each set weighing the same; never on a test set. It is
written in the card (`calibration`) and applied by lenet.inference.load_weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

BOUNDS = (0.05, 20.0)  # the temperatures a card may hold: anything outside is a damaged card


def member_logits(models: Sequence[Any], images: Tensor) -> Tensor:
    """(members, N, classes) logits of LoadedModels on uint8 or 0..1 float images (N, 1, 28, 28)."""
    return torch.stack([model.logits(images) for model in models]).float()


def ensemble_nll(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the true digit under the mean of the members' softmax(logits / T)."""
    probs = (logits / temperature).softmax(dim=-1).mean(dim=0)
    return float(-probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean())


def calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Expected calibration error: over equal-width bins of the top probability, the gap between the
    answers' accuracy and their mean top probability, weighted by the share of answers in the bin."""
    confidence, answers = probs.max(dim=1)
    right = (answers == labels).float()
    bin_of = (confidence * bins).long().clamp(max=bins - 1)
    error = 0.0
    for b in range(bins):
        inside = bin_of == b
        if inside.any():
            error += float(inside.float().mean() * (right[inside].mean() - confidence[inside].mean()).abs())
    return error


def fit_temperature(sets: Sequence[tuple[Tensor, Tensor]], bounds: tuple[float, float] = (0.2, 5.0), steps: int = 60) -> float:
    """The T minimising the mean over `sets` of each set's ensemble_nll (each set weighs the same,
    whatever its size): a golden-section search over log T within `bounds`, to about 0.1%."""
    def loss(log_t: float) -> float:
        return sum(ensemble_nll(logits, labels, math.exp(log_t)) for logits, labels in sets) / len(sets)

    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(steps):
        if high - low < 1e-3:
            break
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return round(math.exp((low + high) / 2), 4)


def validation_sets(data_dir: str) -> dict[str, tuple[Tensor, Tensor]]:
    """What the served model's temperature is fitted on: UNIPEN's validation writers drawn once as the
    page draws (`val_unipen`, as training validates) and MNIST's 6,000 validation digits (`val_mnist`)."""
    from lenet.data import mnist_validation
    from lenet.unipen_images import load_renders

    unipen = load_renders(data_dir, "val", 1)
    return {"val_unipen": (unipen.images[:, 0], unipen.labels), "val_mnist": mnist_validation(data_dir)}


def calibrate(models: Sequence[Any], data_dir: str) -> dict[str, Any]:
    """The temperature of `models` (an ensemble's members) fitted on validation_sets, and each set's
    negative log-likelihood before (T = 1) and after: the card's `calibration`."""
    sets = {name: (member_logits(models, images), labels) for name, (images, labels) in validation_sets(data_dir).items()}
    temperature = fit_temperature(list(sets.values()))
    return {
        "temperature": temperature,
        "fitted_on": "UNIPEN's validation writers (drawn as the page draws) and MNIST's 6,000 validation digits, each set weighing the same",
        "nll_before": {name: round(ensemble_nll(logits, labels, 1.0), 4) for name, (logits, labels) in sets.items()},
        "nll_after": {name: round(ensemble_nll(logits, labels, temperature), 4) for name, (logits, labels) in sets.items()},
    }


def checked_temperature(value: Any, where: str) -> float:
    """A temperature (a card's, or given on the command line): a number within BOUNDS, else ValueError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not BOUNDS[0] <= value <= BOUNDS[1]:
        raise ValueError(f"{where}={value!r} must be a number from {BOUNDS[0]} to {BOUNDS[1]}")
    return float(value)
