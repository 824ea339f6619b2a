"""Sweeps: the objective a sweeper optimises, job folder names, and the summary of a sweep.

After `python train.py -m ...` (a grid, or `hparams_search=optuna`) the Hydra callback below writes
summary.md and summary.csv at the sweep root: every job's overrides and results, the best job by the
objective (`optimized_metric`, a validation metric) and, on a line of its own, that job's test
accuracy. Also usable on an existing sweep folder: `python -m lenet.sweep multirun/2026-11-26/10-00-00_1234`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lenet.config import ConfigError  # importing lenet.config registers ${pid:}, which names run and sweep folders
from lenet.extras import require_extra

DEFAULT_OBJECTIVE = "best_val_acc"
TEST_PREFIX = "test/"  # the official test set: reported, never optimised
COLUMNS = ("test/acc", "test/precision", "test/recall", "test/f1", "fit_seconds", "epochs")

# A sweep run again into the same folder (an Optuna study resumed from its storage) numbers its jobs
# after the folders already there, instead of overwriting them from 0, and moves its sampler's seed on
# by as many, so that it does not replay the random trials it already ran. on_multirun_start finds the
# first free number; job processes inherit it through the environment.
FIRST_JOB_ENV = "LENET_SWEEP_FIRST_JOB"


# The overrides that ask for a Hydra plugin, and the extra that installs it.
PLUGIN_EXTRAS = {
    "hparams_search=optuna": "search",
    "hydra/sweeper=optuna": "search",
    "hydra/launcher=joblib": "search",
    "hydra/launcher=slurm": "search",
    "hydra/launcher=submitit_slurm": "search",
    "hydra/launcher=submitit_local": "search",
    "hydra/launcher=ray_cluster": "ray",
}


def require_plugin_extras(overrides: list[str]) -> None:
    """Exit in one line naming the extra (not Hydra's "Could not find 'hydra/sweeper/optuna'" and its
    search path) when a train.py override asks for a plugin that is not installed."""
    for override in overrides:
        extra = PLUGIN_EXTRAS.get(override.lstrip("+"))
        if extra:
            require_extra(extra, f"train.py {override}")


def next_job_number(sweep_dir: Path) -> int:
    numbers = [int(p.name) for p in sweep_dir.glob("*") if p.name.isdigit() and p.is_dir()]
    return max(numbers, default=-1) + 1


def after_earlier_jobs(number: int) -> int:
    """${sweep_job:N}: N plus the number of job folders the sweep folder held when this run started."""
    return int(number) + int(os.environ.get(FIRST_JOB_ENV, "0"))


OmegaConf.register_new_resolver("sweep_job", after_earlier_jobs, replace=True)


def check_objective(cfg: DictConfig) -> str | None:
    """The metric a sweeper optimises (`optimized_metric`); refused if it is a test-set metric."""
    key = cfg.get("optimized_metric")
    if key and str(key).startswith(TEST_PREFIX):
        raise ConfigError(
            f"optimized_metric={key} would tune hyperparameters on the official test set: "
            f"use a validation metric, e.g. optimized_metric={DEFAULT_OBJECTIVE}."
        )
    return key


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """What train.py returns to a sweeper: metrics[optimized_metric]. None when no objective is set,
    in a DDP process other than rank 0 (which reports no metrics), and when evaluating a checkpoint
    (which has no validation metrics)."""
    key = check_objective(cfg)
    if not key or not metrics or (not cfg.get("train", True) and key not in metrics):
        return None
    value = metrics.get(key)
    if value is None:
        available = ", ".join(sorted(k for k in metrics if not k.startswith(TEST_PREFIX)))
        raise ConfigError(f"optimized_metric={key} is not among this run's metrics: use one of {available}.")
    return float(value)


def set_threads(cfg: DictConfig) -> None:
    """Apply `threads` (torch intra-op threads for this job) before training; null leaves torch's default."""
    threads = cfg.get("threads")
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads} must be a whole number >= 1, or null for torch's default.")
    import torch

    torch.set_num_threads(threads)


def _direction(config: DictConfig | None) -> str:
    """'maximize' unless the sweeper (e.g. Optuna) is told to minimise."""
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None) if config is not None else None
    name = getattr(direction, "name", direction)  # a Direction enum or its name
    return "minimize" if str(name).lower() == "minimize" else "maximize"


def _sweep_config(sweep_dir: Path) -> DictConfig | None:
    config_file = sweep_dir / "multirun.yaml"
    return OmegaConf.load(config_file) if config_file.is_file() else None


def collect(sweep_dir: Path, objective: str = DEFAULT_OBJECTIVE) -> list[dict[str, Any]]:
    """One row per job folder: its overrides, objective and metrics.json (status 'failed' if it has none)."""
    import yaml

    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name))
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        row: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides or [])}
        metrics_file = job / "metrics.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
            row["objective"] = metrics.get(objective)
            row.update({key: metrics.get(key) for key in COLUMNS})
            row["status"] = "ok"
        else:
            row["status"] = "failed or unfinished"
        rows.append(row)
    return rows


def _best(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    scored = [r for r in rows if r["status"] == "ok" and r["objective"] is not None and not math.isnan(r["objective"])]
    if not scored:
        return None
    pick = min if direction == "minimize" else max
    return pick(scored, key=lambda r: r["objective"])


def write_summary(sweep_dir: str | Path, config: DictConfig | None = None) -> list[dict[str, Any]]:
    """Write summary.csv and summary.md at the sweep root; the best job by the objective is marked.

    `config` is the sweep's configuration (as in its multirun.yaml, read from there when not given):
    it names the objective (`optimized_metric`) and, for Optuna, its direction."""
    sweep_dir = Path(sweep_dir)
    config = config if config is not None else _sweep_config(sweep_dir)
    objective = (config.get("optimized_metric") if config is not None else None) or DEFAULT_OBJECTIVE
    direction = _direction(config)
    rows = collect(sweep_dir, objective)
    best = _best(rows, direction)
    for row in rows:
        row["best"] = "yes" if row is best else ""
    fields = ["job", "overrides", "objective", *COLUMNS, "status", "best"]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    finished = sum(r["status"] == "ok" for r in rows)
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{finished} of {len(rows)} jobs finished. Objective: `{objective}` ({direction}, validation set); "
        "★ marks the best job by the objective. Test metrics are on the official MNIST test set, "
        "reported and never used to choose.",
        "",
        f"| job | overrides | {objective} | test acc | precision | recall | F1 | fit s | epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = " ★" if row["best"] else ""
        if row["status"] != "ok":
            lines.append(f"| {row['job']} | `{row['overrides']}` | {row['status']} | | | | | | |")
            continue
        values = " | ".join(_number(row[k]) for k in ("objective", *COLUMNS[:4]))
        lines.append(f"| {row['job']}{mark} | `{row['overrides']}` | {values} | {row['fit_seconds']:.1f} | {row['epochs']} |")
    if best is not None:
        lines += [
            "",
            f"Best by `{objective}`: job {best['job']} ({_number(best['objective'])}, fit {best['fit_seconds']:.1f} s).",
            f"Its test accuracy: {_number(best['test/acc'])}.",
        ]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class SweepSummary(Callback):
    """Hydra callback: numbers a rerun's jobs after the existing ones, writes the summary at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Made now, before any job: an Optuna study keeps its SQLite storage in this folder.
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        os.environ[FIRST_JOB_ENV] = str(next_job_number(sweep_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write_summary(sweep_dir, config)
            print(f"Sweep summary: {sweep_dir / 'summary.md'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lenet.sweep SWEEP_DIR")
    for row in write_summary(sys.argv[1]):
        print(row)
