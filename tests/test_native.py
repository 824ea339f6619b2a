"""The C kernel (lenet.native): PyTorch's answers for one image and for batches of any size, its
build cache, clear refusals, and `--native` in lenet-predict and lenet-serve."""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import REPO
from test_predict import json_lines
from test_serve import digits  # noqa: F401 (a fixture)

from lenet import native
from lenet.cache import cache_folder
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


def c_struct_fields(source: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each field of lenet5.c's `Weights`, in order."""
    body = re.sub(r"/\*.*?\*/", "", re.search(r"typedef struct \{(.*?)\} Weights;", source, re.S).group(1), flags=re.S)
    return [(name, tuple(map(int, re.findall(r"\d+", sizes)))) for name, sizes in re.findall(r"(\w+)((?:\[\d+\])+)", body)]


def test_the_c_struct_is_the_layout_derived_from_lenet5():
    """lenet5.c's `Weights` and native.weight_arrays (derived from models.LeNet5) name the same fields
    of the same shapes in the same order, and pack_weights writes exactly that many floats."""
    arrays = native.weight_arrays(LeNet5(), mean=0.0, std=1.0)
    fields = c_struct_fields(native.SOURCE.read_text())
    assert fields == [(name, values.shape) for name, values in arrays.items()]
    assert len(native.pack_weights(LeNet5(), 0.0, 1.0)) == sum(math.prod(shape) for _, shape in fields)
    assert c_struct_fields("typedef struct { float w1[25][6], b1[7]; } Weights;") != fields[:2]  # the check can fail


@needs_compiler
def test_kernel_gives_pytorchs_probabilities_for_one_image_and_any_batch(synthetic_run, synthetic_test):
    loaded = load_model(synthetic_run)
    model = native.load_native(loaded)
    images, labels = synthetic_test[0][:1000], synthetic_test[1][:1000]
    expected = loaded.predict_probs(images)
    for count in (1000, 37, 16, 15, 2):  # whole groups of 16 images, and groups padded with blank lanes
        assert (model.predict_probs(images[:count]) - expected[:count]).abs().max() < 1e-5
    singles = torch.cat([model.predict_probs(images[i : i + 1]) for i in range(200)])  # the one-image kernel
    assert (singles - expected[:200]).abs().max() < 1e-5
    assert model.predict_probs(images.float() / 255).argmax(1).eq(labels).float().mean() > 0.95
    assert model.predict_probs(images[:0]).shape == (0, 10)
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model.predict_probs(torch.zeros(2, 1, 32, 32))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the kernel writes float32, whatever a caller set
    try:
        assert (model.predict_probs(images[:20]) - expected[:20]).abs().max() < 1e-5
    finally:
        torch.set_default_dtype(previous)
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
    """The native build, and on x86-64 the SSE2 (4 floats a vector) and, where the CPU has it, AVX2 (8)
    builds; elsewhere the x86 -march flags are refused and the fallback build is checked instead."""
    loaded = random_lenet(3)
    noise = torch.rand(40, 1, 28, 28)
    expected = loaded.predict_probs(noise)
    x86 = platform.machine() in ("x86_64", "AMD64")
    builds = {"native": None, "x86-64": 4 if x86 else None}
    if x86 and "avx2" in native.cpu_identity().split():
        builds["x86-64-v3"] = 8
    for march, lanes in builds.items():
        model = native.load_native(loaded, threads=2, march=march)
        assert lanes is None or model.library.lenet5_lanes() == lanes, march
        for count in (40, 1, 9):
            assert (model.predict_probs(noise[:count]) - expected[:count]).abs().max() < 1e-5, (march, count)


@needs_compiler
def test_build_is_cached_and_a_damaged_library_is_rebuilt(tmp_path, monkeypatch):
    # A cache of its own, built by another process: a library this process has loaded stays mapped
    # (and glibc hands the loaded copy back for its path), so only a fresh path tests a fresh load.
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path))
    subprocess.run([sys.executable, "-c", "from lenet import native; native.kernel()"], check=True, cwd=REPO)
    [library] = list(cache_folder("native").glob("lenet5-*.so"))
    (tmp_path / "damaged").write_bytes(b"cut short")
    os.replace(tmp_path / "damaged", library)  # replaced, never written in place: the other process may have it mapped
    model = native.load_native(random_lenet(0))
    assert library.stat().st_size > 1000 and list(cache_folder("native").glob("*.so")) == [library]  # built again
    assert model.predict_probs(torch.zeros(3, 1, 28, 28)).sum(1).allclose(torch.ones(3))
    built = library.stat().st_mtime_ns
    subprocess.run([sys.executable, "-c", "from lenet import native; native.kernel()"], check=True, cwd=REPO)
    assert library.stat().st_mtime_ns == built  # loaded, not built again


