"""The real-digits benchmark: seeded sets that keep their labels, a cache that is reused and invalidated,
refusals and unsure answers scored honestly, and the whole benchmark on a trained checkpoint."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import lenet.preprocess
import lenet.realdigits.cache
import lenet.realdigits.strokes
from lenet import realdigits, render
from lenet.inference import load_ensemble, load_model

from helpers import REPO, data_dir

FROM_FILES = {"usps", "unipen_test"}  # sets read from real data files; the others are drawn from MNIST's test digits


def available(name: str, folder) -> str:
    reason = realdigits.unavailable(name, folder)
    if reason:
        pytest.skip(reason)
    return name


def pixels(image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in FROM_FILES else n for n in realdigits.SET_NAMES])
def test_each_set_is_seeded_and_any_prefix_is_the_same(name, synthetic_dir):
    folder = data_dir() if name in FROM_FILES else synthetic_dir
    available(name, folder)
    first = realdigits.make_set(name, limit=6, seed=3, data_dir=folder)
    again = realdigits.make_set(name, limit=9, seed=3, data_dir=folder)
    other = realdigits.make_set(name, limit=6, seed=4, data_dir=folder)
    assert len(first.images) == 6 and first.labels.dtype == np.int64
    assert np.array_equal(first.labels, again.labels[:6])
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first.images, again.images))
    assert not all(pixels(a).shape == pixels(b).shape and np.array_equal(pixels(a), pixels(b)) for a, b in zip(first.images, other.images))


def test_usps_keeps_the_files_labels_and_mnist_sets_are_balanced(mnist_dir):
    _, usps_labels = realdigits.usps_test(str(mnist_dir))
    assert len(usps_labels) == 2007 and np.bincount(usps_labels).tolist() == [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
    assert np.array_equal(realdigits.make_set("usps", limit=25, data_dir=mnist_dir).labels, usps_labels[:25])
    # Any prefix of an MNIST-derived set is balanced, and each image comes from a test digit of its label.
    images, labels = realdigits.mnist_test(str(mnist_dir))
    digits, chosen = realdigits.balanced_mnist("pen", range(10), 30, 0, str(mnist_dir))
    assert np.bincount(chosen).tolist() == [3] * 10
    for digit, label in zip(digits, chosen):
        assert label in labels[(images == digit).all(axis=(1, 2))]


def test_pen_digits_are_drawn_as_the_drawing_page_draws(synthetic_dir):
    pen = realdigits.make_set("pen", limit=20, data_dir=synthetic_dir)
    for image in pen.images:
        assert image.shape == (280, 280) and image.dtype == np.uint8
        assert image.min() == 0 and (image[[0, -1]][:, [0, -1]] == 255).all()  # black pen, white pad
        rows = np.flatnonzero((image < 128).any(axis=1))
        assert rows[-1] - rows[0] <= 230 + 30  # digit height plus the pen's round ends


def test_binary_scans_are_binary_and_stretched_to_a_square(synthetic_dir):
    scans = realdigits.make_set("binary_scan", limit=20, data_dir=synthetic_dir)
    for image, label in zip(scans.images, scans.labels):
        assert set(np.unique(image)) <= {0, 255}
        rows, cols = np.flatnonzero((image == 0).any(axis=1)), np.flatnonzero((image == 0).any(axis=0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        if label == 1:  # a 1 fills its box: as wide as it is high, give or take an edge cell
            assert 0.8 <= width / height <= 1.25


def test_style_strokes_add_ink_where_the_style_puts_it(mnist_dir):
    """On real MNIST: where a flag, a crossbar or a tail goes depends on how people write 1s, 7s and 9s."""
    images, labels = realdigits.balanced_mnist("styles", (1, 7, 9), 3, 0, str(mnist_dir), realdigits.plain_for_style)
    for digit, label in zip(images, labels):
        centre = realdigits.skeleton(digit)
        stroke = realdigits.style_stroke(centre, int(label), np.random.default_rng(0))
        top, bottom = np.argwhere(centre)[:, 0].min(), np.argwhere(centre)[:, 0].max()
        if label == 1:  # the flag leaves the top end towards the lower left
            assert stroke[0, 0] == top and stroke[-1, 1] < stroke[0, 1] and stroke[-1, 0] > stroke[0, 0]
        elif label == 7:  # the crossbar is horizontal-ish, below the top bar
            assert abs(stroke[-1, 0] - stroke[0, 0]) < 0.1 * (bottom - top) and stroke[:, 0].min() > top + 0.4 * (bottom - top)
        else:  # the 9's tail goes on from its lowest end and curls left
            assert stroke[0, 0] == bottom and stroke[-1, 1] < stroke[0, 1]
        plain = render.draw_with_pen(realdigits.skeleton_segments(centre), np.random.default_rng(1), realdigits.SET_PARAMS["styles"])
        segments = np.concatenate([realdigits.skeleton_segments(centre), render.polyline_segments(stroke)])
        styled = render.draw_with_pen(segments, np.random.default_rng(1), realdigits.SET_PARAMS["styles"])
        assert (styled < 128).sum() > (plain < 128).sum()


def test_refused_images_are_flagged_and_counted_wrong(synthetic_dir):
    blank = np.full((60, 60), 240, np.uint8)
    pen = realdigits.make_set("pen", limit=1, data_dir=synthetic_dir).images[0]
    prepared = realdigits.prepare_set(realdigits.DigitSet("pen", [blank, pen], np.array([3, 0]), {}))
    assert prepared.refused.tolist() == [True, False] and prepared.reasons == ["no digit found"]
    assert prepared.images[0].abs().sum() == 0 and prepared.images[1].max() == 1

    probs = torch.nn.functional.one_hot(torch.tensor([3, 0, 5, 5]), 10).float()  # all four right...
    scored = realdigits.score_set("pen", probs, torch.tensor([3, 0, 5, 5]), torch.tensor([True, False, False, False]))
    assert scored.accuracy == pytest.approx(0.75)  # ...but the first was refused
    assert scored.confusions() == [("3→refused", 1)]
    assert scored.as_dict()["refused_rate"] == pytest.approx(0.25)
    assert scored.f1 < 1 and scored.unsure_rate() == 0 and scored.answered_accuracy() == 1


def test_unsure_answers_and_choosing_a_threshold():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])
    probs = torch.cat([probs, torch.zeros(4, 8)], dim=1)
    scored = realdigits.score_set("usps", probs, torch.tensor([0, 1, 1, 1]), unsure_below=0.65)
    assert scored.accuracy == pytest.approx(0.75) and scored.confusions() == [("1→0", 1)]
    assert scored.unsure().tolist() == [False, True, True, False]
    assert scored.unsure_rate() == pytest.approx(0.5) and scored.answered_accuracy() == 1.0  # the wrong one was unsure
    assert scored.unsure_rate(0.5) == 0 and scored.answered_accuracy(0.5) == pytest.approx(0.75)
    sweep = realdigits.sweep_thresholds({"usps": scored}, [0.5, 0.65, 0.95])
    assert [row["usps"]["unsure_rate"] for row in sweep] == [0.0, 0.5, 1.0]
    assert realdigits.choose_threshold({"usps": scored}, "usps", max_unsure=0.25) == 0.6
    assert realdigits.choose_threshold({"usps": scored}, "usps", max_unsure=0.0, thresholds=[0.95]) is None


def test_prepared_sets_are_cached_reused_and_invalidated(tmp_path, monkeypatch, synthetic_dir):
    calls = []

    def counting_prepare(image):
        calls.append(1)
        return lenet.preprocess.prepare_image(image)

    monkeypatch.setattr(lenet.realdigits.cache, "prepare_image", counting_prepare)
    first = realdigits.load_prepared("binary_scan", limit=8, data_dir=synthetic_dir, cache_dir=tmp_path)
    assert len(calls) == 8 and first.images.shape == (8, 1, 28, 28)
    again = realdigits.load_prepared("binary_scan", limit=8, data_dir=synthetic_dir, cache_dir=tmp_path)
    fewer = realdigits.load_prepared("binary_scan", limit=5, data_dir=synthetic_dir, cache_dir=tmp_path)
    assert len(calls) == 8  # the cache served both
    assert torch.equal(again.images, first.images) and torch.equal(fewer.images, first.images[:5])

    realdigits.load_prepared("binary_scan", limit=8, data_dir=synthetic_dir, cache_dir=tmp_path, scale=(3, 3))
    assert len(calls) == 16  # other generator parameters: made and prepared again
    realdigits.load_prepared("binary_scan", limit=8, seed=1, data_dir=synthetic_dir, cache_dir=tmp_path)
    assert len(calls) == 24  # another seed too

    # The product's preprocessing, or the code drawing the sets, changes: the prepared images are stale.
    for module in (lenet.preprocess, lenet.realdigits.strokes):
        edited = tmp_path / f"{module.__name__}.py"
        shutil.copy(module.__file__, edited)
        edited.write_text(edited.read_text() + "\n# changed\n")
        key = realdigits.cache_key("binary_scan", 0, synthetic_dir)
        monkeypatch.setattr(module, "__file__", str(edited))
        assert realdigits.cache_key("binary_scan", 0, synthetic_dir) != key, module.__name__


@pytest.mark.slow  # a Python process importing torch
def test_scoring_imports_none_of_the_code_that_draws_the_sets():
    drawing = ("lenet.render", "lenet.unipen", "lenet.realdigits.sets", "lenet.realdigits.strokes", "lenet.realdigits.cache", "skimage")
    script = (
        "import sys, lenet.realdigits as r; r.benchmark, r.SetScore, r.score_set, r.choose_threshold\n"
        f"print(' '.join(m for m in sys.modules if m.startswith({drawing!r})))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def run_cli(args: list[str]) -> list[dict]:
    spec = importlib.util.spec_from_file_location("real_digits_cli", REPO / "benchmarks" / "real_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


def test_benchmark_runs_end_to_end_on_a_trained_checkpoint(trained_run, mnist_dir, tmp_path, capsys):
    out = tmp_path / "results" / "real_digits.json"
    args = ["--limit", "60", "--results-dir", str(out.parent), "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(mnist_dir)]
    rows = run_cli([str(trained_run), f"pair={trained_run},{trained_run}", *args, "--misread", "usps"])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    names = [name for name in realdigits.SET_NAMES if realdigits.unavailable(name, mnist_dir) is None]
    assert {"usps", "pen", "binary_scan", "styles"} <= set(names)
    assert list(report["sets"]) == ["mnist", *names] and report["sets"]["pen"]["count"] == 60
    assert report["facts"]["cpu"] and report["facts"]["git"]  # a results file names the machine and the code
    assert report["sets"]["mnist"]["count"] == 10_000  # the reference is never limited
    single, ensemble = report["models"]
    for name in [*names, "mnist"]:
        scores = single["sets"][name]
        assert scores["accuracy"] > (0.95 if name == "mnist" else 0.6)  # chance is 0.1
        assert 0 <= scores["unsure_rate"] <= 1 and len(scores["top_confusions"]) <= 5
        assert ensemble["sets"][name]["accuracy"] == scores["accuracy"]  # two copies of one model: the same answers
    assert 0 < single["threshold_for_max_unsure_usps"]["threshold"] < 1
    # unipen_test's accuracy per contributing institution adds up to the whole set's
    groups = single["groups"]["unipen_test"]
    assert sum(g["count"] for g in groups.values()) == 60
    assert sum(g["count"] * g["accuracy"] for g in groups.values()) / 60 == pytest.approx(single["sets"]["unipen_test"]["accuracy"])
    assert rows[0]["model"] == str(trained_run) and rows[1]["model"] == "pair" and "| pair |" in printed
    assert rows[1]["checkpoints"] == [str(trained_run)] * 2 and "| model | usps |" in printed
    assert out.with_suffix(".md").read_text().count("|") > 10
    assert Image.open(out.with_name("real_digits_samples.png")).size[0] > 500
    # Every misread USPS digit of the last model on one sheet, ten a row.
    misread = round((1 - ensemble["sets"]["usps"]["accuracy"]) * 60)
    assert misread > 0 and Image.open(out.with_name("real_digits_misread_usps.png")).size[1] >= 100 * -(-misread // 10)


def test_identical_checkpoints_as_an_ensemble_score_as_the_single_model(synthetic_run, synthetic_dir, tmp_path):
    sets = realdigits.load_sets(["pen", "binary_scan"], limit=40, data_dir=synthetic_dir, cache_dir=tmp_path, reference=False)
    single = realdigits.benchmark(load_model(synthetic_run), sets)
    ensemble = realdigits.benchmark(load_ensemble([synthetic_run, synthetic_run]), sets)
    for name in sets:
        assert torch.allclose(ensemble[name].evaluation.probs, single[name].evaluation.probs, atol=1e-6)
        assert ensemble[name].as_dict() == single[name].as_dict()  # (p + p) / 2 == p exactly
