"""The allow-list: every class a config or a checkpoint may name by `_target_`, and the one builder.

Hydra's `instantiate` imports and calls whatever a `_target_` names, so a crafted checkpoint (or
config) could run any code, `weights_only=True` notwithstanding. Everything this project builds
from data goes through `build`, which accepts only the names below and only plain values (numbers,
strings, booleans, None, and lists or mappings of them) as arguments; nested `_target_` mappings
must come from the same family. The composed training config is checked against `CONFIG_TARGETS`
before Hydra builds the trainer, callbacks and logger from it.

This module imports nothing heavy: the inference core builds networks through it without Lightning.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

NETWORKS = frozenset({"lenet.models.LeNet5", "lenet.models.LeNet5Classic", "lenet.models.ModernCNN"})
AUGMENTATIONS = frozenset(
    {
        "lenet.augment.Compose",
        "lenet.augment.RandomAffine",
        "lenet.augment.ElasticDistortion",
        "lenet.augment.StrokeWidth",
        "lenet.augment.LowResolution",
        "lenet.augment.RandomApply",
        "lenet.augment.FillBox",
        "lenet.augment.StyleStrokes",
        "lenet.augment.StrokeGaps",
    }
)
OPTIMIZERS = frozenset({"torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.RMSprop"})
SCHEDULERS = frozenset(
    {
        "torch.optim.lr_scheduler.OneCycleLR",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.optim.lr_scheduler.StepLR",
        "torch.optim.lr_scheduler.MultiStepLR",
        "torch.optim.lr_scheduler.ExponentialLR",
    }
)
# What conf/ builds around the model: the data module, the LightningModule, trainer, callbacks, logger.
CONFIG_TARGETS = frozenset(
    {
        "lenet.data.MNISTDataModule",
        "lenet.module.Classifier",
        "lenet.callbacks.History",
        "lightning.Trainer",
        "lightning.pytorch.Trainer",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "lightning.pytorch.callbacks.EarlyStopping",
        "lightning.pytorch.callbacks.RichProgressBar",
        "lightning.pytorch.callbacks.TQDMProgressBar",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.CSVLogger",
    }
)
FAMILIES = {"network": NETWORKS, "augmentation": AUGMENTATIONS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS}
PLAIN = (str, int, float, bool, type(None))


class NotAllowedError(ValueError):
    """A `_target_` outside the allow-list, or an argument that is not plain data."""


def check_spec(spec: Any, family: str, where: str) -> None:
    """Raise NotAllowedError unless `spec` is a `_target_` mapping of `family` with plain arguments."""
    allowed = FAMILIES[family]
    if not isinstance(spec, Mapping) or not isinstance(spec.get("_target_"), str):
        raise NotAllowedError(f"{where} must be a mapping with a `_target_` naming one {family}, got {_short(spec)}.")
    target = spec["_target_"]
    if target not in allowed:
        raise NotAllowedError(
            f"{where}._target_={target!r} is not one of this project's {family}s ({', '.join(sorted(allowed))}): "
            "nothing else is built from a config or checkpoint. Use one of those, or add the class to lenet/registry.py."
        )
    for key, value in spec.items():
        if key == "_target_":
            continue
        if not isinstance(key, str) or not key.isidentifier() or (key.startswith("_") and key != "_partial_"):
            raise NotAllowedError(f"{where} has the argument {key!r}, which is not a plain keyword name.")
        _check_value(value, family, f"{where}.{key}")


def _check_value(value: Any, family: str, where: str) -> None:
    if isinstance(value, Mapping):
        if "_target_" in value:
            check_spec(value, family, where)
            return
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotAllowedError(f"{where} has a non-string key {_short(key)}: only plain data is accepted.")
            _check_value(item, family, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, family, f"{where}[{i}]")
    elif not isinstance(value, PLAIN):
        raise NotAllowedError(f"{where} is a {type(value).__name__}: only numbers, strings, booleans and lists/mappings of them are accepted.")


def resolve(target: str) -> Any:
    """The class an allow-listed `_target_` names (only ever called after check_spec)."""
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build(spec: Mapping[str, Any], family: str, where: str = "spec", **extra: Any) -> Any:
    """The object a checked `_target_` mapping describes; `_partial_: true` gives a callable waiting
    for the remaining arguments (optimisers get their parameters, schedulers their optimiser).

    >>> build({"_target_": "lenet.models.LeNet5"}, "network").__class__.__name__
    'LeNet5'
    """
    check_spec(spec, family, where)
    cls = resolve(spec["_target_"])
    kwargs = {key: _build_value(value, family, f"{where}.{key}") for key, value in spec.items() if not key.startswith("_")}
    kwargs.update(extra)
    try:
        inspect.signature(cls).bind_partial(**kwargs)
    except TypeError as error:
        raise NotAllowedError(f"{where} does not fit {spec['_target_']} ({error}): check the argument names.") from error
    if spec.get("_partial_"):
        return lambda *args, **more: cls(*args, **kwargs, **more)
    return cls(**kwargs)


def _build_value(value: Any, family: str, where: str) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            return build(value, family, where)
        return {key: _build_value(item, family, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_build_value(item, family, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def check_config_targets(node: Any, where: str = "config") -> None:
    """Refuse a composed config naming any `_target_` outside the allow-lists (Hydra's own `hydra`
    node aside: it configures Hydra, not the run)."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None:
            allowed = CONFIG_TARGETS.union(*FAMILIES.values())
            if target not in allowed:
                raise NotAllowedError(
                    f"{where}._target_={target!r} is not in this project's allow-list: configs may only build "
                    "the project's own classes and the Lightning trainer, callbacks and loggers listed in "
                    "lenet/registry.py. Use one of those, or add the class there."
                )
        for key, value in node.items():
            if where == "config" and key == "hydra":
                continue
            check_config_targets(value, f"{where}.{key}" if where != "config" else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_config_targets(value, f"{where}[{i}]")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
