"""LeNet-5 without a framework: the project's C kernel (lenet/lenet5.c), compiled once with this
machine's C compiler and run through ctypes.

    model = load_native(load_model("outputs/<run>"))     # a LeNet-5 checkpoint
    probs = model.predict_probs(images)                  # (N, 10), the same answers as PyTorch

`lenet-predict --native` and `lenet-serve --native` use it. Why a kernel of its own: LeNet-5 is so
small that PyTorch and ONNX Runtime spend most of their time on per-operator overheads and on
convolutions with 1 and 6 channels that fill few vector lanes. The kernel keeps every lane busy
(see lenet5.c) and runs three to four times as many images a second as ONNX Runtime on AVX-512
cores, and one image in half its time (README, "Speed"; `benchmarks/inference.py`).

The library is built for this machine (`-march=native`) into ~/.cache/lenet/native (or
$LENET_CACHE_DIR/native), under a name that hashes the source, the compiler and the CPU, so a new
CPU or compiler gets its own build and a damaged file is rebuilt. That folder must be writable by
this user alone (what is loaded from it runs as code), and only lenet5.c is ever compiled: nothing a
checkpoint or an image holds reaches the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from lenet.cache import cache_folder
from lenet.datasets import unit_floats
from lenet.errors import CheckpointError
from lenet.geometry import IMAGE_SIZE
from lenet.models import LeNet5

SOURCE = Path(__file__).with_name("lenet5.c")
REQUIRED_FLAGS = ["-O3", "-ffp-contract=fast", "-shared", "-fPIC"]


def optional_flags(march: str) -> list[list[str]]:
    """The builds to try in turn, so a compiler without OpenMP or without -march=... still builds the kernel."""
    return [[f"-march={march}", "-fopenmp"], [f"-march={march}"], ["-fopenmp"], []]


class NativeError(CheckpointError):
    """The C kernel cannot run this model here: not a 10-class LeNet-5, no working C compiler, or no
    private folder for the build (printed as is by the commands)."""


def cpu_identity() -> str:
    """What -march=native depends on: the CPU's model and features where the OS tells them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def private_folder() -> Path:
    """cache_folder("native"), made if missing, and refused unless only this user can write it: a library
    loaded from it runs as code."""
    folder = cache_folder("native")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as error:
        raise NativeError(
            f"cannot keep the compiled kernel in {folder} ({error.strerror or error}): "
            "set LENET_CACHE_DIR to a folder of yours, or leave out --native."
        ) from None
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        raise NativeError(
            f"{folder} can be written by other users, and the kernel loaded from it runs as code: "
            "set LENET_CACHE_DIR to a folder only you can write, or leave out --native."
        )
    return folder


BUILD_LOCK = threading.Lock()  # one build at a time in a process; between processes, unique names and os.replace


@cache
def kernel(march: str = "native") -> ctypes.CDLL:
    """The compiled kernel, built on first use (about a second) and loaded from the cache after.
    `march`: the instruction set, this CPU's by default (e.g. "x86-64-v3" for AVX2, "x86-64" for SSE2)."""
    compiler = os.environ.get("CC", "cc")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeError(
            f"--native needs a C compiler to build lenet/lenet5.c, and `{compiler}` cannot run ({error}): "
            "install one (e.g. `apt-get install gcc`) or set CC, or leave out --native."
        ) from None
    flags = [REQUIRED_FLAGS, optional_flags(march)]
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), version.encode(), cpu_identity().encode(), repr(flags).encode()]))
    with BUILD_LOCK:
        library = private_folder() / f"lenet5-{key.hexdigest()[:16]}.so"
        if library.is_file():
            try:
                return declare(ctypes.CDLL(str(library)))
            except OSError:
                pass  # damaged or cut short: built again below
        problem = ""
        for optional in optional_flags(march):
            handle, partial = tempfile.mkstemp(dir=library.parent, prefix=f"{library.stem}.", suffix=".partial")
            os.close(handle)
            command = [compiler, *REQUIRED_FLAGS, *optional, str(SOURCE), "-o", partial, "-lm"]
            try:
                built = subprocess.run(command, capture_output=True, text=True, timeout=300)
                if built.returncode == 0:
                    os.replace(partial, library)  # whole, or not at all: another process may be loading it
                    return declare(ctypes.CDLL(str(library)))
                problem = (built.stderr.strip().splitlines() or [f"exit status {built.returncode}"])[-1]
            except (OSError, subprocess.SubprocessError) as error:  # could not run, or built but cannot be loaded
                problem = str(error)
            finally:
                Path(partial).unlink(missing_ok=True)
    raise NativeError(f"{compiler} could not build lenet/lenet5.c ({problem[:200]}): leave out --native.")


