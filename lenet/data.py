"""MNIST-style datasets held in memory as uint8 tensors and served in whole batches.

The data side of every experiment: `MNISTDataModule` reads the official files (lenet.datafiles,
downloading them with torchvision when they are missing and the machine is online), splits the
official training set into a seeded train/validation split, keeps the official 10,000-image test
set apart, and serves batches by indexing one tensor instead of collating single samples. Batches
leave the loader as uint8 and become normalised floats on the training device, where augmentation
also happens.

More writers: `data.sources=[mnist,unipen]` adds UNIPEN's training writers (lenet.unipen_images:
each pen digit drawn `renders` times in the styles people's digits reach the product in, and
prepared as served images are). Each epoch shows every MNIST digit once and each UNIPEN digit
`weights.unipen` times, a different drawing each time; UNIPEN's validation writers are a second
validation set (`val_unipen/acc`). `data.sources=[mnist,corrections]` (with unipen too, if wanted)
adds the digits users corrected (lenet.corrections: a database kept by `lenet-serve --collect`, or a
`lenet-corrections export` folder, named by `data.corrections.path`), each shown `weights.corrections`
times an epoch; they are too few to validate on. The test set stays MNIST's official one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
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

SOURCES = ("mnist", "unipen", "corrections")  # what training can draw from; MNIST (its train split) always comes first
VALIDATED = ("mnist", "unipen")  # the sources with a validation set of their own
UNIPEN_DEFAULTS = {"renders": 4, "styles": {"page": 1.0}, "seed": 0}
CORRECTIONS_DEFAULTS = {"path": None, "writer": None}

# ----------------------------------------------------------------------------- batches by index


class BatchIndices:
    """Index batches over `size` samples: seeded shuffling per epoch and per-process sharding.

    Each of `world_size` processes takes every world_size-th position of the epoch's order, so
    shards never overlap. For training, shards are cut to equal length so every process runs the
    same number of steps (DDP needs that); for evaluation every sample is kept exactly once.
    `pool(epoch)`, when given, names the samples of each epoch (`size` of them) instead of 0..size-1.
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
        pool: Callable[[int], Tensor] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.device = torch.device(device)
        self.pool = pool
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
        if self.pool is not None:
            order = self.pool(self.epoch)[order]
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
        sources: Sequence[str] = ("mnist",),
        weights: Mapping[str, float] | None = None,
        unipen: Mapping[str, Any] | None = None,
        corrections: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset={dataset!r} is unknown; choose one of {sorted(DATASETS)}")
        sources, weights, unipen = _check_sources(dataset, sources, weights, unipen)
        corrections = _check_corrections(sources, corrections)
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
        self.save_hyperparameters()  # the values as checked above: sources, weights and unipen filled in
        self.mean, self.std = DATASETS[dataset]["mean"], DATASETS[dataset]["std"]
        self.augment = _build_augment(augment)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._extra_rows: dict[str, tuple[int, int, int]] = {}  # source -> (first training row, digits, renders each)

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
        if "unipen" in self.hparams.sources:
            self._add_unipen()
        if "corrections" in self.hparams.sources:
            self._add_corrections()

    @property
    def val_sources(self) -> list[str]:
        """The names of the validation sets, in the order of val_dataloader's loaders."""
        return [name for name in self.hparams.sources if name in VALIDATED]

    def _append_training(self, name: str, images: Tensor, labels: Tensor) -> None:
        """`images` (N, R, 1, 28, 28): R drawings of each of N digits, after the training rows so far."""
        before_images, before_labels = self.splits["train"]
        renders = images.shape[1]
        self._extra_rows[name] = (len(before_labels), len(labels), renders)  # digit d's renders at rows start+d*R .. start+d*R+R-1
        self.splits["train"] = (torch.cat([before_images, images.flatten(0, 1)]), torch.cat([before_labels, labels.repeat_interleave(renders)]))

    def _add_unipen(self) -> None:
        """UNIPEN's training writers' renders after MNIST's training digits, its validation writers as a second val set."""
        from lenet.unipen_images import PAGE, load_renders  # reads and draws only when asked for

        settings, data_dir = self.hparams.unipen, self.hparams.data_dir
        log = lambda message: print(f"data: {message}", flush=True)  # noqa: E731 - the first run draws for minutes
        train = load_renders(data_dir, "train", settings["renders"], settings["styles"], settings["seed"], log=log)
        val = load_renders(data_dir, "val", 1, PAGE, settings["seed"], log=log)
        self._append_training("unipen", train.images, train.labels)
        self.splits["val_unipen"] = (val.images[:, 0], val.labels)

    def _add_corrections(self) -> None:
        """The digits users corrected (not-a-digit rows skipped: a ten-digit model has no answer for them)."""
        from lenet.corrections import NOT_A_DIGIT, CorrectionsError, read_corrections

        settings = self.hparams.corrections
        try:
            images, labels = read_corrections(settings["path"], settings["writer"])
        except CorrectionsError as error:
            raise DataError(f"data.corrections.path: {error}") from error
        digits = labels != NOT_A_DIGIT
        if not digits.any():
            by_writer = f" by writer {settings['writer']!r}" if settings["writer"] else ""
            raise DataError(
                f"data.corrections.path={settings['path']} holds only not-a-digit corrections{by_writer}: "
                "collect some digits, or leave corrections out of data.sources."
            )
        self._append_training("corrections", images[digits].unsqueeze(1), labels[digits])

    def epoch_pool(self, epoch: int) -> Tensor:
        """The training rows of one epoch: every MNIST digit, and each digit of another source weights[source]
        times (a different render each time, so R renders last R / weight epochs before one repeats)."""
        mnist_count = min(start for start, _, _ in self._extra_rows.values())  # MNIST's rows come first
        return torch.cat([torch.arange(mnist_count)] + [self._draws(name, epoch) for name in self._extra_rows])

    def _draws(self, source: str, epoch: int) -> Tensor:
        start, count, renders = self._extra_rows[source]
        weight = self.hparams.weights[source]
        repeats = math.ceil(weight)
        digits = torch.arange(count)
        drawn = torch.cat([start + digits * renders + (epoch * repeats + j + digits) % renders for j in range(repeats)])
        wanted = max(round(weight * count), 1)
        if wanted < len(drawn):  # a fractional weight: a seeded subset of the last round
            keep = torch.randperm(len(drawn) - (repeats - 1) * count, generator=torch.Generator().manual_seed(self.hparams.shuffle_seed + epoch))
            drawn = torch.cat([drawn[: (repeats - 1) * count], drawn[(repeats - 1) * count :][keep[: wanted - (repeats - 1) * count]]])
        return drawn

    def _batches(self, split: str, training: bool) -> InMemoryBatches:
        self.setup()
        images, labels = self.splits[split]
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        pool = self.epoch_pool if training and self._extra_rows else None
        sampler = BatchIndices(
            len(pool(0)) if pool else len(labels),
            self.hparams.batch_size if training else self.hparams.eval_batch_size,
            shuffle=training,
            seed=self.hparams.shuffle_seed,
            rank=rank,
            world_size=world,
            drop_last=False,
            device=device,
            pool=pool,
        )
        # The whole split moves to the device once (47 MB for MNIST), so batches never cross the bus.
        return InMemoryBatches(images.to(device), labels.to(device), sampler)

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", training=True)

    def val_dataloader(self) -> InMemoryBatches | list[InMemoryBatches]:
        if self.val_sources == ["mnist"]:
            return self._batches("val", training=False)
        return [self._batches("val" if name == "mnist" else f"val_{name}", training=False) for name in self.val_sources]

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", training=False)

    def predict_dataloader(self) -> InMemoryBatches:
        return self._batches("test", training=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch  # (B, 1, 28, 28) uint8
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = apply(self.augment, images.float() / 255, labels)  # augmentations work on 0..1 floats
        return normalize(images, self.mean, self.std), labels


def mnist_validation(data_dir: str | Path, dataset: str = "mnist") -> tuple[Tensor, Tensor]:
    """The 6,000 training digits every run holds out for validation (the data module's seeded split)."""
    datamodule = MNISTDataModule(data_dir=str(data_dir), dataset=dataset, download=False)
    datamodule.setup()
    return datamodule.splits["val"]


def _check_sources(
    dataset: str, sources: Sequence[str], weights: Mapping[str, float] | None, unipen: Mapping[str, Any] | None
) -> tuple[list[str], dict[str, float], dict[str, Any]]:
    """data.sources, data.weights and data.unipen checked, defaults filled in, as plain values."""
    sources = [sources] if isinstance(sources, str) else list(to_plain(sources) or [])
    unknown = [name for name in sources if name not in SOURCES]
    if unknown or not sources or sources[0] != "mnist" or len(set(sources)) != len(sources):
        raise ValueError(
            f"data.sources={sources!r} must list each source once, mnist first, from {list(SOURCES)}: "
            "e.g. data.sources=[mnist,unipen]"
        )
    if dataset != "mnist" and len(sources) > 1:
        raise ValueError(f"data.sources={sources} adds handwritten digits, which fit data.dataset=mnist only, not {dataset}")
    weights = {name: 1.0 for name in SOURCES} | dict(to_plain(weights) or {})
    for name, weight in weights.items():
        if name not in SOURCES:
            raise ValueError(f"data.weights names {name!r}, which is not a source; the sources are {list(SOURCES)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ValueError(f"data.weights.{name}={weight!r} must be a positive number (times the source's size per epoch), e.g. 2")
    if weights["mnist"] != 1:
        raise ValueError("data.weights.mnist must be 1: an epoch is one pass over MNIST's training digits; weigh the other sources")
    unipen = {**UNIPEN_DEFAULTS, **(to_plain(unipen) or {})}
    extra = sorted(set(unipen) - set(UNIPEN_DEFAULTS))
    if extra:
        raise ValueError(f"data.unipen has no setting(s) {extra}; it has {sorted(UNIPEN_DEFAULTS)}")
    if "unipen" in sources:
        from lenet.unipen_images import check_styles

        if isinstance(unipen["renders"], bool) or not isinstance(unipen["renders"], int) or unipen["renders"] < 1:
            raise ValueError(f"data.unipen.renders={unipen['renders']!r} must be a positive whole number, e.g. 4")
        unipen["styles"] = check_styles(unipen["styles"] or {})
    return sources, weights, unipen


def _check_corrections(sources: Sequence[str], corrections: Mapping[str, Any] | None) -> dict[str, Any]:
    """data.corrections checked (a path when the corrections are a source), defaults filled in."""
    corrections = {**CORRECTIONS_DEFAULTS, **(to_plain(corrections) or {})}
    extra = sorted(set(corrections) - set(CORRECTIONS_DEFAULTS))
    if extra:
        raise ValueError(f"data.corrections has no setting(s) {extra}; it has {sorted(CORRECTIONS_DEFAULTS)}")
    for name in ("path", "writer"):
        if corrections[name] is not None and not isinstance(corrections[name], str):
            raise ValueError(f"data.corrections.{name}={corrections[name]!r} must be text, e.g. data.corrections.{name}=corrections.db")
    if "corrections" in sources and not corrections["path"]:
        raise ValueError(
            "data.sources names corrections but data.corrections.path is not set: point it at a database kept by "
            "lenet-serve --collect FILE (or a lenet-corrections export folder), e.g. data.corrections.path=corrections.db"
        )
    return corrections


def _build_augment(spec: Mapping[str, Any] | None):
    """The augmentation a `_target_` mapping names, from the allow-list (None: no augmentation)."""
    return build(spec, "augmentation", "data.augment") if spec else None
