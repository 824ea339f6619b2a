"""The C kernel (lenet.native): PyTorch's answers for one image and for batches of any size, its
build cache, clear refusals, and `--native` in lenet-predict and lenet-serve."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import REPO
from test_predict import image_dir, json_lines  # noqa: F401 (a fixture)
from test_serve import digits  # noqa: F401 (a fixture)

from lenet import native
from lenet.inference import LoadedModel, load_ensemble, load_model
from lenet.models import LeNet5, LeNet5Classic


needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None, reason="needs a C compiler (CI installs gcc: .ci/run)"
)


@pytest.fixture(autouse=True)
def own_build_cache(tmp_path_factory, monkeypatch):
    """Every test builds into (or loads from) this session's cache, never the user's."""
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "lenet_cache"))
    native.kernel.cache_clear()
    yield
    native.kernel.cache_clear()


def random_lenet(seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    return LoadedModel(LeNet5().eval(), mean=0.1307, std=0.3081, checkpoint_path=Path("random.ckpt"), model_hparams={}, data_hparams={})


@needs_compiler
def test_kernel_gives_pytorchs_probabilities_for_one_image_and_any_batch(trained_run, mnist_test):
    loaded = load_model(trained_run)
    model = native.load_native(loaded)
    images, labels = mnist_test[0][:1000], mnist_test[1][:1000]
    expected = loaded.predict_probs(images)
    for count in (1000, 37, 16, 15, 2):  # whole groups of 16 images, and groups padded with blank lanes
        assert (model.predict_probs(images[:count]) - expected[:count]).abs().max() < 1e-5
    singles = torch.cat([model.predict_probs(images[i : i + 1]) for i in range(200)])  # the one-image kernel
    assert (singles - expected[:200]).abs().max() < 1e-5
    assert model.predict_probs(images.float() / 255).argmax(1).eq(labels).float().mean() > 0.95
    assert model.predict_probs(images[:0]).shape == (0, 10)
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model.predict_probs(torch.zeros(2, 1, 32, 32))
    # Weights far from a trained network's, on inputs beyond 0..1: nothing depends on typical values.
    for seed in (1, 2):
        other = random_lenet(seed)
        noise = torch.rand(40, 1, 28, 28) * 3 - 1
        reference = other.predict_probs(noise)
        kernel = native.load_native(other, threads=2)
        assert (kernel.predict_probs(noise) - reference).abs().max() < 1e-5
        assert (kernel.predict_probs(noise[:1]) - reference[:1]).abs().max() < 1e-5


@needs_compiler
def test_every_vector_width_gives_the_same_answers():
    """AVX-512 (16 floats a vector), AVX2 (8) and SSE2 (4) builds where the CPU has them; elsewhere the
    -march flag is refused and the fallback build (the plain ISA's vectors) is checked instead."""
    loaded = random_lenet(3)
    noise = torch.rand(40, 1, 28, 28)
    expected = loaded.predict_probs(noise)
    widths = set()
    for march in ("native", "x86-64-v3", "x86-64"):
        model = native.load_native(loaded, threads=2, march=march)
        widths.add(model.library.lenet5_lanes())
        for count in (40, 1, 9):
            assert (model.predict_probs(noise[:count]) - expected[:count]).abs().max() < 1e-5, (march, count)
    assert widths <= {4, 8, 16}
    if platform.machine() in ("x86_64", "AMD64"):
        assert {4, 8} <= widths  # SSE2 and AVX2 builds really ran


@needs_compiler
def test_build_is_cached_and_a_damaged_library_is_rebuilt(tmp_path, monkeypatch):
    # A cache of its own, built by another process: a library this process has loaded stays mapped
    # (and glibc hands the loaded copy back for its path), so only a fresh path tests a fresh load.
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path))
    subprocess.run([sys.executable, "-c", "from lenet import native; native.kernel()"], check=True, cwd=REPO)
    [library] = list(native.cache_dir().glob("lenet5-*.so"))
    (tmp_path / "damaged").write_bytes(b"cut short")
    os.replace(tmp_path / "damaged", library)  # replaced, never written in place: the other process may have it mapped
    model = native.load_native(random_lenet(0))
    assert library.stat().st_size > 1000 and list(native.cache_dir().glob("*.so")) == [library]  # built again
    assert model.predict_probs(torch.zeros(3, 1, 28, 28)).sum(1).allclose(torch.ones(3))
    built = library.stat().st_mtime_ns
    subprocess.run([sys.executable, "-c", "from lenet import native; native.kernel()"], check=True, cwd=REPO)
    assert library.stat().st_mtime_ns == built  # loaded, not built again


def test_clear_refusals(monkeypatch):
    classic = LoadedModel(LeNet5Classic().eval(), 0.1307, 0.3081, Path("classic.ckpt"), {}, {})
    with pytest.raises(native.NativeError, match="runs LeNet-5 only, and this is LeNet5Classic: leave out --native"):
        native.load_native(classic)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    native.kernel.cache_clear()
    with pytest.raises(native.NativeError, match="needs a C compiler.*cannot run.*install one"):
        native.load_native(random_lenet(0))
    monkeypatch.setenv("CC", "false")  # a compiler that fails every build
    native.kernel.cache_clear()
    with pytest.raises(native.NativeError, match=r"false could not build lenet/lenet5.c \(exit status 1\): leave out --native"):
        native.load_native(random_lenet(0))
    assert not list(native.cache_dir().glob("*.partial"))  # nothing half-built left behind


@needs_compiler
def test_predict_native_gives_the_same_answers(trained_run, image_dir, capsys):  # noqa: F811
    from lenet.predict import main

    folder, _ = image_dir
    assert main([str(trained_run), str(folder), "--json"]) == 0
    pytorch = json_lines(capsys.readouterr().out)
    assert main([str(trained_run), str(folder), "--json", "--native", "--batch-size", "7"]) == 0
    kernel = json_lines(capsys.readouterr().out)
    assert [r["digit"] for r in kernel] == [r["digit"] for r in pytorch]
    assert max(abs(a - b) for x, y in zip(kernel, pytorch) for a, b in zip(x["probs"], y["probs"])) < 1e-5
    with pytest.raises(SystemExit):
        main([str(trained_run), str(folder), "--native", "--device", "cuda"])
    assert "--native runs on the CPU" in capsys.readouterr().err


@needs_compiler
def test_serve_native_gives_the_same_answers(trained_run, digits):  # noqa: F811
    from lenet.serve import create_app

    assert isinstance(load_ensemble([trained_run], native=True), native.NativeModel)
    batch = [("files", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(digits)]
    answers = {}
    for kind in ("pytorch", "native"):
        with TestClient(create_app(trained_run, native=kind == "native")) as client:
            one = client.post("/predict", files={"file": ("digit.png", digits[0][0], "image/png")}).json()
            answers[kind] = [one, *client.post("/predict/batch", files=batch).json()["predictions"]]
            assert isinstance(client.app.state.model, native.NativeModel) == (kind == "native")
    assert [a["digit"] for a in answers["native"]] == [a["digit"] for a in answers["pytorch"]]
    differences = [abs(p - q) for a, b in zip(answers["native"], answers["pytorch"]) for p, q in zip(a["probs"], b["probs"])]
    assert len(differences) == 110 and max(differences) < 1e-5
