"""lenet-compare end to end on a small subset: every kind of model, three output files."""

from __future__ import annotations

import csv

import pytest
from helpers import data_dir

from lenet.compare import main


@pytest.mark.slow
def test_compare_runs_end_to_end_and_writes_its_three_files(tmp_path):
    out = tmp_path / "comparison"
    rows = main([
        "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir()),
        "--epochs", "1", "--train-batches", "3", "--ensemble-seeds", "1", "2",
        "--baseline-train-size", "500", "--override", "++trainer.limit_val_batches=1",
        "--only", "augmentation", "cnn", "knn",
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


def test_only_that_matches_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="matched no model"):
        main(["--out", str(tmp_path), "--data-dir", str(data_dir()), "--only", "transformer"])
