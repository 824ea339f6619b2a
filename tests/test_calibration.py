"""Temperature scaling (lenet.calibration): the fit finds the temperature the data were drawn with, the
card's temperature is what the shipped model answers with, in PyTorch and in the C kernel, and
`python -m lenet.served` fits it on validation sets and writes it in the card."""

from __future__ import annotations

import json

import pytest
import torch

from lenet import calibration, served
from lenet.inference import CheckpointError, load_ensemble, load_model, load_weights


def _drawn_with(temperature: float, members: int = 3, count: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Members' logits and labels drawn from the members' mean of softmax(logits / temperature)."""
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(count, 10, generator=generator) * 3
    logits = shared + torch.randn(members, count, 10, generator=generator)  # members that mostly agree
    probs = (logits / temperature).softmax(dim=-1).mean(dim=0)
    return logits, torch.multinomial(probs, 1, generator=generator).squeeze(1)


@pytest.mark.parametrize("true_temperature", [0.6, 1.0, 1.8])
def test_the_fit_finds_the_temperature_the_labels_were_drawn_with(true_temperature: float) -> None:
    logits, labels = _drawn_with(true_temperature)
    fitted = calibration.fit_temperature([(logits, labels)])
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    best = calibration.ensemble_nll(logits, labels, fitted)
    assert best <= min(calibration.ensemble_nll(logits, labels, t) for t in (fitted * 0.8, fitted * 1.25))


def test_each_set_weighs_the_same_whatever_its_size() -> None:
    sharp, blunt = _drawn_with(0.5, count=4000), _drawn_with(2.0, count=400)
    both = calibration.fit_temperature([sharp, blunt])
    assert 0.5 * 1.1 < both < 2.0 / 1.1  # between the two, not pulled to the larger set's 0.5
    assert calibration.fit_temperature([sharp, blunt]) == both  # deterministic


def test_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    labels = torch.tensor([0, 0, 0, 0])
    sure_and_right = torch.nn.functional.one_hot(labels, 10).float()
    assert calibration.calibration_error(sure_and_right, labels) == 0.0
    modest = torch.full((4, 10), 0.4 / 9).index_put_((torch.arange(4), labels), torch.tensor(0.6))  # 60% sure, always right
    assert calibration.calibration_error(modest, labels) == pytest.approx(0.4)
    half_right = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1]), 10).float()  # sure, right half the time
    assert calibration.calibration_error(half_right, labels) == pytest.approx(0.5)
    logits, drawn = _drawn_with(1.0)
    calibrated = calibration.calibration_error((logits / 1.0).softmax(-1).mean(0), drawn)
    assert calibrated < 0.03 < calibration.calibration_error((logits / 3.0).softmax(-1).mean(0), drawn)


@pytest.mark.parametrize("value", [0, -1, 50, "hot", True, None])
def test_a_temperature_out_of_bounds_is_refused(value) -> None:
    with pytest.raises(ValueError, match=r"must be a number from 0.05 to 20"):
        calibration.checked_temperature(value, "--temperature")


def test_shipped_weights_answer_with_their_cards_temperature(trained_run, mnist_test, tmp_path) -> None:
    images = mnist_test[0][:300]
    checkpoint = load_model(trained_run)
    path = served.ship([checkpoint, checkpoint], tmp_path / "cool.safetensors", calibration={"temperature": 0.5})
    shipped = load_weights(path)
    assert [member.temperature for member in shipped.members] == [0.5, 0.5]
    torch.testing.assert_close(shipped.predict_probs(images), (checkpoint.logits(images) / 0.5).softmax(dim=1))
    assert shipped.predict_probs(images).max(dim=1).values.mean() > checkpoint.predict_probs(images).max(dim=1).values.mean()
    assert torch.equal(shipped.predict_probs(images).argmax(1), checkpoint.predict_probs(images).argmax(1))  # answers kept
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["calibration"] == {"temperature": 0.5}
    # Re-shipping the loaded members keeps their temperature; the weights stay the networks' own.
    again = served.ship(shipped.members, tmp_path / "again.safetensors")
    assert json.loads(again.with_suffix(".json").read_text())["calibration"] == {"temperature": 0.5}
    torch.testing.assert_close(load_weights(again).predict_probs(images), shipped.predict_probs(images), rtol=0, atol=0)


@pytest.mark.skipif(not __import__("shutil").which("gcc") and not __import__("shutil").which("cc"), reason="needs a C compiler")
def test_the_c_kernel_answers_with_the_cards_temperature_too(trained_run, mnist_test, tmp_path) -> None:
    images = mnist_test[0][:200]
    path = served.ship([load_model(trained_run)], tmp_path / "cool.safetensors", calibration={"temperature": 0.4})
    python, kernel = load_ensemble([str(path)]), load_ensemble([str(path)], native=True)
    assert (kernel.predict_probs(images) - python.predict_probs(images)).abs().max() < 1e-5


def test_a_damaged_temperature_is_refused_in_one_line(trained_run, tmp_path) -> None:
    path = served.ship([load_model(trained_run)], tmp_path / "model.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    card["calibration"] = {"temperature": 0}
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"model.json: calibration.temperature=0 must be a number") as raised:
        load_weights(path)
    assert "\n" not in str(raised.value)


def test_shipping_fits_the_temperature_on_the_validation_sets(trained_run, mnist_test, tmp_path, monkeypatch, capsys) -> None:
    images, labels = mnist_test
    halves = {"first": (images[:2000], labels[:2000]), "second": (images[2000:3000], labels[2000:3000])}
    monkeypatch.setattr(calibration, "validation_sets", lambda data_dir: halves)  # the real ones draw UNIPEN's writers
    out = tmp_path / "fitted.safetensors"
    assert served.main([str(trained_run), "--out", str(out)]) == 0
    fitted = json.loads(out.with_suffix(".json").read_text())["calibration"]
    logits = calibration.member_logits([load_model(trained_run)], images[:2000])
    assert fitted["temperature"] == calibration.fit_temperature([(logits, labels[:2000]), (calibration.member_logits(
        [load_model(trained_run)], images[2000:3000]), labels[2000:3000])])  # fmt: skip
    assert all(fitted["nll_after"][name] <= fitted["nll_before"][name] + 1e-3 for name in halves)
    assert load_weights(out).temperature == fitted["temperature"] and "temperature" in capsys.readouterr().out
    assert served.main([str(trained_run), "--out", str(out), "--temperature", "1"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["calibration"]["temperature"] == 1.0


def test_shipping_without_the_validation_data_says_how_to_ship_uncalibrated(trained_run, tmp_path, capsys) -> None:
    out = tmp_path / "model.safetensors"
    assert served.main([str(trained_run), "--out", str(out), "--data-dir", str(tmp_path / "nothing")]) == 2
    error = capsys.readouterr().err
    assert "cannot fit the temperature" in error and "--temperature 1" in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
