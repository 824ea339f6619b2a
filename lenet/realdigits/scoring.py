"""A model's answers on the real-digit sets scored: accuracy, refusals, unsure answers, confusions, per
group, and the unsure threshold a set allows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lenet.evaluation import Evaluation, score
from lenet.inference import UNSURE_BELOW

if TYPE_CHECKING:
    from lenet.realdigits.cache import PreparedSet

REFUSED = 10  # the answer index of "no digit found" in a SetScore's probabilities (after digits 0-9)
UNSURE_GRID = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.01))  # thresholds swept when choosing one


@dataclass
class SetScore:
    """A model's answers on one set: lenet.evaluation's metrics, the confusions, refusals and unsure answers.

    The probabilities have 11 columns: the ten digits, then REFUSED (1 for an image prepare_image
    refused, whose digit columns are 0), so a refusal is scored as a wrong answer by the one metrics
    definition, and shows among the confusions as "3→refused".
    """

    name: str
    evaluation: Evaluation
    unsure_below: float = UNSURE_BELOW

    @property
    def count(self) -> int:
        return len(self.evaluation.labels)

    @property
    def accuracy(self) -> float:
        return self.evaluation.metrics[f"{self.name}/acc"]

    @property
    def f1(self) -> float:
        """Macro F1 over the digits present in the set (styles has only 1s, 7s and 9s)."""
        present = torch.unique(self.evaluation.labels).tolist()
        return float(np.mean([self.evaluation.metrics[f"{self.name}/class_{c}/f1"] for c in present]))

    @property
    def refused(self) -> Tensor:
        return self.evaluation.probs[:, REFUSED] > 0.5

    def unsure(self, threshold: float | None = None) -> Tensor:
        """(N,) bool: answered, but with a top probability under the threshold (default: unsure_below)."""
        threshold = self.unsure_below if threshold is None else threshold
        return ~self.refused & (self.evaluation.probs[:, :REFUSED].max(dim=1).values < threshold)

    def unsure_rate(self, threshold: float | None = None) -> float:
        """Share of all the set's images that get an "unsure" answer."""
        return float(self.unsure(threshold).float().mean()) if self.count else 0.0

    def answered_accuracy(self, threshold: float | None = None) -> float:
        """Accuracy on the images answered with confidence (neither refused nor unsure)."""
        answered = ~self.refused & ~self.unsure(threshold)
        right = self.evaluation.predicted == self.evaluation.labels
        return float(right[answered].float().mean()) if answered.any() else float("nan")

    def confusions(self, top: int = 5) -> list[tuple[str, int]]:
        """The most frequent mistakes as ("true→predicted", count), most frequent first."""
        matrix = self.evaluation.confusion()
        matrix.fill_diagonal_(0)
        pairs = sorted(((int(n), t, p) for (t, p), n in np.ndenumerate(matrix.numpy()) if n), key=lambda x: (-x[0], x[1], x[2]))
        return [(f"{t}→{'refused' if p == REFUSED else p}", n) for n, t, p in pairs[:top]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "accuracy": self.accuracy,
            "macro_f1": self.f1,
            "refused_rate": float(self.refused.float().mean()) if self.count else 0.0,
            "unsure_below": self.unsure_below,
            "unsure_rate": self.unsure_rate(),
            "answered_accuracy": self.answered_accuracy(),
            "top_confusions": dict(self.confusions()),
        }


def score_set(
    name: str, probs: Tensor, labels: Tensor, refused: Tensor | None = None, unsure_below: float = UNSURE_BELOW
) -> SetScore:
    """Score (N, 10) probabilities of a set's prepared images, the refused ones counted wrong."""
    refused = torch.zeros(len(labels), dtype=torch.bool) if refused is None else refused.bool()
    probs = probs.float().cpu() * ~refused[:, None]
    return SetScore(name, score(torch.cat([probs, refused[:, None].float()], dim=1), labels, prefix=f"{name}/"), unsure_below)


def group_accuracy(set_score: SetScore, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per group (e.g. unipen_test's contributors, set_groups): the count and the accuracy of its images."""
    right = (set_score.evaluation.predicted == set_score.evaluation.labels).tolist()
    totals: dict[str, list[int]] = {}
    for group, correct in zip(groups, right):
        totals.setdefault(group, [0, 0])
        totals[group][0] += 1
        totals[group][1] += int(correct)
    return {group: {"count": n, "accuracy": hits / n} for group, (n, hits) in sorted(totals.items())}


def benchmark(model: Any, sets: Mapping[str, PreparedSet], unsure_below: float = UNSURE_BELOW) -> dict[str, SetScore]:
    """Scores of a model (anything with `predict_probs`: load_model, load_ensemble) on each prepared set."""
    return {
        name: score_set(name, model.predict_probs(prepared.images), prepared.labels, prepared.refused, unsure_below)
        for name, prepared in sets.items()
    }


def sweep_thresholds(scores: Mapping[str, SetScore], thresholds: Iterable[float] = UNSURE_GRID) -> list[dict[str, Any]]:
    """For each threshold: per set, the share of unsure answers and the accuracy on the answered ones."""
    return [
        {"threshold": t, **{name: {"unsure_rate": s.unsure_rate(t), "answered_accuracy": s.answered_accuracy(t)} for name, s in scores.items()}}
        for t in thresholds
    ]


def choose_threshold(
    scores: Mapping[str, SetScore], set_name: str = "usps", max_unsure: float = 0.02, thresholds: Iterable[float] = UNSURE_GRID
) -> float | None:
    """The largest threshold that leaves at most `max_unsure` of a set's images unsure (None if even the smallest does not)."""
    allowed = [t for t in thresholds if scores[set_name].unsure_rate(t) <= max_unsure]
    return max(allowed) if allowed else None
