"""Ensembles: average the class probabilities of several trained checkpoints and score the result.

    lenet-ensemble RUN_DIR_OR_CKPT [RUN_DIR_OR_CKPT ...] [--data-dir DIR] [--out metrics.json]

Members may be any networks trained by this project (each is rebuilt from its own checkpoint and
fed through its own normalisation); the metrics are lenet.metrics.evaluate_predictions's, on the
official test set.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lenet.data import load_split
from lenet.inference import LoadedModel, load_model
from lenet.metrics import evaluate_predictions
from lenet.models import count_parameters


def load_members(checkpoints: Sequence[str | Path], device: str | torch.device = "cpu") -> list[LoadedModel]:
    if not checkpoints:
        raise ValueError("an ensemble needs at least one checkpoint or run directory")
    return [load_model(path, device) for path in checkpoints]


def ensemble_probs(members: Sequence[LoadedModel], images: Tensor) -> Tensor:
    """Mean of the members' probabilities, (N, 10), for uint8 or [0, 1] float images (N, 1, 28, 28)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    return torch.stack([member.predict_probs(images) for member in members]).mean(dim=0)


def evaluate_ensemble(members: Sequence[LoadedModel], images: Tensor, labels: Tensor) -> dict[str, Any]:
    """Test metrics of the averaged probabilities, plus size and inference speed of the ensemble."""
    started = time.perf_counter()
    probs = ensemble_probs(members, images)
    seconds = time.perf_counter() - started
    return {
        **evaluate_predictions(probs, labels),
        "members": len(members),
        "parameters": sum(count_parameters(member.net) for member in members),
        "inference_images_per_second": round(len(images) / seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="lenet-ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="run directories (their checkpoints/best.ckpt) or .ckpt files")
    parser.add_argument("--data-dir", default=os.environ.get("LENET_DATA_DIR", "data"),
                        help="folder holding <Dataset>/raw/ (default: $LENET_DATA_DIR or ./data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)

    members = load_members(args.checkpoints)
    datasets = {member.data_hparams.get("dataset", "mnist") for member in members}
    if len(datasets) != 1:
        parser.error(f"the members were trained on different datasets {sorted(datasets)}: ensemble like with like")
    images, labels = load_split(args.data_dir, datasets.pop(), "test")
    metrics = evaluate_ensemble(members, images, labels)
    for key in ("test/acc", "test/precision", "test/recall", "test/f1"):
        print(f"{key:15s} {metrics[key]:.4f}")
    print(f"{len(members)} members, {metrics['parameters']:,} parameters, "
          f"{metrics['inference_images_per_second']:,.0f} images/s")
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


if __name__ == "__main__":
    main()
