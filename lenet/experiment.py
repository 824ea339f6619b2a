"""What `python train.py` does: train (and test) a model from a composed Hydra config, or
evaluate an existing checkpoint, writing everything into the run directory.

`run(cfg)` returns the flat metrics dict, so tests and sweeps can call it directly.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lenet.callbacks import History
from lenet.config import ConfigError
from lenet.data import MNISTDataModule
from lenet.evaluation import evaluate, score
from lenet.inference import load_model, read_checkpoint
from lenet.metrics import SUMMARY_METRICS
from lenet.geometry import IMAGE_SIZE
from lenet.models import count_parameters
from lenet.module import build_optimization, distill_settings
from lenet.registry import check_config_targets
from lenet.report import RunSummary, write_report


@contextmanager
def one_line_errors(program: str = "train.py"):
    """Turn the user's mistakes (bad values, missing or corrupt files, refused checkpoints) into one
    line on stderr and exit status 2; HYDRA_FULL_ERROR=1 shows the traceback instead."""
    from hydra.errors import InstantiationException

    try:
        yield
    except (ValueError, TypeError, OSError, RuntimeError, InstantiationException) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not _is_user_error(error):
            raise
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        message = " ".join(str(cause).split())  # one line, whatever the library's layout
        print(f"{program}: error: {message} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        sys.exit(2)


def _is_user_error(error: BaseException) -> bool:
    """Errors this project raises for bad input, and the ones the libraries raise for bad config values."""
    from hydra.errors import InstantiationException

    from lenet.data import DataError

    if isinstance(error, InstantiationException):
        return error.__cause__ is None or _is_user_error(error.__cause__)
    return isinstance(error, (ValueError, TypeError, FileNotFoundError, DataError))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) or evaluate, as cfg.train says."""
    # Hydra builds whatever a `_target_` names: only the project's allow-list may be named.
    check_config_targets(OmegaConf.to_container(cfg, resolve=False))
    if cfg.train:
        if cfg.get("ckpt_path"):
            # Before Lightning resumes from it: local files only, plain data only, allow-listed
            # hyperparameters (evaluation reads its checkpoint through load_model, which checks the same).
            read_checkpoint(cfg.ckpt_path)
        return train(cfg)
    if not cfg.get("ckpt_path"):
        raise ConfigError("train=false evaluates a checkpoint: add ckpt_path=<run dir or .ckpt file>.")
    return evaluate_checkpoint(cfg)


