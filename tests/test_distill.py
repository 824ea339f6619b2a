"""Distillation (`model.distill`): the student learns its teachers' softened answers on the same
augmented batches; the teachers are read like any checkpoint and never become part of the student."""

from __future__ import annotations

import re

import pytest
import torch

from helpers import compose_config
from lenet.datafiles import load_split
from lenet.datasets import dataset_stats, normalize
from lenet.experiment import run
from lenet.inference import load_model
from lenet.module import Classifier

LENET = {"_target_": "lenet.models.LeNet5"}
SGD = {"_target_": "torch.optim.SGD", "lr": 0.1}


def test_a_student_equal_to_its_teacher_has_no_distillation_loss(synthetic_run, synthetic_test):
    images = normalize(synthetic_test[0][:256], *dataset_stats("mnist"))
    student = Classifier(LENET, SGD, distill={"teachers": [str(synthetic_run)], "weight": 0.5, "temperature": 4.0})
    teacher = student.distillation.teachers[0]
    assert not any(p.requires_grad for p in teacher.parameters())
    untrained_loss = student.distillation_loss(student(images), images)
    student.net.load_state_dict(teacher.state_dict())
    assert student.distillation_loss(student(images), images).item() == pytest.approx(0.0, abs=1e-5)
    assert untrained_loss.item() > 0.1
    # The teachers are not the student's: same weights saved, same parameter count as without them.
    plain = Classifier(LENET, SGD)
    assert set(student.state_dict()) == set(plain.state_dict())
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in plain.parameters()) == 44_426


def test_a_student_learns_what_its_teacher_says_not_the_labels(trained_run, mnist_dir, tmp_path):
    """A teacher whose answers are shifted by one digit (d read as d+1): a student trained on its
    answers alone (weight 1) reads MNIST shifted too, so the teacher's signal is what it learned."""
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    for key in ("net.classifier.5.weight", "net.classifier.5.bias"):
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key].roll(1, dims=0)
    shifted = tmp_path / "shifted.ckpt"
    torch.save(checkpoint, shifted)
    run(compose_config(tmp_path / "student", [
        "trainer.max_epochs=1", "trainer.limit_train_batches=60", "data.batch_size=128", "trainer.enable_progress_bar=false",
        "figures=false", f"+model.distill.teachers=[{shifted}]", "+model.distill.weight=1.0", "+model.distill.temperature=2.0",
    ], mnist_dir))  # fmt: skip
    assert "| distillation | 1 teacher, weight 1.0, T 2.0 |" in (tmp_path / "student" / "report.md").read_text()
    student = load_model(tmp_path / "student")
    assert student.model_hparams["distill"]["teachers"] == [str(shifted)]
    images, labels = load_split(mnist_dir, "mnist", "test")
    answers = student.predict_probs(images[:2000]).argmax(dim=1)
    assert (answers == (labels[:2000] + 1) % 10).float().mean() > 0.6  # 0.76 measured; chance is 0.1
    assert (answers == labels[:2000]).float().mean() < 0.05


@pytest.mark.parametrize(
    ("distill", "expected"),
    [
        ({"teachers": "outputs/run", "weight": 0.5}, "model.distill.teachers='outputs/run' must be a list"),
        ({"teachers": [], "weight": 0.5}, "model.distill.teachers=[] must be a list"),
        ({"teachers": ["x"], "weight": 0}, "model.distill.weight=0 must be a number in (0, 1]"),
        ({"teachers": ["x"], "weight": 1.5}, "model.distill.weight=1.5 must be a number in (0, 1]"),
        ({"teachers": ["x"], "temperature": 0}, "model.distill.temperature=0 must be a positive number"),
    ],
)
def test_bad_distillation_settings_are_named(distill, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        Classifier(LENET, SGD, distill=distill)


def test_a_missing_teacher_is_a_clear_error(tmp_path):
    from lenet.inference import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        Classifier(LENET, SGD, distill={"teachers": [str(tmp_path / "nowhere")]})


def test_an_exported_onnx_model_cannot_teach(synthetic_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from lenet.export import export_onnx

    onnx = export_onnx(load_model(synthetic_run), tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="an exported .onnx cannot teach"):
        Classifier(LENET, SGD, distill={"teachers": [str(onnx)]})
