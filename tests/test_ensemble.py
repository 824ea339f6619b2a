"""Ensembles: identical members reproduce the single model; members' probabilities are averaged."""

from __future__ import annotations

import json

import pytest
import torch

from lenet.ensemble import evaluate_ensemble, main
from lenet.evaluation import evaluate
from lenet.inference import CheckpointError, Ensemble, load_ensemble, load_model


def test_ensemble_of_identical_checkpoints_equals_the_single_model(synthetic_run, synthetic_test):
    images, labels = synthetic_test
    single = load_model(synthetic_run)
    ensemble = load_ensemble([synthetic_run, synthetic_run / "checkpoints" / "best.ckpt", synthetic_run])
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 3
    assert torch.allclose(ensemble.predict_probs(images), single.predict_probs(images), atol=1e-6)
    metrics = evaluate_ensemble(ensemble, images, labels)
    expected = evaluate(single, images, labels).metrics
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["members"] == 3
    assert metrics["parameters"] == 3 * 44_426
    # The training run's own report agrees (same checkpoint, same metrics code).
    report = json.loads((synthetic_run / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(report["test/acc"])


def test_ensemble_averages_the_members_probabilities(synthetic_run, synthetic_test):
    images, _ = synthetic_test
    first, second = load_model(synthetic_run), load_model(synthetic_run)
    with torch.no_grad():
        second.net.classifier[-1].bias.add_(torch.linspace(-2, 2, 10))  # a different member
    expected = (first.predict_probs(images[:500]) + second.predict_probs(images[:500])) / 2
    assert not torch.allclose(first.predict_probs(images[:500]), second.predict_probs(images[:500]))
    assert torch.allclose(Ensemble([first, second]).predict_probs(images[:500]), expected, atol=1e-6)


def test_a_shipped_ensemble_among_the_paths_adds_its_members_at_equal_weight(synthetic_run, synthetic_test, tmp_path):
    from lenet.served import ship

    images, _ = synthetic_test
    first, other = load_model(synthetic_run), load_model(synthetic_run)
    with torch.no_grad():
        other.net.classifier[-1].bias.add_(torch.linspace(-2, 2, 10))
    pair = ship([first, first], tmp_path / "pair.safetensors")  # two copies of `first`
    lone = ship([other], tmp_path / "other.safetensors")
    three = load_ensemble([pair, lone])
    assert isinstance(three, Ensemble) and len(three.members) == 3  # not an ensemble of an ensemble
    assert three.checkpoint_path == f"{pair} (2 networks), {lone}"  # the model's id in /healthz and corrections
    expected = (2 * first.predict_probs(images[:300]) + other.predict_probs(images[:300])) / 3
    assert torch.allclose(three.predict_probs(images[:300]), expected, atol=1e-6)


def test_command_line_prints_and_writes_metrics(synthetic_run, synthetic_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ensemble.json"
    metrics = main([str(synthetic_run), str(synthetic_run), "--data-dir", str(synthetic_dir), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "test/acc" in printed and "2 members" in printed
    assert json.loads(out.read_text())["test/acc"] == pytest.approx(metrics["test/acc"])


@pytest.mark.slow  # a process of its own, importing the training stack
def test_the_installed_command_exits_0_and_prints_only_the_metrics(synthetic_run, synthetic_dir):
    """An entry point's return value becomes the exit status: `lenet-ensemble` must not return its metrics."""
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).parent / "lenet-ensemble"
    result = subprocess.run([str(command), str(synthetic_run), "--data-dir", str(synthetic_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 members" in result.stdout and "{" not in result.stdout + result.stderr


def test_no_members_is_a_clear_error():
    with pytest.raises(CheckpointError, match="at least one"):
        load_ensemble([])