def prepare_training(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> tuple[MNISTDataModule, L.LightningModule, L.Trainer]:
    """The seeded data module (MNIST read), model and Trainer that `train` fits; benchmarks build theirs here too."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but torch sees no CUDA GPU here: use trainer=cpu (and experiment=fast rather than fast_gpu).")
    L.seed_everything(cfg.seed, workers=True)
    # trainer.deterministic keeps deterministic kernels; filling every new tensor with NaN (a debugging
    # aid that comes with them) only finds reads of uninitialised memory: writes that change no result.
    torch.utils.deterministic.fill_uninitialized_memory = False
    datamodule: MNISTDataModule = instantiate(cfg.data, _recursive_=False)
    model = instantiate(cfg.model, _recursive_=False)
    callbacks = [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values() if spec]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    # Lightning writes checkpoints through an fsspec transaction (a temporary file moved into place):
    # a run killed mid-save keeps its previous checkpoint (tests/test_training.py kills one mid-write).
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, *extra_callbacks], logger=logger)
    # Reading MNIST is start-up, as in the bare-loop reference: the fit timer covers training alone.
    datamodule.setup("fit")
    if trainer.logger is not None:
        trainer.logger.experiment  # noqa: B018 - opens the event file (importing TensorBoard's writer) before fit, not in its first step
    warm_up_gpu(model, datamodule, trainer)
    return datamodule, model, trainer


def warm_up_gpu(model: L.LightningModule, datamodule: MNISTDataModule, trainer: L.Trainer) -> None:
    """On a GPU, pay CUDA's one-time set-up (context, cuBLAS and cuDNN handles, lazily loaded kernels:
    about 1.5 s on an H100) here, in start-up like reading MNIST, rather than in the first training
    steps: one training step of a throwaway copy of the network and optimiser on a batch of zeros.
    The run's own model, optimiser state and random numbers are untouched."""
    device = trainer.strategy.root_device
    if device.type != "cuda":
        return
    net = copy.deepcopy(model.net).to(device)
    optimizer, _ = build_optimization(net.parameters(), model.hparams.optimizer, None, 0)
    images = torch.zeros(datamodule.hparams.batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    loss = F.cross_entropy(net(images), torch.zeros(len(images), dtype=torch.long, device=device))
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        net(torch.zeros(datamodule.hparams.eval_batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, device=device))
    torch.cuda.synchronize(device)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test a model as cfg says, then write the run's report into cfg.run_dir; returns its metrics."""
    datamodule, model, trainer = prepare_training(cfg)
    run_details, history = fit_and_test(cfg, datamodule, model, trainer)
    if not trainer.is_global_zero:  # DDP: rank 0 alone writes the report
        return {}
    summary = RunSummary(
        evaluation=score(*model.test_outputs),  # what trainer.test predicted: one source for the test metrics
        test_images=datamodule.splits["test"][0],
        dataset=datamodule.hparams.dataset,
        training_recipe=recipe(model.hparams, datamodule.hparams, epochs=trainer.current_epoch, seed=cfg.seed),
        run_details=run_details,
        history=history,
        step=trainer.global_step,
    )
    logger = trainer.logger
    metrics = write_report(summary, cfg.run_dir, tensorboard=logger.experiment if logger else None, figures=cfg.figures)
    if logger:
        test_loss = trainer.callback_metrics.get("test/loss")
        results = {**metrics, "test/loss": float(test_loss) if test_loss is not None else None}
        log_hparams(logger, summary.training_recipe, results, objective=cfg.get("optimized_metric"))
        logger.finalize("success")
    return metrics


def fit_and_test(
    cfg: DictConfig, datamodule: MNISTDataModule, model: L.LightningModule, trainer: L.Trainer
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fit, then test the best checkpoint: (the run's details for its report, its per-epoch history)."""
    fit_started_at, started = time.time(), time.perf_counter()
    with warnings.catch_warnings():
        if (cfg.trainer.get("check_val_every_n_epoch") or 1) > 1:
            # Epochs without validation (experiment=fast) have no val/acc for the best-checkpoint
            # callback to compare: expected, so Lightning's hint that val/acc may never be logged is not shown.
            warnings.filterwarnings("ignore", message=r"`ModelCheckpoint\(monitor=.*could not find the monitored key")
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    fit_seconds = time.perf_counter() - started

    # The checkpoint callback that tracks a metric holds the best model (conf/callbacks/default.yaml).
    checkpointing = next((cb for cb in trainer.checkpoint_callbacks if cb.monitor), trainer.checkpoint_callback)
    best = checkpointing.best_model_path or checkpointing.last_model_path
    # The whole run's history, copied before trainer.test restores best.ckpt's (shorter) one into History.
    history = list(next((cb.epochs for cb in trainer.callbacks if isinstance(cb, History)), []))
    # The last validation of the other sources (data.sources=[mnist,unipen]): val_unipen/acc, ...
    source_val = {key: round(float(value), 4) for key, value in trainer.callback_metrics.items() if key.startswith("val_")}
    started = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    test_seconds = time.perf_counter() - started
    run_details = {
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_seconds, 2),
        "test_seconds": round(test_seconds, 2),
        "fit_started_at": round(fit_started_at, 3),  # Unix time: start-up is the time from launch to here
        "parameters": count_parameters(model.net),
        "best_checkpoint": str(Path(best).resolve()),
        "best_val_acc": float(checkpointing.best_model_score) if checkpointing.best_model_score is not None else None,
        "world_size": trainer.world_size,
        **source_val,
    }
    return run_details, history


def log_hparams(logger, training_recipe: dict[str, Any], results: dict[str, Any], objective: str | None) -> None:
    """TensorBoard's HPARAMS tab: the recipe, and the results' HPARAM_METRICS with the `objective` a sweep
    optimises (cfg.optimized_metric)."""
    keys = [*HPARAM_METRICS, *([objective] if objective and objective not in HPARAM_METRICS else [])]
    # Under their own names: logged as test/acc they would add a second point at step 0.
    logger.log_hyperparams(training_recipe, {f"hparams/{k.replace('/', '_')}": results[k] for k in keys if results.get(k) is not None})


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the official test set, rebuilt from its own hyperparameters."""
    loaded = load_model(cfg.ckpt_path)
    # Data as the model was trained on it, read from this machine's data directory.
    # The test set is MNIST's whatever else trained the model: other sources are not read.
    data_hparams = {key: value for key, value in loaded.data_hparams.items() if key not in ("sources", "weights")}
    data_hparams = {**data_hparams, "data_dir": cfg.data.data_dir, "download": cfg.data.download}
    datamodule = MNISTDataModule(**data_hparams)
    datamodule.setup("test")
    run_dir = Path(cfg.run_dir)
    tensorboard = None
    if cfg.get("logger"):
        from torch.utils.tensorboard import SummaryWriter

        tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
    images, labels = datamodule.splits["test"]
    summary = RunSummary(
        evaluation=evaluate(loaded, images, labels),
        test_images=images,
        dataset=datamodule.hparams.dataset,
        training_recipe=recipe(loaded.model_hparams, loaded.data_hparams, epochs=len(loaded.history)),
        run_details={
            "evaluated_checkpoint": str(loaded.checkpoint_path.resolve()),
            "parameters": count_parameters(loaded.net),
            "epochs": len(loaded.history),
        },
        history=loaded.history,
    )
    metrics = write_report(summary, run_dir, tensorboard=tensorboard, figures=cfg.figures)
    if tensorboard is not None:
        for key in (f"test/{name}" for name in SUMMARY_METRICS):
            tensorboard.add_scalar(key, metrics[key])
        tensorboard.close()
    return metrics


# What TensorBoard's HPARAMS tab shows for each run, beside the recipe: the objective a sweep
# optimises (best_val_acc), the test results, the cost.
HPARAM_METRICS = ("best_val_acc", "test/acc", "test/f1", "test/loss", "fit_seconds", "parameters")


def recipe(model_hparams: Mapping[str, Any], data_hparams: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The short flat description of how a model was trained, for report.md and TensorBoard's HPARAMS:
    only what differs between runs (network, optimiser, lr, schedule, batch, augmentation, ...)."""
    optimizer = model_hparams.get("optimizer") or {}
    scheduler = model_hparams.get("scheduler") or {}
    distill = distill_settings(model_hparams.get("distill"))
    settings = {
        "network": _class_name(model_hparams["net"]),
        "optimizer": _class_name(optimizer) or "none",
        "lr": optimizer.get("lr"),
        "weight_decay": optimizer.get("weight_decay", 0.0),
        "beta2": (optimizer.get("betas") or (None, None))[1],  # Adam's, when the config sets it (experiment=fast: 0.97)
        "scheduler": _class_name(scheduler) or "none",
        "batch_size": data_hparams.get("batch_size"),
        "augmentation": _augmentation_name(data_hparams.get("augment")),
        "training_data": _sources_name(data_hparams),
        "label_smoothing": model_hparams.get("label_smoothing", 0.0),
        "distillation": (
            f"{len(distill['teachers'])} teacher{'s' * (len(distill['teachers']) > 1)}, weight {distill['weight']}, T {distill['temperature']}"
            if distill else None
        ),
        **extra,
    }
    return {key: value for key, value in settings.items() if value is not None}


def _sources_name(data_hparams: Mapping[str, Any]) -> str | None:
    """`mnist + unipen x2 (4 renders: page 0.5, scan 0.5)`; None for MNIST alone (the default says nothing)."""
    sources = data_hparams.get("sources") or ["mnist"]
    if list(sources) == ["mnist"]:
        return None
    weights, unipen = data_hparams.get("weights") or {}, data_hparams.get("unipen") or {}
    styles = ", ".join(f"{name} {share:g}" for name, share in (unipen.get("styles") or {}).items())
    corrections = (data_hparams.get("corrections") or {}).get("path")

    def part(name: str) -> str:
        if name == "mnist":
            return name
        weighed = f"{name} x{weights.get(name, 1):g}"
        return f"{weighed} ({corrections})" if name == "corrections" else weighed  # unipen's renders and styles come last

    return " + ".join(map(part, sources)) + (f" ({unipen.get('renders')} renders: {styles})" if "unipen" in sources else "")


def _class_name(spec: Mapping[str, Any] | None) -> str:
    return str(spec["_target_"]).rpartition(".")[2] if spec and spec.get("_target_") else ""


def _augmentation_name(spec: Any) -> str:
    """`Compose([RandomApply(StrokeWidth), RandomAffine])` -> "StrokeWidth + RandomAffine"."""
    if not spec:
        return "none"
    if spec.get("_target_", "").endswith(".Compose"):
        steps = spec.get("transforms") or []
        parts = [_augmentation_name(part) for part in (steps.values() if isinstance(steps, Mapping) else steps)]
        return " + ".join(part for part in parts if part != "none") or "none"
    if spec.get("_target_", "").endswith(".RandomApply"):
        return f"{_augmentation_name(spec.get('transform'))} (p={spec.get('p')})" if spec.get("p") else "none"
    return _class_name(spec)
