"""Shared fixtures (helpers live in tests/helpers.py), in two kinds:

- synthetic_*: printed digits in MNIST's files (tests/synthetic_mnist.py), written for the session;
  the fast tier (`pytest -m "not slow"`) needs nothing else.
- real MNIST (mnist_dir, mnist_test, trained_run, image_dir): read from the folder train.py uses
  (LENET_DATA_DIR, else data/). A test that asks for one of them is marked slow here, so the fast
  tier never needs MNIST.

In a test not marked slow, LENET_DATA_DIR (where the commands look for data by default) is the
synthetic folder: nothing in the fast tier reads, or downloads, real MNIST.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import QUICK_TRAINING, SYNTHETIC_TRAINING, compose_config, data_dir, user_like_files
from synthetic_mnist import write_mnist

REAL_MNIST_FIXTURES = {"mnist_dir", "mnist_test", "trained_run", "image_dir"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_MNIST_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def fast_tests_read_synthetic_digits(request, monkeypatch) -> None:
    """LENET_DATA_DIR is the synthetic folder in a test not marked slow (see above)."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("LENET_DATA_DIR", str(request.getfixturevalue("synthetic_dir")))


def train_quickly(run_dir: Path, data: Path, overrides: list[str]) -> Path:
    """One short training on the MNIST files in `data`: its run directory."""
    from lenet.experiment import run

    run(compose_config(run_dir, overrides, data))
    return run_dir


def read_split(data: Path, name: str):
    from lenet.datafiles import load_split

    return load_split(data, "mnist", name)


# ----------------------------------------------------------------------------- synthetic digits


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A data folder holding synthetic MNIST files (60,000 + 10,000 printed digits)."""
    return write_mnist(tmp_path_factory.mktemp("synthetic_mnist"))


@pytest.fixture(scope="session")
def synthetic_test(synthetic_dir):
    """The synthetic test split: images (10000, 1, 28, 28) uint8 and labels."""
    return read_split(synthetic_dir, "test")


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory, synthetic_dir) -> Path:
    """Run directory of a short training on the synthetic digits: checkpoints/best.ckpt, metrics.json, ..."""
    return train_quickly(tmp_path_factory.mktemp("synthetic_run"), synthetic_dir, SYNTHETIC_TRAINING)


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory, synthetic_test) -> tuple[Path, dict[str, int]]:
    """Ten synthetic test digits as user-like files: (folder, {file name: label})."""
    folder = tmp_path_factory.mktemp("synthetic_images")
    return folder, user_like_files(folder, *synthetic_test)


# ----------------------------------------------------------------------------- real MNIST (slow)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Real MNIST's data folder; a test without it fails naming the folder and the fix."""
    return data_dir()


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    """Official MNIST test images (10000, 1, 28, 28) uint8 and labels."""
    return read_split(mnist_dir, "test")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir) -> Path:
    """Run directory of a real (short) training on MNIST: checkpoints/best.ckpt, metrics.json, ..."""
    return train_quickly(tmp_path_factory.mktemp("trained_run"), mnist_dir, QUICK_TRAINING)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory, mnist_test) -> tuple[Path, dict[str, int]]:
    """Ten MNIST test digits as user-like files: (folder, {file name: label})."""
    folder = tmp_path_factory.mktemp("images")
    return folder, user_like_files(folder, *mnist_test)
