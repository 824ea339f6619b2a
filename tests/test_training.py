"""End to end: training writes a complete run directory; evaluation, determinism, resume after a kill,
sweeps and two-process DDP all work through the real entry points, on synthetic digits; one short
training on real MNIST reaches MNIST's figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, TINY, compose_config, train_module
from lenet.experiment import ConfigError, run
from lenet.inference import CheckpointError

def event_tags(log_dir: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set[str]] = {"scalars": set(), "images": set(), "hparams": set()}
    for event_file in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"images": 0}).Reload()
        for kind in ("scalars", "images"):
            tags[kind] |= set(accumulator.Tags()[kind])
        try:
            tags["hparams"] |= set(accumulator.PluginTagToContent("hparams"))
        except KeyError:  # this event file holds no hparams
            pass
    return tags


def train_subprocess(args: list[str], data: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENET_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True, **kwargs)


def test_one_epoch_on_real_mnist_reaches_mnists_figures(trained_run):
    """The one end-to-end run on real MNIST: a one-epoch LeNet-5 reads about 98% of the test set."""
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.97 and metrics["epochs"] == 1 and metrics["parameters"] == 44_426
    for c in range(10):
        assert 0.9 < metrics[f"test/class_{c}/f1"] <= 1.0
    assert f"accuracy {metrics['test/acc']:.4f}" in (trained_run / "report.md").read_text()


def test_training_writes_a_complete_run_directory(synthetic_run):
    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    for key in ("test/acc", "test/precision", "test/recall", "test/f1", "epochs", "fit_seconds", "best_val_acc"):
        assert key in metrics
    for c in range(10):
        assert 0.9 < metrics[f"test/class_{c}/f1"] <= 1.0
    assert metrics["test/acc"] > 0.95 and metrics["epochs"] == 1 and metrics["parameters"] == 44_426  # about 98% of printed digits
    assert (synthetic_run / "checkpoints" / "best.ckpt").is_file() and (synthetic_run / "checkpoints" / "last.ckpt").is_file()
    report = (synthetic_run / "report.md").read_text()
    assert f"accuracy {metrics['test/acc']:.4f}" in report
    for name in ("learning_curves", "confusion_matrix", "per_class", "misclassified"):
        figure = synthetic_run / "figures" / f"{name}.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5_000
        assert f"figures/{name}.png" in report
    tags = event_tags(synthetic_run / "tensorboard")
    assert {"train/loss", "train/acc", "val/acc", "val/f1", "test/acc", "test/f1"} <= tags["scalars"]
    assert not any("class_" in tag for tag in tags["scalars"])  # per-class results live in a text table
    assert {f"report/{n}" for n in ("confusion_matrix", "learning_curves", "per_class", "misclassified")} <= tags["images"]
    assert "_hparams_/session_start_info" in tags["hparams"]  # hparams, logged with the final metrics
    assert "## Recipe" in report and "| network | LeNet5 |" in report and "| label_smoothing | 0.1 |" in report
    assert "/tmp" not in report and "0.9915000200" not in report  # relative paths, no float noise


def hparams_columns(log_dir: Path) -> tuple[dict, set[str]]:
    """What TensorBoard's HPARAMS tab shows for a run: {hparam: value} and the metric names."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams, metrics = {}, set()
    for event_file in log_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file)).Reload()
        try:
            content = accumulator.PluginTagToContent("hparams")
        except KeyError:  # this event file holds no hparams
            continue
        for tag, raw in content.items():
            data = plugin_data_pb2.HParamsPluginData.FromString(raw)
            if tag.endswith("session_start_info"):
                hparams.update({k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in data.session_start_info.hparams.items()})
            if tag.endswith("experiment"):
                metrics |= {info.name.tag for info in data.experiment.metric_infos}
    return hparams, metrics


def test_tensorboard_shows_the_recipe_one_final_test_point_and_a_per_step_learning_rate(synthetic_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    hparams, metrics = hparams_columns(synthetic_run / "tensorboard")
    assert set(hparams) == {
        "network", "optimizer", "lr", "weight_decay", "scheduler", "batch_size", "augmentation",
        "label_smoothing", "epochs", "seed",
    }  # what differs between runs, nothing constant such as data/_target_
    assert hparams["network"] == "LeNet5" and hparams["augmentation"] == "none" and hparams["batch_size"] == 128
    assert {"hparams/best_val_acc", "hparams/test_acc", "hparams/test_f1", "hparams/test_loss"} <= metrics
    points = {}
    for event_file in (synthetic_run / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file)).Reload()
        for tag in accumulator.Tags()["scalars"]:
            points.setdefault(tag, []).extend(accumulator.Scalars(tag))
    assert len(points["test/acc"]) == 1  # one point, at the final step
    learning_rates = [tag for tag in points if tag.startswith("lr-")]
    assert learning_rates and len(points[learning_rates[0]]) >= 5  # one-cycle, seen step by step


