"""The network, the metrics definition and the config groups."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from hydra.utils import instantiate

from helpers import CONFIG_DIR, compose_config
from lenet.metrics import confusion_matrix, evaluate_predictions
from lenet.models import LeNet5, count_parameters, layer_output_shapes


def test_lenet5_has_the_users_parameter_count_and_shapes():
    net = LeNet5()
    assert count_parameters(net) == 44_426
    shapes = [shape[1:] for name, shape in layer_output_shapes(net) if shape]
    assert shapes == [
        (6, 24, 24), (6, 24, 24), (6, 12, 12),
        (16, 8, 8), (16, 8, 8), (16, 4, 4),
        (256,), (120,), (120,), (84,), (84,), (10,),
    ]


def test_metrics_match_hand_computed_values():
    # 3 classes, 6 samples. Per class (tp, fp, fn): 0: (1,1,1), 1: (2,0,0), 2: (1,1,1)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 2, 1, 1, 2, 0])
    m = evaluate_predictions(predicted, targets, num_classes=3)
    assert m["test/acc"] == pytest.approx(4 / 6)
    assert m["test/class_0/precision"] == pytest.approx(0.5)
    assert m["test/class_1/precision"] == pytest.approx(1.0)
    assert m["test/class_2/recall"] == pytest.approx(0.5)
    assert m["test/precision"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["test/recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["test/f1"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # Probabilities give the same answer as their argmax.
    probs = torch.nn.functional.one_hot(predicted, 3).float() * 0.8 + 0.1
    assert evaluate_predictions(probs, targets, num_classes=3) == m
    assert confusion_matrix(predicted, targets, 3).tolist() == [[1, 0, 1], [0, 2, 0], [1, 0, 1]]


def test_macro_averages_weigh_classes_equally():
    # 9 of class 0 all right, 1 of class 1 wrong: accuracy 0.9 but macro recall 0.5.
    targets = torch.tensor([0] * 9 + [1])
    m = evaluate_predictions(torch.zeros(10, dtype=torch.long), targets, num_classes=2)
    assert m["test/acc"] == pytest.approx(0.9)
    assert m["test/recall"] == pytest.approx(0.5)


def option_file(group: str, option: str) -> dict:
    """What conf/<group>/<option>.yaml sets, over the options of its group it extends (`defaults: [robust, _self_]`)."""
    spec = OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml")
    defaults = spec.pop("defaults", [])  # other groups' options ({"override /model": ...}) are not this file's
    bases = [OmegaConf.load(CONFIG_DIR / group / f"{base}.yaml") for base in defaults if isinstance(base, str) and base != "_self_"]
    return OmegaConf.to_container(OmegaConf.merge(*bases, spec)) or {}


def options(group: str) -> list[str]:
    # trainer/default.yaml is the base the trainer presets extend, not a preset of its own
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml") if (group, p.stem) != ("trainer", "default"))


@pytest.mark.parametrize("group", ["data", "augment", "model", "optimizer", "scheduler", "trainer", "experiment", "logger", "callbacks"])
def test_every_config_option_composes_and_instantiates(group, tmp_path, request, synthetic_dir):
    assert options(group), f"conf/{group}/ has no options"
    for option in options(group):
        # A preset with a required value (???) gets one: the teachers of a distilled student.
        required = [f"model.distill.teachers=[{request.getfixturevalue('synthetic_run')}]"] if option == "robust_distilled" else []
        cfg = compose_config(tmp_path, [f"{group}={option}", *required], synthetic_dir)  # the short form works for every group
        chosen = option_file(group, option)
        model = instantiate(cfg.model, _recursive_=False)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        datamodule = instantiate(cfg.data, _recursive_=False)
        target = lambda spec: (spec or {}).get("_target_", "").rpartition(".")[2] or None  # noqa: E731
        if group == "model":
            assert type(model.net).__name__ == target(chosen["net"])
        elif group == "optimizer":
            assert cfg.model.optimizer._target_ == chosen["_target_"]
        elif group == "scheduler":
            assert target(OmegaConf.to_container(cfg.model.scheduler) if cfg.model.scheduler else None) == target(chosen)
        elif group == "augment":
            assert (type(datamodule.augment).__name__ if datamodule.augment is not None else None) == target(chosen)
        elif group == "logger":
            assert type(instantiate(cfg.logger)).__name__ == target(chosen)
        elif group == "callbacks":
            assert sorted(type(instantiate(spec)).__name__ for spec in cfg.callbacks.values()) == sorted(
                target(spec) for spec in chosen.values()
            )


def test_user_original_experiment_builds_the_users_recipe(tmp_path, synthetic_dir):
    """The preset reaches the objects it configures: Adam at 1e-3 without a schedule, batch 64, 5 epochs."""
    cfg = compose_config(tmp_path, ["experiment=user_original"], synthetic_dir)
    model = instantiate(cfg.model, _recursive_=False)
    optimizer = model.configure_optimizers()  # a bare optimizer: no scheduler dict
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 0.001 and optimizer.defaults["weight_decay"] == 0
    assert model.hparams.label_smoothing == 0.0
    datamodule = instantiate(cfg.data, _recursive_=False)
    assert len(datamodule.train_dataloader()) == 844  # ceil(54,000 / 64)
    assert instantiate(cfg.trainer).max_epochs == 5


def test_fast_presets_set_adams_beta2_and_the_report_names_it(tmp_path, synthetic_dir):
    """experiment=fast's beta2 of 0.97 reaches AdamW through the one-cycle schedule (which cycles beta1 only)
    and the run's recipe; fast_gpu keeps the default its GPU figures were measured with."""
    from lenet.experiment import recipe
    from lenet.module import build_optimization

    for experiment, beta2 in (("fast", 0.97), ("fast_gpu", 0.999)):
        cfg = compose_config(tmp_path / experiment, [f"experiment={experiment}"], synthetic_dir)
        model = instantiate(cfg.model, _recursive_=False)
        optimizer, _ = build_optimization(model.parameters(), model.hparams.optimizer, model.hparams.scheduler, total_steps=10)
        assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["betas"][1] == beta2
        assert recipe(model.hparams, {"batch_size": cfg.data.batch_size})["beta2"] == beta2
    assert "beta2" not in recipe({"net": {"_target_": "lenet.models.LeNet5"}, "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}, {})


def test_load_config_names_the_run_folder_as_train_py_does():
    """One home for the run-folder layout: conf/hydra/default.yaml, read by train.py and load_config alike."""
    import os
    import re

    from lenet.config import load_config

    cfg = load_config(["trainer.max_epochs=1"])
    assert re.fullmatch(rf"outputs/\d{{4}}-\d\d-\d\d/\d\d-\d\d-\d\d_{os.getpid()}", cfg.run_dir)
    assert cfg.trainer.default_root_dir == cfg.run_dir and "hydra" not in cfg
    assert load_config([], run_dir="elsewhere").callbacks.checkpoint.dirpath == "elsewhere/checkpoints"


def test_memory_format_is_a_setting_that_changes_speed_not_results():
    from lenet.module import Classifier

    spec = {"net": {"_target_": "lenet.models.LeNet5"}, "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1}}
    torch.manual_seed(0)
    nhwc = Classifier(**spec)  # channels_last by default
    torch.manual_seed(0)
    nchw = Classifier(**spec, memory_format="contiguous")
    second = nchw.net.features[3].weight  # (16, 6, 5, 5); with one input channel the formats coincide
    assert second.is_contiguous() and nhwc.net.features[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc.net.features[3].weight.is_contiguous()
    assert nchw.hparams.memory_format == "contiguous"
    images = torch.rand(8, 1, 28, 28)
    assert torch.allclose(nhwc(images), nchw(images), atol=1e-5)
    with pytest.raises(ValueError, match="model.memory_format='nhwc' is unknown"):
        Classifier(**spec, memory_format="nhwc")
