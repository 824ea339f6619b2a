"""The served model: shipped inside the package as safetensors weights and a JSON card, read without pickle,
the same answers as the checkpoint it came from, its card's figures reproduced; lenet-predict reads it by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lenet import served
from lenet.evaluation import evaluate
from lenet.inference import SERVED_WEIGHTS, CheckpointError, load_ensemble, load_model, load_weights
from lenet.predict import main as predict_main


@pytest.fixture(scope="module")
def shipped(trained_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("served") / "model.safetensors"
    return served.ship([load_model(trained_run)], path, figures={"mnist": 0.5}, recipe={"network": "LeNet5"})


def test_shipped_weights_answer_as_their_checkpoint(trained_run, shipped, mnist_test) -> None:
    images, _ = mnist_test
    expected = load_model(trained_run).predict_probs(images[:500])
    assert torch.equal(load_weights(shipped).predict_probs(images[:500]), expected)
    assert torch.equal(load_ensemble([str(shipped)]).predict_probs(images[:500]), expected)  # what the commands call
    assert shipped.read_bytes()[8:9] == b"{"  # safetensors: a length, a JSON header, raw tensors; no pickle


def test_an_ensemble_ships_as_one_file_of_numbered_members(trained_run, tmp_path, mnist_test) -> None:
    from safetensors import safe_open

    from lenet.inference import Ensemble

    path = served.ship([load_model(trained_run), load_model(trained_run)], tmp_path / "pair.safetensors")
    with safe_open(str(path), "pt") as tensors:
        assert {key.split(".", 1)[0] for key in tensors.keys()} == {"0", "1"}
    pair = load_weights(path)
    assert isinstance(pair, Ensemble) and len(pair.members) == 2
    images = mnist_test[0][:200]
    torch.testing.assert_close(pair.predict_probs(images), load_model(trained_run).predict_probs(images))


def test_the_card_says_what_the_weights_are(trained_run, shipped) -> None:
    card = json.loads(shipped.with_suffix(".json").read_text())
    assert card["format"] == served.CARD_FORMAT and card["network"]["_target_"] == "lenet.models.LeNet5"
    assert card["parameters"] == 44_426 and card["dataset"] == "mnist"
    assert card["preprocessing"]["function"] == "lenet.preprocess.prepare_image"
    assert card["training"]["data"][0]["name"] == "mnist" and card["figures"] == {"mnist": 0.5}


def _copy(shipped: Path, folder: Path) -> Path:
    folder.mkdir()
    target = folder / shipped.name
    target.write_bytes(shipped.read_bytes())
    target.with_suffix(".json").write_text(shipped.with_suffix(".json").read_text())
    return target


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda w: w.with_suffix(".json").unlink(), r"needs its card model.json beside it"),
        (lambda w: w.with_suffix(".json").write_text("{not json"), r"missing or not JSON"),
        (lambda w: w.with_suffix(".json").write_text('{"network": {"_target_": "os.system", "command": "true"}}'), r"os.system.*not"),
        (lambda w: w.with_suffix(".json").write_text('{"network": {"_target_": "lenet.models.LeNet5"}, "dataset": "emnist"}'), r"emnist"),
        (lambda w: w.write_bytes(w.read_bytes()[:200]), r"not a readable safetensors file"),
        (lambda w: w.unlink(), r"do not exist: train one with `python train.py experiment=served`"),
    ],
)
def test_damaged_or_foreign_files_are_refused_in_one_line(shipped, tmp_path, damage, message) -> None:
    weights = _copy(shipped, tmp_path / "copy")
    damage(weights)
    with pytest.raises(CheckpointError, match=message) as raised:
        load_weights(weights)
    assert "\n" not in str(raised.value)


def test_weights_that_do_not_fit_their_network_are_refused(shipped, tmp_path) -> None:
    weights = _copy(shipped, tmp_path / "cnn")
    card = json.loads(weights.with_suffix(".json").read_text())
    card["network"] = {"_target_": "lenet.models.LeNet5", "num_classes": 10**8}  # would allocate gigabytes
    weights.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="its weights do not fit the network it names"):
        load_weights(weights)


def test_the_package_ships_a_model_that_reproduces_its_card(mnist_test) -> None:
    assert SERVED_WEIGHTS.is_file(), f"{SERVED_WEIGHTS} is missing: ship one with `python -m lenet.served RUN_DIR --figures ...`"
    card = json.loads(SERVED_WEIGHTS.with_suffix(".json").read_text())
    images, labels = mnist_test
    accuracy = evaluate(load_weights(), images, labels).metrics["test/acc"]
    assert accuracy == pytest.approx(card["figures"]["mnist"], abs=5e-5)
    assert accuracy >= 0.994
    sources = [entry["name"] for entry in card["training"]["data"]]
    assert sources == ["mnist", "unipen"] and "CC BY 4.0" in card["training"]["data"][1]["licence"]


def test_lenet_predict_reads_with_the_shipped_model_when_given_none(trained_run, image_dir, capsys) -> None:
    folder, labels = image_dir
    assert predict_main([str(folder), "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(answers) == len(labels)
    right = sum(answer["digit"] == labels[Path(answer["path"]).name] for answer in answers)
    assert right >= len(labels) - 1
    # A run directory first is still the model, although its figures/ folder holds PNGs.
    assert predict_main([str(trained_run), str(folder / sorted(labels)[0])]) == 0


def test_shipped_weights_grow_by_more_seeds_and_keep_each_members_provenance(synthetic_run, tmp_path) -> None:
    first = load_model(synthetic_run)
    pair = served.ship([first, first], tmp_path / "pair.safetensors", recipe=served.one_recipe([first]))
    before = json.loads(pair.with_suffix(".json").read_text())["training"]
    out = tmp_path / "three.safetensors"
    assert served.main([str(pair), str(synthetic_run), "--out", str(out), "--temperature", "1"]) == 0
    after = json.loads(out.with_suffix(".json").read_text())
    assert after["members"] == 3 and len(load_weights(out).members) == 3
    checkpoint = synthetic_run / "checkpoints" / "best.ckpt"
    assert after["training"]["checkpoints_sha256"] == before["checkpoints_sha256"] + [served._sha256(checkpoint)]
    assert after["training"]["best_epochs"] == before["best_epochs"] + [len(first.history)]
    assert after["training"]["recipe"] == before["recipe"] and after["training"]["data"] == before["data"]


def test_growing_shipped_weights_by_another_recipes_checkpoint_is_refused(synthetic_run, tmp_path, capsys) -> None:
    other = served.ship([load_model(synthetic_run)], tmp_path / "other.safetensors", recipe={"network": "LeNet5", "lr": 9})
    assert served.main([str(other), str(synthetic_run), "--out", str(tmp_path / "mixed.safetensors")]) == 2
    assert "trained with different recipes" in capsys.readouterr().err and not (tmp_path / "mixed.safetensors").exists()
