"""Training callbacks: per-epoch history (kept in checkpoints) and the start-up timer."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from lenet.metrics import HISTORY_KEYS


class History(L.Callback):
    """Epoch-level metrics, one dict per epoch, for learning curves.

    Stored in every checkpoint, so curves survive a resume and can be redrawn by evaluation.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key in HISTORY_KEYS:
            name = f"{key}_epoch" if f"{key}_epoch" in metrics else key
            if name in metrics:
                row[key] = float(metrics[name])
        self.epochs.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])


class StartupTimer(L.Callback):
    """Seconds from process start (`started`, a time.perf_counter() value) to the first training step."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started
