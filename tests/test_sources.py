"""Training on several sources (data.sources=[mnist,unipen]): the checks, the epoch's mix, per-source validation
and the run report; UNIPEN's renders are stood in for by small fakes so that nothing is drawn here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lenet.unipen_images
from lenet.data import MNISTDataModule
from lenet.experiment import run
from lenet.unipen_images import RenderedPart

from helpers import compose_config, data_dir

DIGITS, RENDERS = 50, 3


def fake_renders(data_dir, part, renders=1, styles=None, seed=0, limit=None, cache_dir=None, log=None) -> RenderedPart:
    """Digit d's render r is an image whose every pixel is 10 * r + 1, so a batch tells which render it holds."""
    count = DIGITS if part == "train" else 20
    images = torch.zeros(count, renders, 1, 28, 28, dtype=torch.uint8)
    for r in range(renders):
        images[:, r] = 10 * r + 1
    labels = torch.arange(count) % 10
    return RenderedPart(images, labels, [f"c/w{i % 5}" for i in range(count)], [["page"] * renders] * count)


@pytest.fixture
def fake_unipen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lenet.unipen_images, "load_renders", fake_renders)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sources": ["mnist", "emnist"]}, r"must list each source once, mnist first"),
        ({"sources": ["unipen", "mnist"]}, r"mnist first"),
        ({"sources": ["mnist", "unipen", "unipen"]}, r"each source once"),
        ({"sources": ["mnist", "unipen"], "dataset": "fashion_mnist"}, r"fit data.dataset=mnist only"),
        ({"weights": {"unipen": 0}}, r"data.weights.unipen=0 must be a positive number"),
        ({"weights": {"mnist": 2}}, r"data.weights.mnist must be 1"),
        ({"weights": {"usps": 1}}, r"data.weights names 'usps', which is not a source"),
        ({"sources": ["mnist", "unipen"], "unipen": {"renders": 0}}, r"data.unipen.renders=0 must be a positive whole number"),
        ({"sources": ["mnist", "unipen"], "unipen": {"styles": {"crayon": 1}}}, r"unknown drawing style"),
        ({"unipen": {"render": 2}}, r"data.unipen has no setting\(s\) \['render'\]"),
    ],
)
def test_bad_source_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(data_dir="data", **settings)


def test_an_epoch_shows_mnist_once_and_each_unipen_digit_weight_times_in_turning_renders(fake_unipen) -> None:
    datamodule = MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "unipen"], weights={"unipen": 2}, unipen={"renders": RENDERS})
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    assert len(labels) == 54_000 + DIGITS * RENDERS
    assert datamodule.val_sources == ["mnist", "unipen"] and len(datamodule.splits["val_unipen"][1]) == 20
    seen = []
    for epoch in range(3):
        pool = datamodule.epoch_pool(epoch)
        assert torch.equal(pool[:54_000], torch.arange(54_000))  # every MNIST digit once
        unipen = pool[54_000:] - 54_000
        assert len(unipen) == 2 * DIGITS
        digits, renders = unipen // RENDERS, unipen % RENDERS
        assert torch.equal(torch.bincount(digits, minlength=DIGITS), torch.full((DIGITS,), 2))  # each digit twice
        first, second = renders[:DIGITS], renders[DIGITS:]
        assert (first != second).all()  # two different drawings of a digit in one epoch
        assert torch.equal(labels[pool[54_000:]], datamodule.splits["train"][1][54_000 + digits * RENDERS])
        seen.append(renders[:DIGITS])
    assert not torch.equal(seen[0], seen[1])  # the next epoch turns to other drawings

    half = MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "unipen"], weights={"unipen": 0.5}, unipen={"renders": RENDERS})
    half.setup()
    pool = half.epoch_pool(0)[54_000:]
    assert len(pool) == DIGITS // 2 and len(set(pool.tolist())) == DIGITS // 2
    assert not torch.equal(pool, half.epoch_pool(1)[54_000:])


def test_mnist_alone_is_the_default_and_is_unchanged() -> None:
    datamodule = MNISTDataModule(data_dir=str(data_dir()))
    assert datamodule.hparams.sources == ["mnist"]
    datamodule.setup()
    assert len(datamodule.splits["train"][1]) == 54_000 and "val_unipen" not in datamodule.splits
    assert not isinstance(datamodule.val_dataloader(), list)


def test_a_run_on_two_sources_validates_and_reports_each(tmp_path: Path, fake_unipen) -> None:
    overrides = [
        "data.sources=[mnist,unipen]", "data.weights.unipen=2", "data.unipen.renders=3", "data.batch_size=256",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=10", "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "figures=false",
    ]  # fmt: skip
    metrics = run(compose_config(tmp_path, overrides))
    assert 0.0 <= metrics["val_unipen/acc"] <= 1.0 and "val_unipen/f1" in metrics and "val_unipen/loss" in metrics
    assert "dataloader_idx" not in " ".join(metrics)
    report = (tmp_path / "report.md").read_text()
    assert "mnist + unipen x2 (3 renders: page 1)" in report and "val_unipen/acc" in report
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val_unipen/acc"] == metrics["val_unipen/acc"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert "val_unipen/acc" in events.Tags()["scalars"] and "val/acc" in events.Tags()["scalars"]


