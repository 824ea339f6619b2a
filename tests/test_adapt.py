"""Adapting a model to a writer (lenet.adapt, lenet-adapt). Fast tier: a model trained briefly on
synthetic printed digits, rehearsing the synthetic MNIST files; the simulated writer draws digits
upside down, which the model misreads."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lenet.adapt import AdaptError, AdaptSettings, adapt, load_replay, main
from lenet.corrections import NOT_A_DIGIT, Correction, CorrectionsError, CorrectionStore, read_corrections
from lenet.inference import Ensemble, load_ensemble, load_model

QUICK = AdaptSettings(steps=60)  # where the test is about plumbing, not about how well it adapts


@pytest.fixture(scope="module")
def model(synthetic_run):
    return load_model(synthetic_run)


@pytest.fixture(scope="module")
def replay(synthetic_dir):
    return load_replay(synthetic_dir, ["mnist"])


@pytest.fixture(scope="module")
def writer(model, synthetic_test):
    """An upside-down writer: (corrections: the first of their digits the model misreads, up to 2 per
    class, with their true labels; the rest of their 200 digits; untouched upright test digits)."""
    images, labels = synthetic_test
    upside_down, truth = images[:200].flip(-2, -1), labels[:200]
    read = model.predict_probs(upside_down).argmax(1)
    chosen, taken = [], {}
    for i in range(len(truth)):
        label = int(truth[i])
        if int(read[i]) != label and taken.get(label, 0) < 2:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(i)
    rest = [i for i in range(len(truth)) if i not in chosen]
    return (upside_down[chosen], truth[chosen]), (upside_down[rest], truth[rest]), (images[1000:3000], labels[1000:3000])


def answers(model, images):
    return model.predict_probs(images).argmax(1)


def test_adapting_learns_the_corrections_and_keeps_the_other_digits(model, replay, writer):
    (images, labels), (rest, rest_labels), (upright, upright_labels) = writer
    assert len(labels) >= 8 and (answers(model, images) != labels).all()  # a writer with something to correct
    adapted = adapt(model, images, labels, replay)
    assert (answers(adapted, images) == labels).float().mean() >= 0.9
    before = (answers(model, rest) == rest_labels).float().mean()
    after = (answers(adapted, rest) == rest_labels).float().mean()
    assert after >= before + 0.3  # the writer's other digits, never shown: 27% -> 78% read right when written
    agree = (answers(adapted, upright) == answers(model, upright)).float().mean()
    assert agree >= 0.98  # upright digits answered as before (99.5% when written)
    assert model.net is not adapted.net and (answers(model, images) != labels).all()  # the original is unchanged


def weights(model) -> dict[str, torch.Tensor]:
    members = model.members if isinstance(model, Ensemble) else [model]
    return {f"{i}.{key}": value for i, member in enumerate(members) for key, value in member.net.state_dict().items()}


def same_weights(a, b) -> bool:
    first, second = weights(a), weights(b)
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_the_same_inputs_and_seed_give_the_same_weights(model, replay, writer):
    (images, labels), _, _ = writer
    first = adapt(model, images, labels, replay, QUICK)
    assert same_weights(first, adapt(model, images, labels, replay, QUICK))
    assert not same_weights(first, adapt(model, images, labels, replay, AdaptSettings(steps=QUICK.steps, seed=1)))


@pytest.mark.parametrize(
    "images, labels, problem",
    [
        (torch.zeros(0, 1, 28, 28, dtype=torch.uint8), [], "no corrections given"),
        (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), [1, 2], "28x28"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), [1], "one whole-number label per image"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), [1, 11], "labels [11] are not digits"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), [1.0, 2.0], "one whole-number label per image"),
        (torch.full((1, 1, 28, 28), 2.0), [1], "0..1"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), [NOT_A_DIGIT, NOT_A_DIGIT], "no digit corrections"),
    ],
)
def test_bad_corrections_are_refused_in_one_line(model, images, labels, problem):
    with pytest.raises(AdaptError, match=re.escape(problem)) as refused:
        adapt(model, images, labels, settings=QUICK)
    assert "\n" not in str(refused.value)


def test_not_a_digit_corrections_are_skipped_with_a_note(model, writer):
    (images, labels), _, _ = writer
    notes = []
    with_drawing = torch.cat([images, torch.zeros(1, 1, 28, 28, dtype=torch.uint8)])
    adapted = adapt(model, with_drawing, [*labels.tolist(), NOT_A_DIGIT], settings=QUICK, log=notes.append)
    assert len(notes) == 1 and "skipped 1" in notes[0] and "not_a_digit" in notes[0]
    assert same_weights(adapted, adapt(model, images, labels, settings=QUICK))  # as if it had never been sent


def corrections_database(path, writer) -> None:
    """The writer's corrections as lenet-serve --collect keeps them, beside another writer's and a non-digit."""
    (images, labels), _, _ = writer
    store = CorrectionStore(path)
    for image, label in zip(images, labels):
        store.add(Correction(int(label), image.numpy().tobytes(), predicted=0, confidence=0.5, model="synthetic", writer="anna"))
    store.add(Correction(NOT_A_DIGIT, bytes(784), predicted=3, confidence=0.4, model="synthetic", writer="anna"))
    store.add(Correction(7, bytes(784), predicted=1, confidence=0.9, model="synthetic", writer="bob"))


def test_lenet_adapt_writes_weights_that_serve_and_match_the_function(tmp_path, synthetic_run, synthetic_dir, model, writer, capsys):
    database = tmp_path / "corrections.db"
    corrections_database(database, writer)
    out = tmp_path / "anna.safetensors"
    common = ["--ckpt", str(synthetic_run), "--data-dir", str(synthetic_dir), "--replay", "mnist", "--steps", str(QUICK.steps)]
    assert main([str(database), "--writer", "anna", "--out", str(out), *common]) == 0
    printed = capsys.readouterr()
    assert "skipped 1" in printed.err and f"lenet-serve --ckpt {out}" in printed.out
    served = load_ensemble([out])  # what lenet-serve --ckpt reads
    (images, labels), _, _ = writer
    replay = load_replay(synthetic_dir, ["mnist"])
    assert same_weights(served, adapt(model, images, labels, replay, QUICK))  # the command is the function
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["recipe"]["adapted"]["corrections"] == len(labels) and card["members"] == 1

    # An export of the same rows adapts to the same weights.
    CorrectionStore(database).export(tmp_path / "exported", writer="anna")
    again = tmp_path / "again.safetensors"
    assert main([str(tmp_path / "exported"), "--out", str(again), *common]) == 0
    assert same_weights(served, load_ensemble([again]))


def test_an_ensemble_adapts_each_member(tmp_path, synthetic_run, synthetic_dir, writer):
    (images, labels), _, _ = writer
    pair = load_ensemble([synthetic_run, synthetic_run])
    adapted = adapt(pair, images, labels, settings=QUICK)
    first, second = adapted.members
    assert not same_weights(first, second)  # seeds 0 and 1
    assert same_weights(adapt(pair, images, labels, settings=QUICK, workers=1), adapted)  # one after the other or side by side
    out = tmp_path / "pair.safetensors"
    database = tmp_path / "c.db"
    corrections_database(database, writer)
    args = [str(database), "--writer", "anna", "--out", str(out), "--ckpt", str(synthetic_run), "--ckpt", str(synthetic_run),
            "--data-dir", str(synthetic_dir), "--replay", "none", "--steps", str(QUICK.steps)]  # fmt: skip
    assert main(args) == 0
    assert same_weights(load_ensemble([out]), adapted)


@pytest.mark.parametrize(
    "make, extra, problem",
    [
        (None, [], "does not exist"),
        ("database", ["--writer", "carol"], "no corrections by writer 'carol'"),
        ("folder", [], "no labels.csv"),
        ("database", ["--replay", "usps"], "unknown replay source"),
        ("database", ["--ckpt", "nowhere"], "nowhere does not exist"),
    ],
)
def test_lenet_adapt_refuses_bad_input_in_one_line(tmp_path, synthetic_run, synthetic_dir, writer, capsys, make, extra, problem):
    source = tmp_path / "source"
    if make == "database":
        corrections_database(source, writer)
    elif make == "folder":
        source.mkdir()
    args = [str(source), "--out", str(tmp_path / "out.safetensors"), "--data-dir", str(synthetic_dir), "--replay", "mnist"]
    if "--ckpt" not in extra:
        args += ["--ckpt", str(synthetic_run)]
    assert main(args + extra) == 2
    error = capsys.readouterr().err.strip()
    assert problem in error and len(error.splitlines()) == 1 and error.startswith("lenet-adapt: ")
    assert not (tmp_path / "out.safetensors").exists()


def test_lenet_adapt_will_not_overwrite_the_model_it_adapts(tmp_path, writer):
    database = tmp_path / "c.db"
    corrections_database(database, writer)
    served = tmp_path / "model.safetensors"
    with pytest.raises(SystemExit):
        main([str(database), "--ckpt", str(served), "--out", str(served)])


def test_read_corrections_refuses_an_export_image_of_another_size(tmp_path, writer):
    from PIL import Image

    database = tmp_path / "c.db"
    corrections_database(database, writer)
    folder = tmp_path / "exported"
    CorrectionStore(database).export(folder)
    first = sorted(folder.glob("*.png"))[0]
    Image.new("L", (32, 32)).save(first)
    with pytest.raises(CorrectionsError, match="not a prepared 28x28 image"):
        read_corrections(folder)
