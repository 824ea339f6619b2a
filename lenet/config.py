"""The project's Hydra configuration (conf/train.yaml) composed from Python, for notebooks and scripts.

    cfg = load_config(["trainer.max_epochs=1", "model=cnn"], run_dir="outputs/try")
    metrics = lenet.experiment.run(cfg)   # what `python train.py trainer.max_epochs=1 model=cnn` does
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def default_run_dir() -> Path:
    """outputs/<date>/<time>_<pid>, the layout of `python train.py` runs (conf/hydra/default.yaml)."""
    return Path("outputs") / time.strftime("%Y-%m-%d") / f"{time.strftime('%H-%M-%S')}_{os.getpid()}"


def to_plain(spec: Any) -> Any:
    """A config node (DictConfig, or a dict that may hold ListConfigs) as plain dicts and lists,
    interpolations resolved: what checkpoints must hold to load with `weights_only=True`."""
    if spec is None or not spec:
        return spec or None
    if not OmegaConf.is_config(spec):
        spec = OmegaConf.create(spec)
    return OmegaConf.to_container(spec, resolve=True)


def load_config(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> DictConfig:
    """conf/train.yaml with command-line style overrides, everything the run writes going to run_dir."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise FileNotFoundError(
            f"{CONFIG_DIR / 'train.yaml'} is missing: load_config needs the repository's conf/ folder, "
            "so install the project from its checkout (pip install -e .)."
        )
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"run_dir={run_dir}", *overrides])
    with open_dict(cfg):
        cfg.pop("hydra", None)  # Hydra's own settings only mean something under @hydra.main
    return cfg
