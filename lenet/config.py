"""The project's Hydra configuration (conf/train.yaml) composed from Python, for notebooks and scripts.

    cfg = load_config(["trainer.max_epochs=1", "model=cnn"], run_dir="outputs/try")
    metrics = lenet.experiment.run(cfg)   # what `python train.py trainer.max_epochs=1 model=cnn` does
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""

# ${pid:} in run and sweep folder names (conf/hydra/default.yaml). Cached, so that every job of a sweep
# sees the launching process's id: Hydra copies resolver caches into each job's config, and a joblib or
# submitit job runs in a process of its own.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)


def to_plain(spec: Any) -> Any:
    """A config node (DictConfig, or a dict that may hold ListConfigs) as plain dicts and lists,
    interpolations resolved: what checkpoints must hold to load with `weights_only=True`."""
    if spec is None or not spec:
        return spec or None
    if not OmegaConf.is_config(spec):
        spec = OmegaConf.create(spec)
    return OmegaConf.to_container(spec, resolve=True)


def load_config(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> DictConfig:
    """conf/train.yaml with command-line style overrides, everything the run writes going to run_dir
    (default: the folder `python train.py` would use, from conf/hydra/default.yaml)."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise FileNotFoundError(
            f"{CONFIG_DIR / 'train.yaml'} is missing: load_config needs the repository's conf/ folder, "
            "so install the project from its checkout (pip install -e .)."
        )
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir if run_dir is not None else cfg.hydra.run.dir)
        cfg.pop("hydra")  # Hydra's own settings only mean something under @hydra.main
    return cfg
