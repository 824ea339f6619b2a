"""Start-up without the cyclic garbage collector (lenet/startup.py): off while the commands import,
on again, with the imported objects frozen out of its collections, before any work starts."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

from lenet.startup import end_of_startup, imports_without_collector
from helpers import REPO


@pytest.fixture
def collector_restored():
    """The test process's collector as it was: on, nothing frozen."""
    yield
    gc.unfreeze()
    gc.enable()


def test_end_of_startup_freezes_what_start_up_made_then_turns_the_collector_on(collector_restored):
    gc.unfreeze()
    gc.disable()
    made_at_start_up = [[index] for index in range(1_000)]
    end_of_startup()
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen >= len(made_at_start_up)
    made_later = [[index] for index in range(1_000)]
    end_of_startup()  # the next job of a multirun: the collector is on, nothing more is frozen
    # Not "==": a frozen object that other tests left behind may be freed meanwhile (seen in CI: 11
    # fewer); a second freeze would add the 1,000 lists made since.
    assert gc.get_freeze_count() <= frozen and gc.isenabled() and made_later


def test_imports_without_collector_turns_it_off_within_and_leaves_a_caller_that_turned_it_off_alone(collector_restored):
    gc.unfreeze()
    with imports_without_collector():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() > 0

    gc.unfreeze()
    gc.disable()
    with imports_without_collector():
        assert not gc.isenabled()
    assert not gc.isenabled() and gc.get_freeze_count() == 0  # the caller ends its own start-up


CHECK_TRAIN_PY = """
import gc, json, runpy, sys
import lenet.experiment

seen = {}

def run(cfg):
    seen.update(collecting=gc.isenabled(), frozen=gc.get_freeze_count())
    return {"best_val_acc": 0.5}

lenet.experiment.run = run  # what train.py's main() hands the work to, recording the collector's state
sys.argv = ["train.py", "hydra.run.dir=" + sys.argv[1]]
try:
    runpy.run_path("train.py", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(seen))
"""


@pytest.mark.slow  # a process importing train.py's stack
def test_train_py_runs_with_the_collector_on_and_its_imports_frozen(tmp_path, synthetic_dir):
    env = {**os.environ, "LENET_DATA_DIR": str(synthetic_dir)}
    result = subprocess.run([sys.executable, "-c", CHECK_TRAIN_PY, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # torch and Lightning (imported above) alone make hundreds of thousands of objects
    assert seen["collecting"] is True and seen["frozen"] > 100_000


CHECK_LENET_PREDICT = """
import gc, json, sys
import lenet.predict

seen = {}
predict_all = lenet.predict.predict_all

def recording_predict_all(*args):
    seen.update(collecting=gc.isenabled(), frozen=gc.get_freeze_count())
    return predict_all(*args)

lenet.predict.predict_all = recording_predict_all
sys.argv = ["lenet-predict", *sys.argv[1:]]
try:
    lenet.predict.cli()
except SystemExit as exit:
    seen["status"] = exit.code
print(json.dumps(seen))
"""


def test_lenet_predict_predicts_with_the_collector_on_and_torch_frozen(synthetic_run, tmp_path):
    from PIL import Image, ImageDraw

    drawing = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(drawing).line([(140, 40), (140, 240)], fill=0, width=24)  # a one
    drawing.save(tmp_path / "one.png")
    result = subprocess.run(
        [sys.executable, "-c", CHECK_LENET_PREDICT, str(synthetic_run), str(tmp_path / "one.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["status"] == 0, result.stderr[-2000:]
    assert seen["collecting"] is True and seen["frozen"] > 100_000  # torch's objects