def declare(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer = ctypes.c_void_p
    library.lenet5_weights_floats.restype = ctypes.c_long
    library.lenet5_lanes.restype = ctypes.c_int  # floats a vector: 16 (AVX-512), 8 (AVX, AVX2), 4 (SSE2, NEON)
    library.lenet5_batch.argtypes = [pointer, pointer, pointer, ctypes.c_long, ctypes.c_int]
    library.lenet5_batch.restype = ctypes.c_int
    library.lenet5_single.argtypes = [pointer, pointer, pointer]
    library.lenet5_single.restype = None
    return library


VECTOR = 16  # floats in lenet5.c's widest vector (AVX-512): dense outputs are padded to whole ones


def weight_arrays(net: LeNet5, mean: float, std: float, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """LeNet-5's parameters as the fields of lenet5.c's `Weights`, by name, in its order and layout
    (tests/test_native.py checks the struct against these shapes). The input normalisation
    (x - mean) / std is folded into conv1 (exact: the convolution has no padding), the logits' temperature
    (lenet.calibration) into the last layer, and the dense layers' outputs are padded with zeros to whole vectors."""
    conv1, conv2 = (layer for layer in net.features if isinstance(layer, nn.Conv2d))
    dense1, dense2, dense3 = (layer for layer in net.classifier if isinstance(layer, nn.Linear))
    taps = _floats(conv1.weight)[:, 0].reshape(conv1.out_channels, -1) / std  # (6, 25)
    # dense1 reads conv2's pooled maps in (row, column, channel) order, the kernel's, not PyTorch's (channel, row, column).
    side = math.isqrt(dense1.in_features // conv2.out_channels)  # 4
    maps = _floats(dense1.weight).reshape(dense1.out_features, conv2.out_channels, side, side)
    return {
        "w1": taps.T, "b1": _floats(conv1.bias) - taps.sum(axis=1) * mean,  # [tap][out]
        "w2": _floats(conv2.weight).transpose(2, 3, 1, 0).reshape(-1, conv2.in_channels, conv2.out_channels),  # [tap][in][out]
        "b2": _floats(conv2.bias),
        "w3": _padded(maps.transpose(2, 3, 1, 0).reshape(dense1.in_features, -1)), "b3": _padded(_floats(dense1.bias)),
        "w4": _padded(_floats(dense2.weight).T), "b4": _padded(_floats(dense2.bias)),
        "w5": _padded(_floats(dense3.weight).T / temperature), "b5": _padded(_floats(dense3.bias) / temperature),
    }  # fmt: skip


def _floats(parameter: Tensor) -> np.ndarray:
    return parameter.detach().float().cpu().contiguous().numpy()


def _padded(values: np.ndarray) -> np.ndarray:
    """The last axis (a layer's outputs) padded with zeros to whole vectors."""
    width = -(-values.shape[-1] // VECTOR) * VECTOR
    return np.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, width - values.shape[-1])])


def pack_weights(net: LeNet5, mean: float, std: float, temperature: float = 1.0) -> np.ndarray:
    """weight_arrays' fields one after another: the bytes of lenet5.c's `Weights`."""
    parts = weight_arrays(net, mean, std, temperature).values()
    return np.ascontiguousarray(np.concatenate([part.ravel() for part in parts]), dtype=np.float32)


class Loaded(Protocol):
    """What load_native reads of a checkpoint loaded by lenet.inference.load_model (a LoadedModel:
    named by its fields, since lenet.inference imports this module to run checkpoints natively)."""

    net: nn.Module
    mean: float
    std: float
    checkpoint_path: Path
    temperature: float

    @property
    def dataset(self) -> str: ...


@dataclass
class NativeModel:
    """A LeNet-5 checkpoint run by the C kernel: 0..1 float or uint8 images in, probabilities out."""

    weights: Tensor  # pack_weights', as a tensor: data_ptr() costs a tenth of numpy's .ctypes.data
    library: ctypes.CDLL  # kernel()'s
    checkpoint_path: Path
    dataset: str = "mnist"
    threads: int = 0  # for several images; 0: one per core

    def predict_probs(self, images: Tensor, batch_size: int = 0) -> Tensor:
        """uint8 (0..255) or float (0..1) images (N, 1, 28, 28) -> probabilities (N, 10). The whole
        batch goes to the kernel at once (`batch_size` is accepted for the other models' signature)."""
        if images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):  # the kernel reads 784 floats an image, whatever it is given
            raise ValueError(f"images must be (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")
        x = unit_floats(images)
        probs = torch.empty(len(x), 10, dtype=torch.float32, device="cpu")  # whatever the default dtype and device
        if len(x) == 1:
            self.library.lenet5_single(self.weights.data_ptr(), x.data_ptr(), probs.data_ptr())
        elif self.library.lenet5_batch(self.weights.data_ptr(), x.data_ptr(), probs.data_ptr(), len(x), max(1, self.threads or os.cpu_count() or 1)):
            raise MemoryError("lenet5_batch could not allocate its 120 KB of working memory per thread")
        return probs


def load_native(loaded: Loaded, threads: int = 0, march: str = "native") -> NativeModel:
    """The C kernel for a loaded LeNet-5 checkpoint (the network this kernel implements, and only it),
    built for `march` (kernel())."""
    shapes = {name: tuple(value.shape) for name, value in loaded.net.state_dict().items()}
    if type(loaded.net) is not LeNet5 or shapes != {name: tuple(value.shape) for name, value in LeNet5().state_dict().items()}:
        classes = shapes.get("classifier.5.bias", ("?",))[0]
        what = type(loaded.net).__name__ if type(loaded.net) is not LeNet5 else f"a LeNet5 with {classes} classes"
        raise NativeError(f"{loaded.checkpoint_path}: --native runs LeNet-5 with 10 classes only, and this is {what}: leave out --native.")
    library = kernel(march)
    weights = pack_weights(loaded.net, loaded.mean, loaded.std, loaded.temperature)
    if len(weights) != library.lenet5_weights_floats():
        raise NativeError(f"the packed weights ({len(weights)} floats) do not match lenet5.c's layout: rebuild the kernel.")
    return NativeModel(torch.from_numpy(weights), library, loaded.checkpoint_path, loaded.dataset, threads)
