"""Ensembles: average the class probabilities of several trained checkpoints and score the result.

    lenet-ensemble RUN_DIR_OR_CKPT [RUN_DIR_OR_CKPT ...] [--data-dir DIR] [--out metrics.json]

Members may be any networks trained by this project (each is rebuilt from its own checkpoint by
`lenet.inference.load_ensemble` and fed through its own normalisation); the scoring is
`lenet.evaluation.evaluate`, on the official test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from lenet.evaluation import default_data_dir, evaluate, test_split
from lenet.inference import CheckpointError, Ensemble, Model, load_ensemble
from lenet.metrics import SUMMARY_METRICS
from lenet.models import count_parameters


def members_of(model: Model) -> list:
    return model.members if isinstance(model, Ensemble) else [model]


def evaluate_ensemble(model: Model, images: Tensor, labels: Tensor) -> dict[str, Any]:
    """Test metrics of the averaged probabilities, plus size and inference speed of the ensemble."""
    started = time.perf_counter()
    evaluation = evaluate(model, images, labels)
    seconds = time.perf_counter() - started
    members = members_of(model)
    return {
        **evaluation.metrics,
        "members": len(members),
        "parameters": sum(count_parameters(member.net) for member in members),
        "inference_images_per_second": round(len(images) / seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="lenet-ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="run directories (their checkpoints/best.ckpt) or .ckpt files")
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding <Dataset>/raw/ (default: $LENET_DATA_DIR or ./data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)

    try:
        model = load_ensemble(args.checkpoints)
    except (CheckpointError, ValueError) as error:
        parser.exit(2, f"lenet-ensemble: {error}\n")
    metrics = evaluate_ensemble(model, *test_split(model.dataset, args.data_dir))
    for name in SUMMARY_METRICS:
        print(f"test/{name:11s} {metrics[f'test/{name}']:.4f}")
    print(f"{metrics['members']} members, {metrics['parameters']:,} parameters, "
          f"{metrics['inference_images_per_second']:,.0f} images/s")
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def cli() -> None:
    """`lenet-ensemble`: main() without its return value, which an entry point would take for the exit status."""
    main()


if __name__ == "__main__":
    main(sys.argv[1:])