@pytest.mark.slow  # three epochs
def test_report_shows_every_epoch_and_marks_the_best(tmp_path, synthetic_dir):
    """The learning curves and the epoch table cover the whole run, not best.ckpt's shorter history."""
    run(compose_config(tmp_path, [*TINY, "trainer.max_epochs=3", "trainer.limit_val_batches=2"], synthetic_dir))
    report = (tmp_path / "report.md").read_text()
    epoch_rows = [line for line in report.splitlines() if line.startswith("| 1") or line.startswith("| 2") or line.startswith("| 3")]
    assert [row.split(" |")[0].split(" (")[0] for row in epoch_rows][:3] == ["| 1", "| 2", "| 3"]
    assert sum("(best)" in row for row in epoch_rows) == 1
    from lenet.plots import learning_curves_figure

    history = [{"epoch": e, "train/acc": 0.9 + e / 100, "val/acc": 0.99 - abs(e - 2) / 100} for e in (1, 2, 3)]
    figure = learning_curves_figure(history, best=2)
    accuracy = figure.axes[1]
    assert [len(line.get_xdata()) for line in accuracy.get_lines()[:2]] == [3, 3]
    assert accuracy.get_ylim()[1] == 1.0


def test_figures_false_writes_metrics_and_report_without_figures_and_times_each_phase(tmp_path, synthetic_dir):
    started = time.time()
    metrics = run(compose_config(tmp_path, [*TINY, "figures=false", "trainer.limit_val_batches=2"], synthetic_dir))
    assert not (tmp_path / "figures").exists()
    report = (tmp_path / "report.md").read_text()
    assert "Figures were not drawn (`figures=false`)" in report and "figures/" not in report
    assert f"accuracy {metrics['test/acc']:.4f}" in report
    tags = event_tags(tmp_path / "tensorboard")
    assert "test/acc" in tags["scalars"] and not tags["images"]
    # Start-up is measured from outside: launch time to fit_started_at (Unix time), then fit and test.
    assert started <= metrics["fit_started_at"] <= time.time() - metrics["fit_seconds"]
    assert metrics["fit_seconds"] > 0 and metrics["test_seconds"] > 0


