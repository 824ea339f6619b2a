"""lenet-compare: a Hydra multirun's jobs plus ensembles and baselines, and (slow) training its own networks."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from lenet.compare import main, recipe_key


def fake_job(sweep_dir, job: str, run_dir, overrides: list[str]) -> None:
    """A job folder as `python train.py -m` leaves it, holding the checkpoint of a real run."""
    (sweep_dir / job / ".hydra").mkdir(parents=True)
    (sweep_dir / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    if run_dir is not None:  # None: a job that failed before writing its metrics
        shutil.copy(run_dir / "metrics.json", sweep_dir / job / "metrics.json")
        shutil.copytree(run_dir / "checkpoints", sweep_dir / job / "checkpoints")


def test_compare_reads_a_sweep_and_adds_seed_ensembles_and_baselines(trained_run, mnist_dir, tmp_path):
    """On real MNIST and USPS: every model's real-digits columns must read real handwriting."""
    sweep = tmp_path / "sweep"
    fake_job(sweep, "0", trained_run, ["experiment=fast", "seed=1"])
    fake_job(sweep, "1", trained_run, ["experiment=fast", "seed=2"])
    fake_job(sweep, "2", trained_run, ["experiment=fast", "model.optimizer.lr=0.1", "seed=1"])
    fake_job(sweep, "3", None, ["experiment=fast", "seed=3"])
    out = tmp_path / "comparison"
    rows = main([
        "--from-sweep", str(sweep), "--out", str(out), "--data-dir", str(mnist_dir), "--baseline-train-size", "500",
        "--only", "knn", "--real-digits", "usps,binary_scan", "--real-limit", "100",
    ])

    assert [(row["model"], row["kind"]) for row in rows] == [
        ("experiment=fast seed=1", "network"),
        ("experiment=fast seed=2", "network"),
        ("experiment=fast model.optimizer.lr=0.1 seed=1", "network"),
        ("experiment=fast: ensemble of 2 (seeds 1, 2)", "ensemble"),  # the unfinished job 3 is left out
        ("knn", "scikit-learn"),
    ]
    # Network rows are the jobs' own metrics.json; the ensemble of two copies of one checkpoint,
    # evaluated afresh from the checkpoints, must score exactly what training's trainer.test did.
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert rows[0]["test/f1"] == trained["test/f1"] and rows[0]["fit_seconds"] == trained["fit_seconds"]
    assert rows[3]["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert rows[3]["parameters"] == 2 * trained["parameters"] and rows[3]["fit_seconds"] == pytest.approx(2 * trained["fit_seconds"])
    # Every model, networks, ensemble and baseline alike, gets the real-digits columns.
    for row in rows:
        assert 0.3 < row["real/usps"] <= 1.0 and 0.3 < row["real/binary_scan"] <= 1.0, row["model"]
    assert rows[3]["real/usps"] == pytest.approx(rows[0]["real/usps"])  # two copies of one checkpoint
    with open(out / "comparison.csv") as f:
        table = list(csv.DictReader(f))
        assert [row["model"] for row in table] == [row["model"] for row in rows]
        assert float(table[4]["real/usps"]) == rows[4]["real/usps"]
    markdown = (out / "comparison.md").read_text()
    assert f"Hydra multirun `{sweep}`" in markdown and "| experiment=fast: ensemble of 2 (seeds 1, 2) | ensemble |" in markdown
    assert "| usps | binary_scan |" in markdown
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_reads_several_sweeps_into_one_table(synthetic_run, synthetic_dir, tmp_path):
    fake_job(tmp_path / "a", "0", synthetic_run, ["experiment=fast", "seed=1"])
    fake_job(tmp_path / "b", "0", synthetic_run, ["experiment=robust", "seed=1"])
    fake_job(tmp_path / "b", "1", synthetic_run, ["experiment=robust", "seed=2"])
    out = tmp_path / "comparison"
    rows = main([
        "--from-sweep", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--data-dir", str(synthetic_dir),
        "--baseline-train-size", "500", "--only", "knn", "--real-digits", "none",
    ])
    assert [row["model"] for row in rows] == [
        "experiment=fast seed=1", "experiment=robust seed=1", "experiment=robust seed=2",
        "experiment=robust: ensemble of 2 (seeds 1, 2)", "knn",
    ]
    markdown = (out / "comparison.md").read_text()
    assert f"the Hydra multirun `{tmp_path / 'a'}` and of the Hydra multirun `{tmp_path / 'b'}`" in markdown


def test_a_recipe_is_the_same_however_hydra_recorded_it():
    """A sweep records `figures=False`, a single run `figures=false`: one recipe, so one ensemble."""
    assert recipe_key("experiment=fast model.net.convs_per_stage=2 seed=1 figures=false") == recipe_key(
        "experiment=fast model.net.convs_per_stage=2 seed=2 figures=False"
    )
    assert recipe_key("experiment=fast seed=1") != recipe_key("experiment=fast model.optimizer.lr=0.1 seed=1")


def test_a_sweep_without_finished_jobs_is_a_clear_error(tmp_path, synthetic_dir):
    fake_job(tmp_path / "sweep", "0", None, ["seed=1"])
    with pytest.raises(ValueError, match="no finished job"):
        main(["--from-sweep", str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--data-dir", str(synthetic_dir), "--real-digits", "none"])


@pytest.mark.slow
def test_compare_runs_end_to_end_and_writes_its_three_files(tmp_path, synthetic_dir):
    out = tmp_path / "comparison"
    rows = main([
        "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(synthetic_dir),
        "--epochs", "1", "--train-batches", "3", "--ensemble-seeds", "1", "2",
        "--baseline-train-size", "500", "--override", "++trainer.limit_val_batches=1",
        "--only", "augmentation", "cnn", "knn", "--real-digits", "none",
    ])
    names = [row["model"] for row in rows]
    assert names == ["lenet5 + augmentation", "cnn (seed 1)", "cnn (seed 2)", "cnn ensemble of 2 (seeds 1, 2)", "knn"]
    assert [row["kind"] for row in rows] == ["network", "network", "network", "ensemble", "scikit-learn"]

    with open(out / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["model"] for row in table] == names
    for row in table:
        assert 0.0 < float(row["test/acc"]) <= 1.0
        assert 0.0 <= float(row["test/f1"]) <= 1.0
        assert int(row["parameters"]) > 0
        assert float(row["fit_seconds"]) > 0 and float(row["inference_images_per_second"]) > 0
    # The ensemble is trained by its members: its fit time is theirs, its size their sum.
    assert float(table[3]["fit_seconds"]) == pytest.approx(float(table[1]["fit_seconds"]) + float(table[2]["fit_seconds"]), abs=0.02)
    assert int(table[3]["parameters"]) == 2 * int(table[1]["parameters"])
    assert (tmp_path / "runs" / "cnn_augmented_seed2" / "checkpoints" / "best.ckpt").is_file()

    markdown = (out / "comparison.md").read_text()
    for name in names:
        assert f"| {name} |" in markdown
    assert "++trainer.limit_train_batches=3" in markdown  # the overrides are on record
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_that_matches_nothing_is_a_clear_error(tmp_path, synthetic_dir):
    with pytest.raises(ValueError, match="matched no model"):
        main(["--out", str(tmp_path), "--data-dir", str(synthetic_dir), "--only", "transformer", "--real-digits", "none"])