# ----------------------------------------------------------------------------- users' corrections as a source


def corrections_file(path: Path) -> Path:
    """Three digit corrections by anna (pixels 200, 201, 202: a batch tells which), one by bob, one not-a-digit."""
    from lenet.corrections import NOT_A_DIGIT, Correction, CorrectionStore

    store = CorrectionStore(path)
    for i, label in enumerate([4, 9, 7]):
        store.add(Correction(label, bytes([200 + i]) * 784, predicted=1, confidence=0.6, model="m", writer="anna"))
    store.add(Correction(3, bytes([250]) * 784, predicted=5, confidence=0.7, model="m", writer="bob"))
    store.add(Correction(NOT_A_DIGIT, bytes(784), predicted=2, confidence=0.4, model="m", writer="anna"))
    return path


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sources": ["mnist", "corrections"]}, r"data.sources names corrections but data.corrections.path is not set"),
        ({"corrections": {"file": "c.db"}}, r"data.corrections has no setting\(s\) \['file'\]"),
        ({"corrections": {"path": 3}}, r"data.corrections.path=3 must be text"),
        ({"weights": {"corrections": -1}}, r"data.weights.corrections=-1 must be a positive number"),
    ],
)
def test_bad_correction_settings_are_refused_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(data_dir="data", **settings)


def test_corrections_join_training_weight_times_an_epoch_and_have_no_validation_set(tmp_path: Path) -> None:
    database = corrections_file(tmp_path / "c.db")
    datamodule = MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "corrections"], weights={"corrections": 5},
                                 corrections={"path": str(database), "writer": "anna"})  # fmt: skip
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    assert len(labels) == 54_000 + 3  # anna's three digits; bob's and the not-a-digit left out
    assert labels[54_000:].tolist() == [4, 9, 7] and images[54_000:, 0, 0, 0].tolist() == [200, 201, 202]
    pool = datamodule.epoch_pool(0)
    assert torch.equal(pool[:54_000], torch.arange(54_000))
    assert torch.equal(torch.bincount(pool[54_000:] - 54_000, minlength=3), torch.full((3,), 5))  # each correction 5 times
    assert datamodule.val_sources == ["mnist"] and not isinstance(datamodule.val_dataloader(), list)
    shown = torch.cat([batch_labels for _, batch_labels in datamodule.train_dataloader()])
    assert len(shown) == 54_000 + 15


def test_corrections_follow_unipen_and_each_keeps_its_rows(tmp_path: Path, fake_unipen) -> None:
    database = corrections_file(tmp_path / "c.db")
    datamodule = MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "unipen", "corrections"], weights={"unipen": 1, "corrections": 2},
                                 unipen={"renders": RENDERS}, corrections={"path": str(database)})  # fmt: skip
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    assert len(labels) == 54_000 + DIGITS * RENDERS + 4
    unipen, corrections = datamodule.epoch_pool(0)[54_000:].split([DIGITS, 8])
    assert ((unipen >= 54_000) & (unipen < 54_000 + DIGITS * RENDERS)).all()
    assert sorted(images[corrections, 0, 0, 0].tolist()) == [200, 200, 201, 201, 202, 202, 250, 250]
    assert datamodule.val_sources == ["mnist", "unipen"]


def test_a_missing_or_empty_corrections_source_is_one_clear_error(tmp_path: Path) -> None:
    from lenet.datafiles import DataError

    missing = MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "corrections"], corrections={"path": str(tmp_path / "none.db")})
    with pytest.raises(DataError, match=r"data.corrections.path: .*none.db"):
        missing.setup()
    only_refused = MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "corrections"],
                                   corrections={"path": str(corrections_file(tmp_path / "c.db")), "writer": "nobody"})  # fmt: skip
    with pytest.raises(DataError, match=r"holds no corrections by writer 'nobody'"):
        only_refused.setup()
    from lenet.corrections import NOT_A_DIGIT, Correction, CorrectionStore

    no_digits = tmp_path / "no_digits.db"
    CorrectionStore(no_digits).add(Correction(NOT_A_DIGIT, bytes(784), predicted=2, confidence=0.4, model="m", writer="anna"))
    with pytest.raises(DataError, match=r"holds only not-a-digit corrections by writer 'anna'"):
        MNISTDataModule(data_dir=str(data_dir()), sources=["mnist", "corrections"], corrections={"path": str(no_digits), "writer": "anna"}).setup()


def test_a_run_with_corrections_names_them_in_its_recipe(tmp_path: Path) -> None:
    database = corrections_file(tmp_path / "c.db")
    overrides = [
        "data.sources=[mnist,corrections]", f"data.corrections.path={database}", "data.weights.corrections=20", "data.batch_size=256",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "figures=false",
    ]  # fmt: skip
    run(compose_config(tmp_path / "run", overrides))
    assert f"mnist + corrections x20 ({database})" in (tmp_path / "run" / "report.md").read_text()
