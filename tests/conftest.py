"""Shared fixtures: a trained run and the official MNIST test set (helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Re-exported for test files outside this change that still import them from conftest.
from helpers import CONFIG_DIR, QUICK_TRAINING, REPO, compose_config, data_dir  # noqa: F401


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """Run directory of a real (short) training on MNIST: checkpoints/best.ckpt, metrics.json, ..."""
    from lenet.experiment import run

    run_dir = tmp_path_factory.mktemp("trained_run")
    run(compose_config(run_dir, QUICK_TRAINING))
    return run_dir


@pytest.fixture(scope="session")
def mnist_test():
    """Official MNIST test images (10000, 1, 28, 28) uint8 and labels."""
    from lenet.datafiles import load_split

    return load_split(data_dir(), "mnist", "test")
