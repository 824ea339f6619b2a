"""Training callback: per-epoch history, kept in checkpoints."""

from __future__ import annotations

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

