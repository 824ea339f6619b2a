"""Load a trained model from a checkpoint or run directory, and predict probabilities in batches.

Checkpoints are read with `torch.load(weights_only=True)`: tensors and plain data only, no pickled
code runs. The model is rebuilt from the checkpoint's own hyperparameters, so a run trained with
any model/data overrides evaluates and serves without repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lenet.data import DATASETS, normalize


@dataclass
class LoadedModel:
    """A network in eval mode plus what is needed to feed it and to rebuild its data."""

    net: nn.Module
    mean: float
    std: float
    checkpoint_path: Path
    model_hparams: dict[str, Any]
    data_hparams: dict[str, Any]
    history: list[dict[str, float]]  # per-epoch training metrics, when the checkpoint has them

    @torch.no_grad()
    def predict_probs(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """uint8 (0..255) or float (0..1) images (N, 1, 28, 28) -> probabilities (N, 10)."""
        device = next(self.net.parameters()).device
        chunks = [
            self.net(normalize(images[i : i + batch_size].to(device), self.mean, self.std)).softmax(dim=1)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(chunks).cpu() if chunks else torch.empty(0, 10)


def resolve_checkpoint(path: str | Path) -> Path:
    """A .ckpt file, or a run directory (its checkpoints/best.ckpt)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.ckpt", path / "best.ckpt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"{path} is a directory without checkpoints/best.ckpt: pass a run directory made by "
            "`python train.py` or the path of a .ckpt file."
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: pass a .ckpt file or a run directory.")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded without executing pickled code; clear errors for bad files."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error}). It may be "
            "truncated or not made by this project: use another checkpoint, e.g. last.ckpt."
        ) from error
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} has no state_dict/hyper_parameters: not a lenet Lightning checkpoint.")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the trained network of a checkpoint (or run directory) for inference."""
    from lenet.module import Classifier

    checkpoint_path = resolve_checkpoint(path)
    checkpoint = read_checkpoint(checkpoint_path)
    classifier = Classifier(**checkpoint["hyper_parameters"])
    classifier.load_state_dict(checkpoint["state_dict"])
    data_hparams = dict(checkpoint.get("datamodule_hyper_parameters", {}))
    stats = DATASETS[data_hparams.get("dataset", "mnist")]
    history = checkpoint.get("callbacks", {}).get("History", {}).get("epochs", [])
    net = classifier.net.to(device).eval()
    return LoadedModel(
        net, stats["mean"], stats["std"], checkpoint_path, dict(checkpoint["hyper_parameters"]), data_hparams, history
    )
