"""Helpers shared by the tests (imported as a module; fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from lenet.config import CONFIG_DIR, load_config
from lenet.datafiles import files_present

REPO = Path(__file__).resolve().parents[1]
__all__ = [
    "CONFIG_DIR", "QUICK_TRAINING", "REPO", "SYNTHETIC_TRAINING", "TINY",
    "compose_config", "data_dir", "first_of", "train_module", "user_like_files",
]  # fmt: skip


def data_dir() -> Path:
    """The data folder, found as train.py finds it: LENET_DATA_DIR, else data/ (conf/data/mnist.yaml).
    Slow tests find real MNIST there; in the fast tier LENET_DATA_DIR is the synthetic folder (conftest.py)."""
    setting = os.environ.get("LENET_DATA_DIR")
    path = Path(setting) if setting else REPO / "data"
    if not files_present(path):
        where = f"LENET_DATA_DIR={setting}" if setting else f"{path} (LENET_DATA_DIR is unset)"
        pytest.fail(
            f"MNIST not found in {where}: run `python train.py` once to download it there, point LENET_DATA_DIR "
            "at a folder holding MNIST/raw/, or run the tests that need no MNIST: pytest -m 'not slow'",
            pytrace=False,
        )
    return path


def compose_config(run_dir: Path, overrides: list[str] = (), data: Path | None = None) -> DictConfig:
    """The real conf/train.yaml with overrides, run_dir pointed at a test folder, reading the data
    folder `data` (default: data_dir())."""
    return load_config([f"data.data_dir={data or data_dir()}", *overrides], run_dir=run_dir)


def train_module():
    """train.py as a module: its Hydra main also accepts a composed config directly."""
    spec = importlib.util.spec_from_file_location("train_entry_point", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_of(labels: Tensor, digit: int) -> int:
    """Index of the first image of `digit` in a split's labels."""
    return int((labels == digit).nonzero()[0])


def user_like_files(folder: Path, images: Tensor, labels: Tensor) -> dict[str, int]:
    """The first ten digits as user-like files in `folder` (dark ink on white, larger canvas, several
    formats): {file name: label}."""
    names = {}
    for index, suffix in zip(range(10), [".png", ".jpg", ".bmp", ".webp", ".tiff"] * 2):
        digit = Image.fromarray(255 - images[index, 0].numpy()).resize((70, 70), Image.Resampling.BILINEAR)
        paper = Image.new("L", (160, 120), 255)
        paper.paste(digit, (10 + 8 * index, 30))
        name = f"digit{index:02d}{suffix}"
        paper.save(folder / name)
        names[name] = int(labels[index])
    return names


# A short real training: one epoch of the default recipe at a large batch (about 15 s on 2 cores,
# about 98% test accuracy on real MNIST), the run of conftest's trained_run.
QUICK_TRAINING = ["trainer.max_epochs=1", "data.batch_size=128", "trainer.enable_progress_bar=false"]
# The same on synthetic digits (tests/synthetic_mnist.py), cut to 100 batches: printed digits are
# easier than handwriting, and 100 batches read about 98% of them. Logged every 20 steps, so the
# learning-rate curve still has points to show.
SYNTHETIC_TRAINING = [*QUICK_TRAINING, "trainer.limit_train_batches=100", "trainer.log_every_n_steps=20"]

# A few batches, with validation on 5 batches of 1000 (so best_val_acc and test/acc differ) and no
# figures (a third of a short run's time; the runs above draw them): every other path of a run in seconds.
TINY = [
    "trainer.max_epochs=1", "trainer.limit_train_batches=20", "+trainer.limit_val_batches=5",
    "data.batch_size=128", "trainer.enable_progress_bar=false", "figures=false",
]  # fmt: skip