@needs_compiler
def test_threads_asking_at_once_get_one_build(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path))
    with ThreadPoolExecutor(4) as pool:
        libraries = list(pool.map(lambda _: native.kernel(), range(4)))
    assert all(library._handle == libraries[0]._handle for library in libraries)
    assert [path.suffix for path in cache_folder("native").iterdir()] == [".so"]


def test_clear_refusals(tmp_path, monkeypatch):
    classic = LoadedModel(LeNet5Classic().eval(), 0.1307, 0.3081, Path("classic.ckpt"), {}, {})
    with pytest.raises(native.NativeError, match="runs LeNet-5 with 10 classes only, and this is LeNet5Classic: leave out --native"):
        native.load_native(classic)
    five = LoadedModel(LeNet5(num_classes=5).eval(), 0.1307, 0.3081, Path("five.ckpt"), {}, {})
    with pytest.raises(native.NativeError, match="and this is a LeNet5 with 5 classes: leave out --native"):
        native.load_native(five)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    native.kernel.cache_clear()
    with pytest.raises(native.NativeError, match="needs a C compiler.*cannot run.*install one"):
        native.load_native(random_lenet(0))
    # A compiler that writes its output file and then fails: nothing half-built may stay behind.
    failing = tmp_path / "failing-cc"
    failing.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && echo partial > "$2"; shift; done\nexit 1\n')
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    monkeypatch.setenv("LENET_CACHE_DIR", str(tmp_path / "cache"))
    native.kernel.cache_clear()
    with pytest.raises(native.NativeError, match=r"failing-cc could not build lenet/lenet5.c \(exit status 1\): leave out --native"):
        native.load_native(random_lenet(0))
    assert not list(cache_folder("native").iterdir())
    # A cache folder that cannot be made, and one that other users can write.
    (tmp_path / "a_file").write_text("")
    for folder, problem in ((tmp_path / "a_file", "cannot keep the compiled kernel in"), (tmp_path / "shared", "can be written by other users")):
        (tmp_path / "shared" / "native").mkdir(parents=True, exist_ok=True)
        (tmp_path / "shared" / "native").chmod(0o777)
        monkeypatch.setenv("LENET_CACHE_DIR", str(folder))
        native.kernel.cache_clear()
        with pytest.raises(native.NativeError, match=f"{problem}.*set LENET_CACHE_DIR.*leave out --native"):
            native.kernel()


@needs_compiler
def test_predict_native_gives_the_same_answers(synthetic_run, synthetic_images, tmp_path, capsys):
    from lenet.predict import PARALLEL_FROM, main

    folder, _ = synthetic_images
    many = tmp_path / "many"  # enough images for the parallel path: the kernel on one thread
    many.mkdir()
    for copy in range(-(-PARALLEL_FROM // 10)):
        for image in folder.iterdir():
            (many / f"{copy}_{image.name}").write_bytes(image.read_bytes())
    for images in (folder, many):
        assert main([str(synthetic_run), str(images), "--json"]) == 0
        pytorch = json_lines(capsys.readouterr().out)
        assert main([str(synthetic_run), str(images), "--json", "--native", "--batch-size", "7"]) == 0
        kernel = json_lines(capsys.readouterr().out)
        assert [r["digit"] for r in kernel] == [r["digit"] for r in pytorch] and len(kernel) in (10, 10 * -(-PARALLEL_FROM // 10))
        assert max(abs(a - b) for x, y in zip(kernel, pytorch) for a, b in zip(x["probs"], y["probs"])) < 1e-5
    with pytest.raises(SystemExit):
        main([str(synthetic_run), str(folder), "--native", "--device", "cuda"])
    assert "--native runs on the CPU" in capsys.readouterr().err


@needs_compiler
def test_serve_native_gives_the_same_answers(synthetic_run, digits):  # noqa: F811
    from lenet.serve import create_app

    assert isinstance(load_ensemble([synthetic_run], native=True), native.NativeModel)
    batch = [("files", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(digits)]
    answers = {}
    for kind in ("pytorch", "native"):
        with TestClient(create_app(synthetic_run, native=kind == "native")) as client:
            one = client.post("/predict", files={"file": ("digit.png", digits[0][0], "image/png")}).json()
            answers[kind] = [one, *client.post("/predict/batch", files=batch).json()["predictions"]]
            assert isinstance(client.app.state.model, native.NativeModel) == (kind == "native")
    assert [a["digit"] for a in answers["native"]] == [a["digit"] for a in answers["pytorch"]]
    differences = [abs(p - q) for a, b in zip(answers["native"], answers["pytorch"]) for p, q in zip(a["probs"], b["probs"])]
    assert len(differences) == 110 and max(differences) < 1e-5
