"""The inference core: load trained networks from checkpoints and predict probabilities, without Lightning.

Checkpoints are data, never code. They are read with `torch.load(weights_only=True)` (tensors and
plain values only) and only the network is rebuilt, from the checkpoint's `net` hyperparameters
through the project's allow-list (`lenet.registry`); its weights are then loaded strictly. Nothing
here imports Lightning, torchmetrics or Hydra, so `lenet-predict`, `lenet-serve` and `lenet-export`
start fast.

    model = load_model("outputs/<run>")                  # or a .ckpt file
    probs = model.predict_probs(images)                  # (N, 10) for (N, 1, 28, 28) images
    ensemble = load_ensemble(["run_a", "run_b"])         # averages its members' probabilities
    exported = load_ensemble(["model.onnx"])             # a `lenet-export` file, run by ONNX Runtime

Which runtime: a checkpoint runs in PyTorch (or, asked with `native`, a LeNet-5 checkpoint in the
project's C kernel, lenet.native), an exported .onnx file in ONNX Runtime. Exporting takes
seconds and preparing images dominates even a directory's prediction (benchmarks/results/
predict_speed.txt), so a checkpoint is never exported on the fly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lenet.calibration import checked_temperature
from lenet.datasets import dataset_stats, normalize, unit_floats
from lenet.errors import CheckpointError
from lenet.registry import NotAllowedError, build, check_spec

# Below this top probability a prediction is "unsure" and the runner-up is shown with it.
UNSURE_BELOW = 0.5
# The model lenet-predict and lenet-serve read when given none: LeNet-5 trained on MNIST and UNIPEN
# (experiment=served), shipped in the package as safetensors weights and a JSON card (lenet/served.py).
SERVED_WEIGHTS = Path(__file__).parent / "served" / "lenet5.safetensors"


LOAD_ERRORS = (CheckpointError, ValueError, TypeError, RuntimeError)  # what loading a model may raise


def load_problem(error: Exception, names: Sequence[str | Path]) -> str:
    """The one line a command prints for a model it cannot load (never a traceback)."""
    if isinstance(error, CheckpointError):
        return str(error)
    # A failure the checks before building did not foresee.
    return f"{', '.join(map(str, names))} cannot be used ({error}): use a checkpoint written by `python train.py`."


@dataclass
class LoadedModel:
    """A network in eval mode plus what is needed to feed it."""

    net: nn.Module
    mean: float
    std: float
    checkpoint_path: Path
    model_hparams: dict[str, Any]
    data_hparams: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch training metrics, if stored
    temperature: float = 1.0  # the logits are divided by it before the softmax (lenet.calibration; a shipped card's)

    @property
    def dataset(self) -> str:
        return self.data_hparams.get("dataset", "mnist")

    @torch.inference_mode()  # no autograd bookkeeping at all: one image in 170 µs, 230 under no_grad
    def logits(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """uint8 (0..255) or float (0..1) images (N, 1, 28, 28) -> the network's logits (N, 10), on the CPU."""
        device = next(self.net.parameters()).device
        chunks = [self.net(normalize(images[i : i + batch_size].to(device), self.mean, self.std)) for i in range(0, len(images), batch_size)]
        return torch.cat(chunks).cpu() if chunks else torch.empty(0, 10)

    @torch.inference_mode()
    def predict_probs(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """uint8 (0..255) or float (0..1) images (N, 1, 28, 28) -> probabilities (N, 10): softmax(logits / temperature)."""
        return self.logits(images, batch_size).div(self.temperature).softmax(dim=1)


@dataclass
class OnnxModel:
    """A model exported by `lenet-export`, run by ONNX Runtime: 0..1 float images in, probabilities out
    (normalisation and softmax are inside the file)."""

    session: Any  # onnxruntime.InferenceSession
    checkpoint_path: Path
    dataset: str = "mnist"

    def predict_probs(self, images: Tensor, batch_size: int = 4096) -> Tensor:
        """uint8 (0..255) or float (0..1) images (N, 1, 28, 28) -> probabilities (N, 10)."""
        x = unit_floats(images).numpy()
        chunks = [self.session.run(None, {"images": x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return torch.from_numpy(np.concatenate(chunks)) if chunks else torch.empty(0, 10)


@dataclass
class Ensemble:
    """Several loaded models answering as one: the mean of their probabilities."""

    members: list[LoadedModel | OnnxModel]

    @property
    def dataset(self) -> str:
        return self.members[0].dataset

    @property
    def checkpoint_path(self) -> str:
        """The members' files, each once, with its count when it holds several (a shipped ensemble): `x.safetensors (5 networks)`."""
        counts = Counter(str(member.checkpoint_path) for member in self.members)
        return ", ".join(path if count == 1 else f"{path} ({count} networks)" for path, count in counts.items())

    def predict_probs(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        return torch.stack([member.predict_probs(images, batch_size) for member in self.members]).mean(dim=0)


Model = LoadedModel | OnnxModel | Ensemble


@dataclass
class Prediction:
    """The answer for one image: the digit, its probability, the runner-up, and whether to trust it."""

    digit: int
    confidence: float
    probs: list[float]
    runner_up: int
    runner_up_confidence: float
    unsure: bool  # confidence below the threshold: show the runner-up, do not state the digit as fact

    @classmethod
    def from_probs(cls, probs: Tensor, unsure_below: float = UNSURE_BELOW) -> Prediction:
        top = probs.topk(2)
        confidence = float(top.values[0])
        return cls(
            digit=int(top.indices[0]),
            confidence=confidence,
            probs=[round(float(p), 6) for p in probs],
            runner_up=int(top.indices[1]),
            runner_up_confidence=float(top.values[1]),
            unsure=confidence < unsure_below,
        )

    def top_k(self, k: int) -> list[tuple[int, float]]:
        ranked = sorted(range(len(self.probs)), key=lambda d: -self.probs[d])
        return [(d, self.probs[d]) for d in ranked[:k]]


def predict_tensors(model: Model, images: Sequence[Tensor], unsure_below: float = UNSURE_BELOW) -> list[Prediction]:
    """Prepared (1, 28, 28) images -> one Prediction each, in one batch."""
    if not images:
        return []
    probs = model.predict_probs(torch.stack(list(images)))  # (N, 10)
    return [Prediction.from_probs(row, unsure_below) for row in probs]


# ----------------------------------------------------------------------------- reading checkpoints


def resolve_checkpoint(path: str | Path) -> Path:
    """A local .ckpt file, or a run directory (its checkpoints/best.ckpt)."""
    if "://" in str(path):
        raise CheckpointError(
            f"{path} is a remote address: checkpoints are only read from local files. Download it, check "
            "where it comes from, and pass the local path."
        )
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.ckpt", path / "best.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path} is a directory without checkpoints/best.ckpt: pass a run directory made by "
            "`python train.py` or the path of a .ckpt file."
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a .ckpt file or a run directory.")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded without executing pickled code, its hyperparameters checked
    against the allow-list (network, optimiser, scheduler, augmentation); clear errors for bad files."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, a pickle with code in it, not a torch file at all
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {reason[:200]}). It may be truncated, "
            "or not made by this project: use another checkpoint, e.g. last.ckpt."
        ) from error
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} has no state_dict: not a checkpoint written by `python train.py`.")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "net" not in hparams:
        raise CheckpointError(
            f"{path} has no `net` hyperparameters: not a checkpoint of lenet.module.Classifier (made by `python train.py`)."
        )
    try:
        _check_hparams(hparams, checkpoint.get("datamodule_hyper_parameters") or {})
    except NotAllowedError as error:
        raise CheckpointError(f"{path}: {error}") from error
    except ValueError as error:  # an unknown dataset: nothing the user can choose for a checkpoint
        raise CheckpointError(f"{path} was trained on data this project does not know ({error}): not a lenet checkpoint.") from error
    return checkpoint


def _check_hparams(model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    check_spec(model["net"], "network", "hyper_parameters.net")
    for key, family in (("optimizer", "optimizer"), ("scheduler", "scheduler")):
        if model.get(key):
            check_spec(model[key], family, f"hyper_parameters.{key}")
    if not isinstance(data, Mapping):
        raise NotAllowedError("datamodule_hyper_parameters must be a mapping of plain values.")
    if data.get("augment"):
        check_spec(data["augment"], "augmentation", "datamodule_hyper_parameters.augment")
    dataset = data.get("dataset", "mnist")
    if not isinstance(dataset, str):
        raise NotAllowedError(f"datamodule_hyper_parameters.dataset must be a dataset name, got {dataset!r}.")
    dataset_stats(dataset)  # ValueError with the known names


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the trained network of a checkpoint (or run directory) for inference."""
    checkpoint_path = resolve_checkpoint(path)
    checkpoint = read_checkpoint(checkpoint_path)
    hparams = dict(checkpoint["hyper_parameters"])
    data_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    # The LightningModule keeps the network under `net.`; the rest (metrics' state) is not needed here.
    weights = {key[len("net.") :]: value for key, value in checkpoint["state_dict"].items() if key.startswith("net.")}
    mean, std = dataset_stats(data_hparams.get("dataset", "mnist"))
    net = _build_network(hparams["net"], weights, checkpoint_path)
    history = checkpoint.get("callbacks", {}).get("History", {}).get("epochs", [])
    net = net.to(device, memory_format=torch.channels_last).eval()
    return LoadedModel(net, mean, std, checkpoint_path, hparams, data_hparams, list(history))


def _build_network(spec: Mapping[str, Any], weights: Mapping[str, Any], path: Path) -> nn.Module:
    """The network `spec` names, with `weights` loaded strictly. It is first built on the meta device
    (no memory), so arguments that do not match the stored weights (a crafted `num_classes: 10**8`
    would allocate gigabytes) are refused before anything real is allocated."""
    mismatch = "its weights do not fit the network it names"
    try:
        with torch.device("meta"):
            shell = build(spec, "network", "hyper_parameters.net")
        expected = {key: tuple(value.shape) for key, value in shell.state_dict().items()}
        stored = {key: tuple(getattr(value, "shape", ())) for key, value in weights.items()}
        if expected != stored:
            differ = sorted(set(expected.items()) ^ set(stored.items()))[:2]
            raise CheckpointError(
                f"{path}: {mismatch} ({spec.get('_target_')}; first differences: {differ}). "
                "The file is damaged or was edited: use another checkpoint."
            )
        net = build(spec, "network", "hyper_parameters.net")
        net.load_state_dict(weights, strict=True)
    except CheckpointError:
        raise
    except (ValueError, TypeError, RuntimeError) as error:  # arguments the network refuses, weights of another shape
        raise CheckpointError(
            f"{path}: {mismatch} ({spec.get('_target_')}: {str(error).strip().splitlines()[0][:200]}). "
            "The file is damaged or was edited: use another checkpoint."
        ) from error
    return net


def load_weights(path: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel | Ensemble:
    """A network (or an ensemble of `members` networks, weights named `<i>.<name>`) shipped as safetensors
    weights with a JSON card beside it (`<name>.json`), such as the served model inside the package
    (SERVED_WEIGHTS). The card names the network (built through the allow-list), the dataset whose
    normalisation it expects and the temperature its probabilities are calibrated with (lenet.calibration);
    the weights file holds tensors only."""
    path = Path(SERVED_WEIGHTS if path is None else path)
    card_path = path.with_suffix(".json")
    retrain = "train one with `python train.py experiment=served` and ship it (docs/real-handwriting.md), or pass a checkpoint"
    if not path.is_file():
        raise CheckpointError(f"weights {path} do not exist: {retrain}.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} needs its card {card_path.name} beside it, and it is missing or not JSON ({error}): {retrain}.") from error
    if not isinstance(card, Mapping) or not isinstance(card.get("network"), Mapping) or not isinstance(card.get("dataset", "mnist"), str):
        raise CheckpointError(f"{card_path} does not name a network and a dataset: not a card written by lenet.served; {retrain}.")
    try:
        check_spec(card["network"], "network", "network")
        mean, std = dataset_stats(card.get("dataset", "mnist"))
        calibration = card.get("calibration") or {}
        temperature = checked_temperature(calibration.get("temperature", 1.0) if isinstance(calibration, Mapping) else calibration,
                                          "calibration.temperature")  # fmt: skip
    except (NotAllowedError, ValueError) as error:
        raise CheckpointError(f"{card_path}: {error}") from error
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}): it may be truncated; {retrain}.") from error
    members = card.get("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 64:
        raise CheckpointError(f"{card_path}: members={members!r} must be a whole number from 1 to 64: the card is damaged.")
    groups = [weights] if members == 1 else [
        {key.split(".", 1)[1]: value for key, value in weights.items() if key.split(".", 1)[0] == str(i)} for i in range(members)
    ]  # fmt: skip
    loaded = [
        LoadedModel(_build_network(card["network"], group, path).to(device, memory_format=torch.channels_last).eval(), mean, std, path,
                    {"net": dict(card["network"])}, {"dataset": card.get("dataset", "mnist")}, temperature=temperature)
        for group in groups
    ]  # fmt: skip
    return loaded[0] if members == 1 else Ensemble(loaded)


def onnx_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session (threads=0: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_onnx(path: str | Path, threads: int = 0) -> OnnxModel:
    """An ONNX file written by `lenet-export` (a model file: ONNX Runtime runs its operators, no code)."""
    path = Path(path)
    export_one = "export one with `lenet-export RUN_DIR --onnx model.onnx`, or pass the checkpoint instead"
    if not path.is_file():
        raise CheckpointError(f"ONNX model {path} does not exist: {export_one}.")
    try:
        session = onnx_session(path, threads)
    except ImportError as error:
        raise CheckpointError(f"{path} needs ONNX Runtime ({error}): pip install \"lenet[export]\", or pass the checkpoint instead.") from error
    except Exception as error:  # onnxruntime raises its own exception types for files it cannot use
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not an ONNX model ONNX Runtime can load ({reason}): {export_one}.") from error
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["images"] or list(inputs[0].shape[1:]) != [1, 28, 28] or outputs[0].shape[-1:] != [10]:
        shapes = ", ".join(f"{i.name} {i.shape}" for i in inputs)
        raise CheckpointError(
            f"{path} is not a lenet export: it takes {shapes}, not images (batch, 1, 28, 28) giving 10 probabilities; {export_one}."
        )
    dataset = session.get_modelmeta().custom_metadata_map.get("dataset", "mnist")
    return OnnxModel(session, path, dataset)


def load_ensemble(
    paths: Sequence[str | Path], device: str | torch.device = "cpu", cpu_threads: int = 0, native: bool = False
) -> Model:
    """One checkpoint (or exported .onnx file, or .safetensors weights with their card): its model;
    several: an Ensemble averaging them (all trained on one dataset; an ensemble's file adds each of
    its members). A path ending in .onnx is run by ONNX Runtime on the CPU; with `native`, a LeNet-5
    checkpoint is run by the project's C kernel (lenet.native); both on `cpu_threads` threads (0: one per core)."""
    if not paths:
        raise CheckpointError("no checkpoint given: pass at least one run directory or .ckpt file.")

    def load(path: str | Path):
        if str(path).lower().endswith(".onnx"):
            return load_onnx(path, cpu_threads)
        read = load_weights if str(path).lower().endswith(".safetensors") else load_model
        if not native:
            return read(path, device)
        from lenet.native import load_native  # builds the C kernel on first use

        return load_native(read(path, "cpu"), cpu_threads)

    loaded = [load(path) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    # A shipped ensemble among the paths adds its members, so that every network weighs the same.
    members = [member for model in loaded for member in (model.members if isinstance(model, Ensemble) else [model])]
    datasets = sorted({member.dataset for member in members})
    if len(datasets) != 1:
        raise CheckpointError(f"the checkpoints were trained on different datasets {datasets}: ensemble like with like.")
    return Ensemble(members)
