"""`Classifier`: the LightningModule around any network in lenet.models.

It owns the loss, the optimiser and LR schedule (both given as Hydra configs and built here, so a
checkpoint's hyperparameters alone rebuild the model) and the per-stage torchmetrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lenet.config import to_plain
from lenet.inference import Ensemble, LoadedModel, load_ensemble
from lenet.registry import build
from lenet.metrics import classification_metrics

# Scheduler arguments that mean "the whole run": left null in a config, they are filled with the
# run's number of optimizer steps, so one-cycle or cosine schedules follow trainer.max_epochs.
RUN_LENGTH_ARGUMENTS = ("total_steps", "T_max")

# How the network's weights and activations are laid out in memory: which is faster depends on the
# CPU and the batch size (benchmarks/memory_format.py measures both); the numbers are the same.
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


class Classifier(L.LightningModule):
    """Cross-entropy classifier; `net`, `optimizer` and `scheduler` are `_target_` mappings.

    >>> model = Classifier(net={"_target_": "lenet.models.LeNet5"},
    ...                    optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1})
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        num_classes: int = 10,
        memory_format: str = "channels_last",
        distill: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"model.memory_format={memory_format!r} is unknown; choose one of {sorted(MEMORY_FORMATS)}")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing={label_smoothing!r} must be a number in [0, 1), e.g. 0.1")
        lr = (optimizer or {}).get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f"model.optimizer.lr={lr!r} must be a positive number, e.g. model.optimizer.lr=0.05")
        self.save_hyperparameters(
            {
                "net": to_plain(net),
                "optimizer": to_plain(optimizer),
                "scheduler": to_plain(scheduler),
                "label_smoothing": label_smoothing,
                "num_classes": num_classes,
                "memory_format": memory_format,
                "distill": to_plain(distill),
            },
            logger=False,  # hparams go to TensorBoard once, with the final metrics (lenet.experiment)
        )
        self.net = build(self.hparams.net, "network", "model.net").to(memory_format=MEMORY_FORMATS[memory_format])
        # Not submodules: the teachers are never trained, saved in this checkpoint or counted as its
        # parameters; on_fit_start moves them to the training device.
        self.distillation = load_teachers(self.hparams.distill)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.source_val_metrics = nn.ModuleDict()  # filled in setup() when the data has more validation sets
        self.test_metrics = classification_metrics(num_classes, "test/")
        # trainer.test's probabilities in test-set order (N, C) and labels (N,): the run's report reads them.
        self.test_outputs: tuple[Tensor, Tensor] | None = None
        self._test_batches: list[tuple[Tensor, Tensor]] = []
        self._train_loss_sum = torch.zeros(())
        self._train_predictions: list[Tensor] = []
        self._train_targets: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def model_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        return loss, logits, y

    def distillation_loss(self, logits: Tensor, x: Tensor) -> Tensor:
        """KL divergence from the teachers' mean softened probabilities on the same (augmented) batch,
        scaled by T^2 so its gradients keep their size whatever the temperature (Hinton et al., 2015)."""
        temperature = self.distillation.temperature
        with torch.no_grad():
            targets = torch.stack([teacher(x).div(temperature).softmax(dim=1) for teacher in self.distillation.teachers]).mean(dim=0)
        log_probs = (logits / temperature).log_softmax(dim=1)
        return F.kl_div(log_probs, targets, reduction="batchmean") * temperature**2

    def on_fit_start(self) -> None:
        if self.distillation is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "hparams", {}).get("dataset", self.distillation.dataset)
        if dataset != self.distillation.dataset:
            raise ValueError(
                f"model.distill.teachers were trained on {self.distillation.dataset}, this run trains on {dataset}: "
                f"use teachers trained on {dataset}"
            )
        self.distillation.teachers = [teacher.to(self.device) for teacher in self.distillation.teachers]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, y = self.model_step(batch)
        if self.distillation is not None:
            weight = self.distillation.weight
            loss = (1 - weight) * loss + weight * self.distillation_loss(logits, batch[0])
        # Per step only device-side bookkeeping: no host sync, no metric update, no logger call.
        # The epoch's predictions go through the train metrics once, at the end of the epoch. (The
        # standard self.log(metric, on_epoch=True) moves each Metric .to(device) on every call: a
        # 1-epoch fit took 14-20 s that way against 9-16 s this way, same process, alternating runs.)
        self._train_loss_sum += loss.detach() * len(y)
        self._train_predictions.append(logits.detach().argmax(dim=1))
        self._train_targets.append(y)
        if self.trainer is not None and batch_idx % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum = torch.zeros((), device=self.device)
        self._train_predictions, self._train_targets = [], []

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After the epoch's last batch, before validation and before any epoch-end callback, so that
        # History and checkpoints saved at the end of this epoch already see these values. The last
        # batch comes early when max_steps ends the run mid-epoch (max_steps=-1: no limit).
        trainer = self.trainer
        if batch_idx + 1 == trainer.num_training_batches or 0 <= trainer.max_steps <= trainer.global_step:
            predictions, targets = torch.cat(self._train_predictions), torch.cat(self._train_targets)
            self.train_metrics.update(predictions, targets)
            epoch_metrics = {"train/loss": self._train_loss_sum / len(targets), **self.train_metrics.compute()}
            self.log_dict(epoch_metrics, on_step=False, on_epoch=True, sync_dist=True)
            self.train_metrics.reset()
            self._train_predictions, self._train_targets = [], []

    def setup(self, stage: str) -> None:
        # More validation sets than MNIST's (data.sources=[mnist,unipen]): one metrics object each,
        # logged as val_<source>/acc. Metric states are not saved, so checkpoints do not change.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(datamodule, "val_sources", ["mnist"]))[1:]
        self.source_val_metrics = nn.ModuleDict({name: classification_metrics(self.hparams.num_classes, f"val_{name}/") for name in names})

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss, logits, y = self.model_step(batch)
        if dataloader_idx == 0:  # MNIST's validation split: val/acc picks the best checkpoint
            metrics, prefix = self.val_metrics, "val/"
        else:
            name = list(self.source_val_metrics)[dataloader_idx - 1]
            metrics, prefix = self.source_val_metrics[name], f"val_{name}/"
        metrics.update(logits, y)
        self.log(f"{prefix}loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()
        for metrics in self.source_val_metrics.values():
            self.log_dict(metrics.compute(), prog_bar=True)
            metrics.reset()

    def on_test_epoch_start(self) -> None:
        self._test_batches = []

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, y = self.model_step(batch)
        self.test_metrics.update(logits, y)
        self._test_batches.append((logits.softmax(dim=1), y))
        self.log("test/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()
        probs = torch.cat([p for p, _ in self._test_batches])
        labels = torch.cat([y for _, y in self._test_batches])
        self.test_outputs = (self._in_dataset_order(probs), self._in_dataset_order(labels))
        self._test_batches = []

    def _in_dataset_order(self, shard: Tensor) -> Tensor:
        """Under DDP, rank r tested samples r, r + W, r + 2W, ... (lenet.data.BatchIndices): gather
        every rank's shard (their lengths differ by at most one) and put them back in order."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return shard.cpu()
        sizes = self.all_gather(torch.tensor(len(shard), device=shard.device)).flatten().tolist()
        padded = torch.cat([shard, shard.new_zeros(max(sizes) - len(shard), *shard.shape[1:])])
        gathered = self.all_gather(padded)  # (W, max size, ...)
        total = sum(sizes)
        ordered = shard.new_empty(total, *shard.shape[1:])
        for rank, size in enumerate(sizes):
            ordered[torch.arange(rank, total, world, device=shard.device)] = gathered[rank, :size]
        return ordered.cpu()

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(dim=1)

    def configure_optimizers(self) -> Any:
        schedule = self.hparams.scheduler
        total_steps = int(self.trainer.estimated_stepping_batches) if schedule else 0  # no schedule: no trainer needed
        optimizer, scheduler = build_optimization(self.parameters(), self.hparams.optimizer, schedule, total_steps)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


DISTILL_DEFAULTS = {"teachers": None, "weight": 0.5, "temperature": 4.0}


def distill_settings(distill: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`model.distill` with its defaults filled in; None when distillation is off."""
    return {**DISTILL_DEFAULTS, **distill} if distill else None


@dataclass
class Distillation:
    """Frozen trained networks whose mean softened answers the student learns to match, and how much."""

    teachers: list[nn.Module]
    weight: float  # share of the distillation loss; the rest is cross-entropy with the labels
    temperature: float
    dataset: str  # what the teachers were trained on, so their inputs are normalised alike


def load_teachers(distill: Mapping[str, Any] | None) -> Distillation | None:
    """`model.distill` ({teachers: [run dir or .ckpt, ...], weight: (0, 1], temperature: > 0}), loaded;
    None when it is null. Teachers are read like any checkpoint (lenet.inference: weights only,
    allow-listed networks)."""
    distill = distill_settings(distill)
    if distill is None:
        return None
    teachers, weight, temperature = distill["teachers"], distill["weight"], distill["temperature"]
    if not teachers or isinstance(teachers, str) or not all(isinstance(path, str) for path in teachers):
        raise ValueError(
            f"model.distill.teachers={teachers!r} must be a list of run directories or checkpoints, "
            "e.g. 'model.distill.teachers=[outputs/2026-11-26/10-00-00_123]'"
        )
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 < weight <= 1.0:
        raise ValueError(f"model.distill.weight={weight!r} must be a number in (0, 1], e.g. 0.7")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"model.distill.temperature={temperature!r} must be a positive number, e.g. 4")
    loaded = load_ensemble(teachers)  # the one loading path: safe reads, one dataset for all
    members = loaded.members if isinstance(loaded, Ensemble) else [loaded]
    if not all(isinstance(member, LoadedModel) for member in members):
        raise ValueError("model.distill.teachers must be run directories or .ckpt files: an exported .onnx cannot teach")
    for member in members:
        member.net.requires_grad_(False)
    return Distillation([member.net for member in members], float(weight), float(temperature), loaded.dataset)


def build_optimization(parameters, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any] | None, total_steps: int):
    """(optimizer, scheduler or None) from their allow-listed specs; a run-length argument left null
    (RUN_LENGTH_ARGUMENTS) becomes the run's `total_steps`, so the schedule follows the run's length."""
    built = build({**optimizer, "_partial_": True}, "optimizer", "model.optimizer")(parameters)
    if not scheduler:
        return built, None
    spec = {key: total_steps if key in RUN_LENGTH_ARGUMENTS and value is None else value for key, value in scheduler.items()}
    return built, build({**spec, "_partial_": True}, "scheduler", "model.scheduler")(built)
