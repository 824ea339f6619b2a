"""Checkpoints and configs are data, never code: a crafted `_target_` anywhere is refused before it runs.

Each malicious payload, if it ever ran, would unpickle an object that creates a marker file; every
test asserts the marker is absent and the error names the problem.
"""

from __future__ import annotations

import base64
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, compose_config
from lenet.experiment import run
from lenet.inference import CheckpointError, load_model
from lenet.registry import NotAllowedError, build


class _Touch:
    """Unpickling this creates `path`: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def torch_load_payload(marker: Path) -> dict:
    """The attack from the hardening issue: Hydra would build torch.load(BytesIO(b64decode(pickle)))."""
    encoded = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    return {
        "_target_": "torch.load",
        "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode", "s": encoded}},
        "weights_only": False,
    }


def crafted_checkpoint(synthetic_run: Path, tmp_path: Path, where: str, marker: Path) -> Path:
    checkpoint = torch.load(synthetic_run / "checkpoints" / "best.ckpt", weights_only=True)
    payload = torch_load_payload(marker)
    if where == "net":
        checkpoint["hyper_parameters"]["net"] = payload
    elif where == "net argument":  # an allowed network with a payload nested in its arguments
        checkpoint["hyper_parameters"]["net"] = {"_target_": "lenet.models.LeNet5", "num_classes": payload}
    elif where == "optimizer":
        checkpoint["hyper_parameters"]["optimizer"] = {**payload, "_partial_": True}
    elif where == "scheduler":
        checkpoint["hyper_parameters"]["scheduler"] = payload
    elif where == "augment":
        checkpoint["datamodule_hyper_parameters"]["augment"] = {
            "_target_": "lenet.augment.Compose", "transforms": [payload],
        }
    path = tmp_path / f"crafted_{where.replace(' ', '_')}.ckpt"
    torch.save(checkpoint, path)
    return path


PLACES = ["net", "net argument", "optimizer", "scheduler", "augment"]


@pytest.mark.parametrize("where", PLACES)
def test_crafted_checkpoint_is_refused_by_the_inference_core(synthetic_run, tmp_path, where):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(synthetic_run, tmp_path, where, marker)
    with pytest.raises(CheckpointError, match="not one of this project's"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["net", "augment"])
def test_crafted_checkpoint_is_refused_by_evaluation_and_resume(synthetic_run, synthetic_dir, tmp_path, where):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(synthetic_run, tmp_path, where, marker)
    for overrides in (["train=false", f"ckpt_path={path}"], ["trainer.max_epochs=2", f"ckpt_path={path}"]):
        with pytest.raises(CheckpointError, match="not one of this project's"):
            run(compose_config(tmp_path / "run", overrides, synthetic_dir))
    assert not marker.exists()


@pytest.mark.slow  # a process per command
def test_crafted_checkpoint_is_refused_by_the_command_line_tools(synthetic_run, tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(synthetic_run, tmp_path, "net", marker)
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (28, 28), 0).save(image)
    for command in (
        ["-m", "lenet.predict", str(path), str(image)],
        ["-m", "lenet.export", str(path), "--onnx", str(tmp_path / "model.onnx")],
    ):
        result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "not one of this project's networks" in result.stderr
        assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_remote_checkpoints_are_refused(tmp_path, synthetic_dir):
    with pytest.raises(CheckpointError, match="remote address"):
        load_model("http://127.0.0.1:9/model.ckpt")
    with pytest.raises(CheckpointError, match="remote address"):
        run(compose_config(tmp_path / "run", ["ckpt_path=http://127.0.0.1:9/last.ckpt"], synthetic_dir))


def test_config_targets_outside_the_allow_list_are_refused(tmp_path, synthetic_dir):
    marker = tmp_path / "pwned"
    overrides = [
        "model.net._target_=pathlib.Path.touch",
        f"+model.optimizer.foo={{_target_: os.system, command: 'touch {marker}'}}",
        "trainer._target_=os.system",
    ]
    for override in overrides:
        with pytest.raises(NotAllowedError, match="allow-list|not one of this project's"):
            run(compose_config(tmp_path / "run", [override, "trainer.max_epochs=1"], synthetic_dir))
    assert not marker.exists()


def test_builder_accepts_only_plain_arguments():
    with pytest.raises(NotAllowedError, match="not one of this project's networks"):
        build({"_target_": "os.system", "command": "true"}, "network")
    with pytest.raises(NotAllowedError, match="check the argument names"):
        build({"_target_": "lenet.models.LeNet5", "colour": "red"}, "network")
    with pytest.raises(NotAllowedError, match="only numbers, strings"):
        build({"_target_": "lenet.models.LeNet5", "num_classes": object()}, "network")
    with pytest.raises(NotAllowedError, match="plain keyword"):
        build({"_target_": "lenet.models.LeNet5", "_args_": ["x"]}, "network")
    assert sum(p.numel() for p in build({"_target_": "lenet.models.LeNet5"}, "network").parameters()) == 44_426


def test_weights_that_do_not_fit_the_named_network_are_a_clear_error(synthetic_run, tmp_path):
    checkpoint = torch.load(synthetic_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {"_target_": "lenet.models.ModernCNN"}
    path = tmp_path / "mismatch.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not fit the network"):
        load_model(path)
    checkpoint["hyper_parameters"] = 7
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="no `net` hyperparameters"):
        load_model(path)



def test_network_arguments_that_do_not_fit_the_weights_are_refused_before_allocating(synthetic_run, tmp_path):
    checkpoint = torch.load(synthetic_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {"_target_": "lenet.models.LeNet5", "num_classes": 10**8}  # 34 GB of weights
    path = tmp_path / "huge.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not fit the network"):
        load_model(path)
    checkpoint["hyper_parameters"]["net"] = {"_target_": "lenet.models.LeNet5", "num_classes": -1}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not fit the network"):
        load_model(path)
    checkpoint["hyper_parameters"]["net"] = {"_target_": "lenet.models.LeNet5"}
    checkpoint["datamodule_hyper_parameters"]["dataset"] = "cifar10"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="data this project does not know"):
        load_model(path)
