"""Helpers shared by the tests (imported as a module; fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lenet.config import CONFIG_DIR, load_config

REPO = Path(__file__).resolve().parents[1]
__all__ = ["CONFIG_DIR", "QUICK_TRAINING", "REPO", "compose_config", "data_dir"]


def data_dir() -> Path:
    """LENET_DATA_DIR, else ../shared/data beside the repo (CI's layout)."""
    path = Path(os.environ.get("LENET_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found in {path}: set LENET_DATA_DIR to a folder holding MNIST/raw/")
    return path


def compose_config(run_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """The real conf/train.yaml with overrides, run_dir pointed at a test folder."""
    return load_config([f"data.data_dir={data_dir()}", *overrides], run_dir=run_dir)


# A short real training: one epoch of the default recipe at a large batch (about 15 s on 2 cores,
# about 98% test accuracy), shared by every test that needs a trained checkpoint.
QUICK_TRAINING = ["trainer.max_epochs=1", "data.batch_size=128", "trainer.enable_progress_bar=false"]
