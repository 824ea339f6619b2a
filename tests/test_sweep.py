"""Sweeps: train.py returns a validation objective, search configs never optimise a test metric, an
Optuna study runs and resumes from its SQLite storage, and joblib runs jobs side by side."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import REPO, TINY, compose_config, train_module
from lenet.config import CONFIG_DIR, ConfigError
from lenet.sweep import TEST_PREFIX, objective_value, set_threads

def train_subprocess(args: list[str], data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENET_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_dir):
    """(returned objective, run dir) of train.py's main on a tiny training."""
    run_dir = tmp_path_factory.mktemp("objective")
    returned = train_module().main(compose_config(run_dir, TINY, synthetic_dir))
    return returned, run_dir


def test_train_returns_the_validation_objective_not_test_accuracy(tiny_run, synthetic_dir):
    returned, run_dir = tiny_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_val_acc"] != metrics["test/acc"]  # so returning the test accuracy would fail below
    assert isinstance(returned, float) and returned == metrics["best_val_acc"]
    # Any metric but a test one can be the objective; one that is not a metric is named in the error.
    cfg = compose_config(run_dir, [*TINY, "optimized_metric=epochs"], synthetic_dir)
    assert objective_value(cfg, metrics) == 1.0
    with pytest.raises(ConfigError, match=r"optimized_metric=val_acc is not among .*best_val_acc"):
        objective_value(compose_config(run_dir, ["optimized_metric=val_acc"], synthetic_dir), metrics)


def test_a_test_metric_as_objective_is_refused_before_training(tmp_path, capsys, synthetic_dir):
    cfg = compose_config(tmp_path, [*TINY, "optimized_metric=test/acc"], synthetic_dir)
    with pytest.raises(SystemExit) as exit_info:  # train.py reports user errors in one line, status 2
        train_module().main(cfg)
    assert exit_info.value.code == 2
    assert re.search(r"train.py: error: optimized_metric=test/acc would tune .* test set", capsys.readouterr().err)
    assert not (tmp_path / "metrics.json").exists()


def test_threads_setting_is_applied_and_checked(tmp_path, synthetic_dir):
    before = torch.get_num_threads()
    try:
        set_threads(compose_config(tmp_path, ["threads=1"], synthetic_dir))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    set_threads(compose_config(tmp_path, data=synthetic_dir))  # null: torch's default, untouched
    assert torch.get_num_threads() == before
    for bad in ("0", "two", "1.5"):
        with pytest.raises(ConfigError, match=f"threads={bad} must be a whole number"):
            set_threads(compose_config(tmp_path, [f"threads={bad}"], synthetic_dir))


def test_no_search_config_optimises_a_test_metric():
    searches = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
    assert "optuna" in searches
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose(config_name="train")
        assert not default.optimized_metric.startswith(TEST_PREFIX)
        for name in searches:
            cfg = compose(config_name="train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
            sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
            assert not cfg.optimized_metric.startswith(TEST_PREFIX), name
            assert "acc" in cfg.optimized_metric and sweeper["direction"] == "maximize", name
            assert not any(key.startswith(TEST_PREFIX) for key in sweeper["params"]), name
            # A resumable study: fixed name, storage in the sweep folder, seeded sampler.
            assert sweeper["study_name"] and sweeper["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db", name
            assert sweeper["sampler"]["seed"] is not None, name


def test_tensorboard_hparams_show_the_objective_as_a_metric(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, run_dir = tiny_run
    metric_tags = set()
    for event_file in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        try:
            content = EventAccumulator(str(event_file)).Reload().PluginTagToContent("hparams")
        except KeyError:  # this event file holds no hparams
            continue
        if "_hparams_/experiment" in content:
            experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
            metric_tags |= {info.name.tag for info in experiment.metric_infos}
    assert "hparams/test_acc" in metric_tags
    assert "hparams/best_val_acc" in metric_tags  # the default objective


@pytest.fixture(scope="module")
def optuna_study(tmp_path_factory, synthetic_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """A 3-trial Optuna study run two trials at a time by joblib: (its sweep folder, the process)."""
    root = tmp_path_factory.mktemp("optuna")
    args = ["hparams_search=optuna", "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3", "threads=1"]
    # ${pid:} in the folder name must resolve to the launching process's id in both job processes.
    result = train_subprocess([*args, *TINY, f"hydra.sweep.dir={root}/study_${{pid:}}"], synthetic_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = root.iterdir()
    return sweep_dir, result


def load_study(sweep_dir: Path):
    import optuna

    return optuna.load_study(study_name="lenet5_mnist", storage=f"sqlite:///{sweep_dir}/optuna.db")


@pytest.mark.slow
def test_joblib_runs_jobs_side_by_side_into_one_sweep_folder(optuna_study):
    sweep_dir, result = optuna_study
    assert "Joblib.Parallel(" in result.stdout + result.stderr  # really the joblib launcher
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert all((sweep_dir / job / "metrics.json").is_file() for job in ("0", "1", "2"))
    assert (sweep_dir / "summary.md").is_file() and (sweep_dir / "summary.csv").is_file()


@pytest.mark.slow
def test_optuna_summary_marks_the_best_trial_by_the_objective(optuna_study):
    sweep_dir, _ = optuna_study
    study = load_study(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    rows = summary_rows(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1", "2"] and [r["status"] for r in rows] == ["ok"] * 3
    objectives = sorted(float(r["objective"]) for r in rows)
    assert objectives == pytest.approx(sorted(t.value for t in study.trials))  # what the study was told
    for row in rows:
        assert float(row["objective"]) == json.loads((sweep_dir / row["job"] / "metrics.json").read_text())["best_val_acc"]
    best = [r for r in rows if r["best"] == "yes"]
    assert len(best) == 1 and float(best[0]["objective"]) == pytest.approx(study.best_value)
    summary = (sweep_dir / "summary.md").read_text()
    assert f"Best by `best_val_acc`: job {best[0]['job']}" in summary
    assert f"Its test accuracy: {float(best[0]['test/acc']):.4f}" in summary


@pytest.mark.slow
def test_optuna_study_resumes_from_its_storage(optuna_study, tmp_path, synthetic_dir):
    """The same command on the same sweep folder goes on with the study it holds."""
    sweep_dir = shutil.copytree(optuna_study[0], tmp_path / "study")  # the shared study stays as it was
    earlier = {job: (sweep_dir / job / "metrics.json").read_text() for job in ("0", "1", "2")}
    result = train_subprocess(["hparams_search=optuna", "hydra.sweeper.n_trials=1", *TINY, f"hydra.sweep.dir={sweep_dir}"], synthetic_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study(sweep_dir)
    assert len(study.trials) == 4 and study.trials[3].state.name == "COMPLETE"
    assert study.trials[3].params not in [t.params for t in study.trials[:3]]  # no replayed trial
    assert (sweep_dir / "3" / "metrics.json").is_file()
    assert {job: (sweep_dir / job / "metrics.json").read_text() for job in earlier} == earlier  # earlier jobs kept
    assert [r["job"] for r in summary_rows(sweep_dir)] == ["0", "1", "2", "3"]
