"""The extras: the core install imports without any of them, and a command whose extra is missing
says which one to install, in one line (lenet/extras.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO
from lenet import export, serve
from lenet.extras import EXTRAS, installed, missing_extra

OPTIONAL = [module for modules in EXTRAS.values() for module in modules]
FOR_TESTS = ("serve", "export", "search", "bench")  # the extras that lenet[dev] installs


def test_every_extra_is_declared_and_the_tests_have_theirs():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
    assert f"lenet[{','.join(FOR_TESTS)}]" in declared["dev"]
    missing = [module for extra in FOR_TESTS for module in EXTRAS[extra] if not installed(module)]
    assert not missing, f"{missing}: pip install -e '.[dev]'"


def test_a_missing_module_names_its_extra(monkeypatch):
    assert missing_extra("serve", "lenet-serve") is None
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what an import of a module that is not installed sees
    assert not installed("uvicorn")
    assert missing_extra("serve", "lenet-serve") == (
        'lenet-serve needs the serve extra: pip install "lenet[serve]" (uvicorn is not installed)'
    )


@pytest.mark.parametrize(
    ("module", "extra", "command", "main", "argv"),
    [
        ("fastapi", "serve", "lenet-serve", serve.main, ["--ckpt", "run"]),
        ("onnx", "export", "lenet-export", export.main, ["run", "--onnx", "m.onnx"]),
    ],
)
def test_commands_without_their_extra_fail_in_one_line(monkeypatch, capsys, module, extra, command, main, argv):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert capsys.readouterr().err == f'{command} needs the {extra} extra: pip install "lenet[{extra}]" ({module} is not installed)\n'


def test_a_sweep_without_the_search_extra_fails_in_one_line():
    """A real train.py: one line naming the extra, where Hydra would print its config search path."""
    script = (
        "import runpy, sys\nsys.modules['hydra_plugins.hydra_optuna_sweeper'] = None\n"
        "sys.argv = ['train.py', 'hparams_search=optuna']\nrunpy.run_path('train.py', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == (
        'train.py hparams_search=optuna needs the search extra: pip install "lenet[search]" '
        "(hydra_plugins.hydra_optuna_sweeper is not installed)\n"
    )


def test_an_onnx_file_without_onnx_runtime_names_the_export_extra(monkeypatch, tmp_path):
    from lenet.inference import CheckpointError, load_ensemble

    (tmp_path / "m.onnx").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CheckpointError, match=r'needs ONNX Runtime .*pip install "lenet\[export\]"'):
        load_ensemble([tmp_path / "m.onnx"])


@pytest.mark.slow  # a process importing the training stack
def test_the_core_modules_import_without_any_extra():
    """Training, evaluation, prediction, explanations and comparisons, with every optional module hidden."""
    script = (
        f"import sys\nfor name in {OPTIONAL!r}: sys.modules[name] = None\n"
        "import lenet.experiment, lenet.predict, lenet.explain, lenet.compare, lenet.sweep, lenet.export, lenet.serve\n"
        "from lenet.config import load_config\nload_config(['trainer.max_epochs=1'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_without_the_bench_extra_the_skeleton_sets_are_unavailable_in_one_line(monkeypatch):
    from lenet.realdigits import unavailable

    monkeypatch.setitem(sys.modules, "skimage", None)
    for name in ("pen", "styles"):
        assert unavailable(name) == f'the {name} set needs the bench extra: pip install "lenet[bench]" (skimage is not installed)'
    assert unavailable("binary_scan") is None  # drawn without scikit-image
