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