@pytest.mark.slow  # two epochs
def test_an_epoch_cut_short_by_max_steps_keeps_its_train_metrics(tmp_path, synthetic_dir):
    """max_steps ends the second epoch after 10 of its 20 batches: its history row (saved in
    last.ckpt, drawn in the report) still has the train metrics of the batches it ran."""
    run(compose_config(tmp_path, [*TINY, "trainer.max_epochs=2", "++trainer.max_steps=30", "trainer.limit_val_batches=2"], synthetic_dir))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 30
    history = checkpoint["callbacks"]["History"]["epochs"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(0.0 < row["train/acc"] <= 1.0 and row["train/loss"] > 0 for row in history)
    assert history[1]["train/loss"] != history[0]["train/loss"]  # its own value, not epoch 1's left over
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = [EventAccumulator(str(f)).Reload() for f in (tmp_path / "tensorboard").glob("events.out.tfevents.*")]
    assert sum(len(a.Scalars("train/acc")) for a in logged if "train/acc" in a.Tags()["scalars"]) == 2  # one point per epoch


@pytest.mark.slow  # two trainings of two epochs
def test_validating_after_the_last_epoch_only_keeps_a_best_checkpoint_quietly(tmp_path, monkeypatch, synthetic_dir):
    """experiment=fast validates once, after its last epoch: the best checkpoint is that epoch's,
    every epoch keeps its history row, and Lightning's missing-val/acc hint, which a plain fit of
    the same run does give, is not shown."""
    import warnings

    from lightning.pytorch.callbacks import model_checkpoint
    from lightning.pytorch.utilities.rank_zero import WarningCache

    from lenet.experiment import prepare_training

    overrides = [*TINY, "trainer.max_epochs=2", "+trainer.check_val_every_n_epoch=2", "trainer.limit_val_batches=2"]
    hint = "could not find the monitored key"
    monkeypatch.setattr(model_checkpoint, "warning_cache", WarningCache())  # Lightning warns once per process
    with pytest.warns(UserWarning, match=hint):
        datamodule, model, trainer = prepare_training(compose_config(tmp_path / "plain", overrides, synthetic_dir))
        trainer.fit(model, datamodule=datamodule)

    monkeypatch.setattr(model_checkpoint, "warning_cache", WarningCache())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run(compose_config(tmp_path, overrides, synthetic_dir))
    assert not [w for w in caught if hint in str(w.message)]
    checkpoint = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and metrics["best_val_acc"] is not None  # epoch indices count from 0
    history = checkpoint["callbacks"]["History"]["epochs"]
    assert [row["epoch"] for row in history] == [1, 2] and "val/acc" not in history[0] and "val/acc" in history[1]


def test_report_metrics_equal_lightning_test_metrics(synthetic_run):
    """metrics.json (scored from trainer.test's probabilities) agrees with what trainer.test logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = json.loads((synthetic_run / "metrics.json").read_text())
    logged = {}
    for event_file in (synthetic_run / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file)).Reload()
        for tag in ("test/acc", "test/f1", "test/precision"):
            if tag in accumulator.Tags()["scalars"]:
                logged[tag] = accumulator.Scalars(tag)[-1].value
    assert logged and all(metrics[k] == pytest.approx(v, abs=1e-6) for k, v in logged.items())


def test_evaluating_a_checkpoint_rebuilds_non_default_overrides(tmp_path, synthetic_dir):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    trained = run(compose_config(train_dir, [*TINY, "data.batch_size=100", "data.val_size=5000", "model.label_smoothing=0.1"], synthetic_dir))
    # Evaluation composes the *default* config: everything else comes from the checkpoint.
    evaluated = run(compose_config(eval_dir, ["train=false", f"ckpt_path={train_dir}"], synthetic_dir))
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"])
    assert evaluated["test/f1"] == pytest.approx(trained["test/f1"])
    assert (eval_dir / "report.md").is_file() and (eval_dir / "figures" / "confusion_matrix.png").is_file()
    with pytest.raises(ConfigError, match="ckpt_path"):
        run(compose_config(eval_dir, ["train=false"], synthetic_dir))
    with pytest.raises(CheckpointError, match="does not exist"):
        run(compose_config(eval_dir, ["train=false", f"ckpt_path={tmp_path / 'nope.ckpt'}"], synthetic_dir))
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((train_dir / "checkpoints" / "best.ckpt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        run(compose_config(eval_dir, ["train=false", f"ckpt_path={broken}"], synthetic_dir))


@pytest.mark.slow  # three trainings
def test_same_seed_and_config_give_identical_metrics(tmp_path, synthetic_dir):
    first = run(compose_config(tmp_path / "a", TINY, synthetic_dir))
    second = run(compose_config(tmp_path / "b", TINY, synthetic_dir))
    third = run(compose_config(tmp_path / "c", [*TINY, "seed=1"], synthetic_dir))
    tests = lambda m: {k: v for k, v in m.items() if k.startswith("test/")}  # noqa: E731
    assert tests(first) == tests(second)
    assert tests(first) != tests(third)


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path, synthetic_dir):
    run_dir = tmp_path / "interrupted"
    env = {**os.environ, "LENET_DATA_DIR": str(synthetic_dir)}
    args = [*TINY, "trainer.limit_train_batches=60", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        try:
            process.wait(timeout=0.2)  # returns at once if the run ends
        except subprocess.TimeoutExpired:
            pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.exists(), "the run never wrote last.ckpt"
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be interrupted"
    interrupted_epoch = torch.load(last, weights_only=True)["epoch"]
    assert interrupted_epoch < 2

    resumed_dir = tmp_path / "resumed"
    result = train_subprocess([*args[:-1], f"hydra.run.dir={resumed_dir}", f"ckpt_path={last}"], synthetic_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((resumed_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    history = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["History"]["epochs"]
    assert [row["epoch"] for row in history] == [1, 2, 3]  # curves carry over the interruption


# Saves a first checkpoint, then dies by SIGKILL halfway through writing a second one: through
# Lightning's TorchCheckpointIO (argv[2] == "lightning") or, as a control, a plain write in place.
SAVE_AND_DIE = """
import io, os, signal, sys
import torch
from fsspec.implementations.local import LocalFileOpener
from lightning.pytorch.plugins.io import TorchCheckpointIO

path, how = sys.argv[1], sys.argv[2]
checkpoint_io = TorchCheckpointIO()
checkpoint_io.save_checkpoint({"epoch": 1, "weights": torch.zeros(200_000)}, path)
second = {"epoch": 2, "weights": torch.ones(200_000)}
write = LocalFileOpener.write

def half_then_die(file, data):
    write(file, data[: len(data) // 2])
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if how == "lightning":
    LocalFileOpener.write = half_then_die  # the file object fsspec gives Lightning's _atomic_save
    checkpoint_io.save_checkpoint(second, path)
else:
    buffer = io.BytesIO()
    torch.save(second, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow  # a process each, importing Lightning
@pytest.mark.parametrize("how", ["lightning", "plain write"])
def test_a_kill_mid_save_leaves_the_previous_checkpoint(tmp_path, how):
    """Lightning writes checkpoints through an fsspec transaction (a temporary file moved into place),
    so a process killed halfway through a save leaves the previous checkpoint loadable; the control
    shows the same kill ruins a checkpoint written in place."""
    path, scratch = tmp_path / "last.ckpt", tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}  # where fsspec's temporary file goes
    result = subprocess.run([sys.executable, "-c", SAVE_AND_DIE, str(path), how], env=env, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    if how == "lightning":
        assert torch.load(path, weights_only=True)["epoch"] == 1
        assert [f.stat().st_size > 0 for f in scratch.iterdir()] == [True]  # the kill came mid-write
    else:
        with pytest.raises(RuntimeError):
            torch.load(path, weights_only=True)


@pytest.mark.slow
def test_multirun_writes_one_directory_per_job_and_a_summary(tmp_path, synthetic_dir):
    sweep_dir = tmp_path / "sweep"
    result = train_subprocess(["-m", *TINY, "data.batch_size=128,256", f"hydra.sweep.dir={sweep_dir}"], synthetic_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep_dir / "0" / "metrics.json").is_file() and (sweep_dir / "1" / "metrics.json").is_file()
    rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and "data.batch_size=128" in rows[1] and "data.batch_size=256" in rows[2]
    assert sum(row.endswith(",yes") for row in rows[1:]) == 1
    assert "★" in (sweep_dir / "summary.md").read_text()
    assert event_tags(sweep_dir / "0" / "tensorboard")["scalars"] and event_tags(sweep_dir / "1" / "tensorboard")["scalars"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run_directory(tmp_path, synthetic_dir):
    run_dir = tmp_path / "ddp"
    result = train_subprocess(
        ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", *TINY, f"hydra.run.dir={run_dir}"], synthetic_dir, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 20  # 20 steps per process of 128 images each
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2
    # Process r takes every other image of each epoch's order, so its shards of batch i together are
    # exactly batch i of one process at twice the batch size: the two runs learn the same model.
    single = run(compose_config(tmp_path / "single", [*TINY, "data.batch_size=256"], synthetic_dir))
    assert metrics["test/acc"] == pytest.approx(single["test/acc"], abs=2e-3)
    assert metrics["test/acc"] > 0.2  # and it learned something


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.batch_size=abc"], "data.batch_size='abc' must be a whole number"),
        (["model.optimizer.lr=-1"], "model.optimizer.lr=-1 must be a positive number"),
        (["data.data_dir=/nonexistent", "data.download=false"], "files are missing from /nonexistent"),
        (["ckpt_path=/nonexistent/last.ckpt"], "checkpoint /nonexistent/last.ckpt does not exist"),
        (["model.net._target_=os.system"], "is not in this project's allow-list"),
        pytest.param(
            ["experiment=fast_gpu"], "trainer.accelerator=gpu but torch sees no CUDA GPU here: use trainer=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
    ],
    ids=["batch size", "learning rate", "data dir", "resume checkpoint", "target", "gpu preset without a gpu"],
)
@pytest.mark.parametrize("as_command", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["main", "train.py"])
def test_user_errors_are_one_line_not_a_traceback(overrides, expected, as_command, tmp_path, synthetic_dir, capsys):
    """Through train.py's main on a composed config, and (slow: a process each) as the command a user types."""
    if as_command:
        result = train_subprocess([*TINY, *overrides, f"hydra.run.dir={tmp_path}"], synthetic_dir, timeout=180)
        status, stderr = result.returncode, result.stderr
    else:
        with pytest.raises(SystemExit) as exit_info:
            train_module().main(compose_config(tmp_path, [*TINY, *overrides], synthetic_dir))
        status, stderr = exit_info.value.code, capsys.readouterr().err
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1 and expected in errors[0], stderr[-2000:]
