"""MNIST-style datasets held in memory as uint8 tensors and served in whole batches.

The data side of every experiment: `MNISTDataModule` reads the official files (lenet.datafiles,
downloading them with torchvision when they are missing and the machine is online), splits the
official training set into a seeded train/validation split, keeps the official 10,000-image test
set apart, and serves batches by indexing one tensor instead of collating single samples. Batches
leave the loader as uint8 and become normalised floats on the training device, where augmentation
also happens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lenet.augment import apply
from lenet.config import to_plain
from lenet.datafiles import SPLITS, DataError, download, files_present, load_split
from lenet.datasets import DATASETS, normalize
from lenet.registry import build

# ----------------------------------------------------------------------------- batches by index


class BatchIndices:
    """Index batches over `size` samples: seeded shuffling per epoch and per-process sharding.

    Each of `world_size` processes takes every world_size-th position of the epoch's order, so
    shards never overlap. For training, shards are cut to equal length so every process runs the
    same number of steps (DDP needs that); for evaluation every sample is kept exactly once.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.device = torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch, also after resuming."""
        self.epoch = epoch

    def _shard_size(self) -> int:
        if self.shuffle:  # training: equal shards
            return self.size // self.world_size
        return len(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        shard = order[self.rank :: self.world_size][: self._shard_size()].to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield shard[start : start + self.batch_size]


class InMemoryBatches:
    """Iterable of (images, labels) batches drawn by index from two tensors; no collate, no workers.

    Shaped like a DataLoader where Lightning looks: `sampler.set_epoch` is called every epoch.
    """

    batch_sampler = None  # the sampler already yields whole batches

    def __init__(self, images: Tensor, labels: Tensor, sampler: BatchIndices) -> None:
        self.images, self.labels, self.sampler = images, labels, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in self.sampler:
            yield self.images[index], self.labels[index]


# ----------------------------------------------------------------------------- the data module


class MNISTDataModule(L.LightningDataModule):
    """MNIST (or Fashion-MNIST): seeded train/validation split of the official training set,
    official test set, whole-batch normalisation and optional augmentation on the device.

    >>> dm = MNISTDataModule(data_dir="data", batch_size=128)
    >>> dm.hparams.val_size
    6000
    """

    def __init__(
        self,
        data_dir: str = "data",
        dataset: str = "mnist",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 6000,
        split_seed: int = 42,
        shuffle_seed: int = 0,
        download: bool = True,
        augment: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset={dataset!r} is unknown; choose one of {sorted(DATASETS)}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("val_size", val_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"data.{name}={value!r} must be a whole number, e.g. data.{name}=128")
        if not 0 < val_size < SPLITS["train"][2]:
            raise ValueError(f"data.val_size={val_size} must be between 1 and 59,999")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"data.{name}={value} must be a positive integer")
        # Plain dicts and lists only: checkpoints store this and are read back with weights_only=True.
        augment = to_plain(augment)
        self.save_hyperparameters()
        self.mean, self.std = DATASETS[dataset]["mean"], DATASETS[dataset]["std"]
        self.augment = _build_augment(augment)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    def prepare_data(self) -> None:
        if not files_present(self.hparams.data_dir, self.hparams.dataset):
            if not self.hparams.download:
                raise DataError(
                    f"{self.hparams.dataset} files are missing from {Path(self.hparams.data_dir).resolve()} "
                    "and data.download=false. Set data.download=true (needs internet) or point "
                    "data.data_dir / LENET_DATA_DIR at a folder holding <Dataset>/raw/*-ubyte[.gz]."
                )
            download(self.hparams.data_dir, self.hparams.dataset)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()  # cheap when the files exist; makes setup() usable without a Trainer
        images, labels = load_split(self.hparams.data_dir, self.hparams.dataset, "train")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_index, train_index = order[: self.hparams.val_size], order[self.hparams.val_size :]
        self.splits["train"] = (images[train_index], labels[train_index])
        self.splits["val"] = (images[val_index], labels[val_index])
        self.splits["test"] = load_split(self.hparams.data_dir, self.hparams.dataset, "test")

    def _batches(self, split: str, training: bool) -> InMemoryBatches:
        self.setup()
        images, labels = self.splits[split]
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = BatchIndices(
            len(labels),
            self.hparams.batch_size if training else self.hparams.eval_batch_size,
            shuffle=training,
            seed=self.hparams.shuffle_seed,
            rank=rank,
            world_size=world,
            drop_last=False,
            device=device,
        )
        # The whole split moves to the device once (47 MB for MNIST), so batches never cross the bus.
        return InMemoryBatches(images.to(device), labels.to(device), sampler)

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", training=True)

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", training=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", training=False)

    def predict_dataloader(self) -> InMemoryBatches:
        return self._batches("test", training=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch  # (B, 1, 28, 28) uint8
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = apply(self.augment, images.float() / 255, labels)  # augmentations work on 0..1 floats
        return normalize(images, self.mean, self.std), labels


def _build_augment(spec: Mapping[str, Any] | None):
    """The augmentation a `_target_` mapping names, from the allow-list (None: no augmentation)."""
    return build(spec, "augmentation", "data.augment") if spec else None
