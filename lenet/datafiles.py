"""The dataset files on disk: official splits read by torchvision, with one-line errors that name the file and the fix.

Lightning-free, so `lenet.evaluation.test_split` and the baselines load data without importing it;
torchvision is imported only when files are read or downloaded (training start-up time matters).
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

from torch import Tensor

from lenet.datasets import DATASETS, NUM_CLASSES
from lenet.geometry import IMAGE_SIZE

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
FIX = "Delete it and run again to download it afresh, or copy an intact file there."


class DataError(RuntimeError):
    """A dataset file is missing, truncated or corrupt; the message says which and what to do."""


def raw_folder(data_dir: str | Path, dataset: str) -> Path:
    """torchvision's layout: <data_dir>/<MNIST|FashionMNIST>/raw/."""
    return Path(data_dir) / DATASETS[dataset]["folder"] / "raw"


def _file_names() -> list[str]:
    return [name for images, labels, _ in SPLITS.values() for name in (images, labels)]


def files_present(data_dir: str | Path, dataset: str = "mnist") -> bool:
    raw = raw_folder(data_dir, dataset)
    return all((raw / n).exists() or (raw / f"{n}.gz").exists() for n in _file_names())


def _unpack(path: Path) -> None:
    """Write `path` from its .gz twin: torchvision reads only unpacked files (its download unpacks too)."""
    gz_path = path.with_name(path.name + ".gz")
    try:
        with gzip.open(gz_path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:  # includes gzip.BadGzipFile
        raise DataError(f"{gz_path} is not a readable gzip file ({error}). {FIX}") from error
    partial = path.with_name(path.name + ".part")  # renamed into place: never a half-written file
    partial.write_bytes(data)
    os.replace(partial, path)


def _check_header(path: Path, magic: int, shape: list[int]) -> None:
    """What torchvision would only assert: the IDX header and the file length MNIST promises."""
    header_len = 4 + 4 * len(shape)
    with open(path, "rb") as f:
        header = f.read(header_len)
    if len(header) < header_len:
        raise DataError(f"{path} is truncated: {len(header)} bytes, not even a header. {FIX}")
    found = [int.from_bytes(header[i : i + 4], "big") for i in range(0, header_len, 4)]
    if found != [magic, *shape]:
        raise DataError(
            f"{path} is not the expected IDX file: header says magic {found[0]:#x} and shape "
            f"{found[1:]}, expected magic {magic:#x} and shape {shape}. {FIX}"
        )
    size, expected = path.stat().st_size, header_len + math.prod(shape)
    if size != expected:
        raise DataError(f"{path} is truncated or padded: {size} bytes, expected {expected}. {FIX}")


def load_split(data_dir: str | Path, dataset: str = "mnist", split: str = "train") -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one official split, checked."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    raw = raw_folder(data_dir, dataset)
    for name in _file_names():  # torchvision insists on all four files, whichever split is read
        if not (raw / name).exists():
            _unpack(raw / name)
    images_name, labels_name, count = SPLITS[split]
    _check_header(raw / images_name, 0x803, [count, IMAGE_SIZE, IMAGE_SIZE])
    _check_header(raw / labels_name, 0x801, [count])
    import torchvision.datasets  # here, not at the top: only loading data pays for it

    cls = getattr(torchvision.datasets, DATASETS[dataset]["torchvision_class"])
    files = cls(str(data_dir), train=split == "train", download=False)
    images, labels = files.data, files.targets  # uint8 (N, 28, 28), int64 (N,)
    if int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{raw / labels_name} holds label {int(labels.max())}, outside 0..9: the file is corrupt. "
            "Delete it and run again to download it afresh."
        )
    return images.unsqueeze(1), labels


def download(data_dir: str | Path, dataset: str = "mnist") -> None:
    """Fetch the original files with torchvision (needs internet), into torchvision's layout."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, DATASETS[dataset]["torchvision_class"])
    try:
        for train in (True, False):
            cls(str(data_dir), train=train, download=True)
    except Exception as error:  # network errors come in many types; all mean the same to the user
        raise DataError(
            f"{dataset} is not in {Path(data_dir).resolve()} and could not be downloaded ({error}). "
            f"Put the four IDX files (or their .gz) in {raw_folder(data_dir, dataset)}, "
            "or point data.data_dir (environment variable LENET_DATA_DIR) at a folder that has them."
        ) from error
