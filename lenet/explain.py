"""Pictures of what a trained network does: filters, feature maps, saliency, embeddings, confusions.

`lenet-explain RUN_DIR_OR_CKPT [IMAGE] --out DIR` writes them as PNG files (and to TensorBoard).
Each picture is a compute function here returning tensors and a figure function in lenet.plots,
so notebooks and tests use the same code:

    loaded = load_model("outputs/.../run")
    x = normalize(image, loaded.mean, loaded.std)       # (1, 1, 28, 28) network input
    saliency_figure(image, saliency(loaded.net, x))

Layers are found by what they do, with forward hooks on `named_modules()`, so any network in
lenet.models works, not just LeNet5's layout. Networks are expected in eval mode (as `load_model` returns them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lenet.datafiles import DataError, files_present
from lenet.datasets import normalize
from lenet.evaluation import default_data_dir, evaluate, test_split
from lenet.inference import LoadedModel, load_model, read_checkpoint
from lenet.metrics import confusion_matrix
from lenet.plots import (
    Saliency, confused_pairs_figure, embedding_figure, feature_maps_figure, filters_figure, saliency_figure, save,
)

FIGURE_NAMES = ("filters", "feature_maps", "saliency", "embedding", "confused_pairs")
EMBEDDING_METHODS = {"tsne": "t-SNE", "pca": "PCA"}  # --method value: name in titles


# ----------------------------------------------------------------------------- finding layers


def first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(net).__name__} has no nn.Conv2d layer: filters and Grad-CAM need a convolutional network.")


def last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier's output layer: its input is the penultimate representation."""
    linears = [(name, module) for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer, so it has no penultimate layer to embed.")
    return linears[-1]


@dataclass
class LayerCall:
    """One call of a conv/pool layer during a forward pass."""

    name: str
    module: nn.Module
    output: Tensor  # (N, C, H, W)

    @property
    def is_convolution(self) -> bool:
        """Convolutions and other layers with their own weights (LeNet5Classic's trainable subsampling)."""
        return isinstance(self.module, nn.Conv2d) or any(True for _ in self.module.parameters(recurse=False))


def _is_image_layer(module: nn.Module, args: tuple, output) -> bool:
    """Conv/pool layers, recognised by behaviour so custom layers count too: convolutions, and any
    layer turning images into images of another shape (pooling, subsampling, partial convolutions).
    Activations, normalisation and dropout keep the shape and are left out."""
    if not isinstance(output, Tensor) or output.dim() != 4:
        return False
    same_shape = bool(args) and isinstance(args[0], Tensor) and args[0].shape == output.shape
    return isinstance(module, nn.Conv2d) or not same_shape


def image_layer_calls(net: nn.Module, x: Tensor) -> tuple[Tensor, list[LayerCall]]:
    """Run network input x through net: (logits, every conv/pool layer call in execution order)."""
    leaves = [(name, module) for name, module in net.named_modules() if next(module.children(), None) is None]
    calls: list[LayerCall] = []

    def record(module, args, output, name):
        if _is_image_layer(module, args, output):
            calls.append(LayerCall(name, module, output))

    hooks = [m.register_forward_hook(lambda m, args, out, name=n: record(m, args, out, name)) for n, m in leaves]
    try:
        logits = net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, calls


def _unit_range(values: Tensor) -> Tensor:
    """Scale non-negative values to [0, 1] by their maximum; all zeros stay zeros (no 0/0)."""
    values = torch.nan_to_num(values.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    peak = values.max()
    return values / peak if peak > 0 else torch.zeros_like(values)


# ----------------------------------------------------------------------------- computing


def first_layer_filters(net: nn.Module) -> Tensor:
    """Weights of the first convolution, (out_channels, in_channels, k, k), detached on the CPU."""
    return first_conv(net)[1].weight.detach().float().cpu().clone()


@torch.no_grad()
def feature_maps(net: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Output (N, C, H, W) of every conv/pool layer for network input x, in execution order.

    A layer called twice (one pooling module reused after each convolution) appears twice:
    `pool`, then `pool (call 2)`.
    """
    maps: dict[str, Tensor] = {}
    for call in image_layer_calls(net, x)[1]:
        repeats = sum(1 for key in maps if key == call.name or key.startswith(f"{call.name} (call "))
        maps[call.name if not repeats else f"{call.name} (call {repeats + 1})"] = call.output.float().cpu()
    return maps


def saliency(net: nn.Module, x: Tensor, target: int | None = None) -> Saliency:
    """Input gradients and Grad-CAM for one network input x (1, C, H, W) and a class (default: predicted).

    Grad-CAM uses the last convolution (by execution) whose output is larger than 1×1: a 1×1 map
    has nowhere to point.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"saliency explains one image: expected input shape (1, C, H, W), got {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits, calls = image_layer_calls(net, x)  # (1, num_classes)
    spatial = [call for call in calls if call.output.shape[-2:].numel() > 1]
    convolutions = [call for call in spatial if call.is_convolution] or spatial
    if not convolutions:
        raise ValueError(f"{type(net).__name__} has no conv/pool layer with a spatial output: Grad-CAM needs one.")
    layer = convolutions[-1]  # e.g. LeNet5's second convolution, (1, 16, 8, 8)
    probs = logits.detach().softmax(dim=1)[0]
    target = int(probs.argmax()) if target is None else int(target)
    # autograd.grad (not backward) leaves the network's parameter .grad untouched.
    grad_x, grad_activation = torch.autograd.grad(logits[0, target], [x, layer.output])
    gradients = grad_x[0].abs().amax(dim=0)  # (H, W)
    channel_weights = grad_activation.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    cam = F.relu((channel_weights * layer.output).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]  # (H, W)
    return Saliency(_unit_range(gradients), _unit_range(cam), target, float(probs[target]), layer.name)


@torch.no_grad()
def penultimate_features(net: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """The input of the last Linear layer for every image of network input x: (N, features)."""
    chunks: list[Tensor] = []
    hook = last_linear(net)[1].register_forward_pre_hook(lambda module, args: chunks.append(args[0].flatten(1).float().cpu()))
    try:
        for start in range(0, len(x), batch_size):
            net(x[start : start + batch_size])
    finally:
        hook.remove()
    return torch.cat(chunks)


def embed_2d(features: Tensor, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) points with scikit-learn's t-SNE or PCA."""
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"unknown embedding method {method!r}; choose one of {list(EMBEDDING_METHODS)}")
    data = features.double().numpy()
    if len(data) < 3:
        raise ValueError(f"an embedding needs at least 3 samples, got {len(data)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(data)
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (len(data) - 1) / 3)  # t-SNE needs perplexity < samples
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # One OpenMP thread: t-SNE's 1,000 iterations each wait for every thread, so on a busy machine
    # (2 cores, load 8) 1,000 points took 72 s with 2 threads and 18 s with 1; the result is identical.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(data)


def most_confused_pairs(probs: Tensor, targets: Tensor, top: int = 6) -> list[tuple[int, int, int]]:
    """(true class, predicted class, count) of the most frequent errors, most frequent first."""
    errors = confusion_matrix(probs, targets, num_classes=probs.shape[1])
    errors.fill_diagonal_(0)
    counts, flat_index = errors.flatten().sort(descending=True, stable=True)
    num_classes = errors.shape[0]
    return [(int(i) // num_classes, int(i) % num_classes, int(n)) for n, i in zip(counts[:top], flat_index[:top]) if n > 0]


# ----------------------------------------------------------------------------- the whole set


def _data_dir(loaded: LoadedModel, data_dir: str | Path | None) -> Path:
    """--data-dir, else $LENET_DATA_DIR, else ./data (lenet.evaluation.default_data_dir)."""
    path = Path(data_dir or default_data_dir())
    dataset = loaded.data_hparams.get("dataset", "mnist")
    if not files_present(path, dataset):
        raise FileNotFoundError(
            f"{dataset} test files are not in {path.resolve()}: pass --data-dir (or set LENET_DATA_DIR) "
            "to a folder holding <Dataset>/raw/*-ubyte[.gz], e.g. the one used for training."
        )
    return path


def explain(
    checkpoint: str | Path,
    out_dir: str | Path,
    image: str | Path | None = None,
    index: int = 0,
    data_dir: str | Path | None = None,
    samples: int = 1000,
    method: str = "tsne",
    tensorboard: str | Path | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Path]:
    """Write every figure of FIGURE_NAMES as out_dir/<name>.png (and to a TensorBoard folder).

    The digit explained is test image `index`, or the user's `image` file through the shared
    preprocessing. Returns {figure name: PNG path}.
    """
    loaded = load_model(checkpoint, device)
    net = loaded.net
    test_images, test_labels = test_split(loaded.dataset, _data_dir(loaded, data_dir))
    digit, caption = _digit_to_explain(test_images, test_labels, image, index)  # (1, 28, 28) float in [0, 1]
    x = normalize(digit.unsqueeze(0).to(device), loaded.mean, loaded.std)  # (1, 1, 28, 28)

    probs = evaluate(loaded, test_images, test_labels).probs  # (10000, 10)
    pairs = most_confused_pairs(probs, test_labels)
    subset = slice(0, min(samples, len(test_labels)))
    features = penultimate_features(net, normalize(test_images[subset].to(device), loaded.mean, loaded.std))
    points = embed_2d(features, method, seed)
    explained = saliency(net, x)

    figures = {
        "filters": filters_figure(first_layer_filters(net)),
        "feature_maps": feature_maps_figure(digit, feature_maps(net, x)),
        "saliency": saliency_figure(digit, explained, caption),
        "embedding": embedding_figure(points, test_labels[subset], f"Penultimate layer, {EMBEDDING_METHODS[method]}"),
        "confused_pairs": confused_pairs_figure(test_images, test_labels, probs, pairs),
    }
    # The checkpoint's training step, the x-axis of the run's own curves and report figures.
    step = int(read_checkpoint(loaded.checkpoint_path).get("global_step", 0))
    paths = write_figures(figures, out_dir, tensorboard, step, features, test_images[subset], test_labels[subset])

    print(f"{caption}: predicted {explained.target} (probability {explained.probability:.3f})")
    confusions = ", ".join(f"{t}→{p}: {n}" for t, p, n in pairs) or "none"
    print(f"most confused (true→predicted: count): {confusions}")
    print(f"wrote {len(paths)} figures to {out_dir}" + (f" and to TensorBoard in {tensorboard}" if tensorboard is not None else ""))
    return paths


def _digit_to_explain(test_images: Tensor, test_labels: Tensor, image: str | Path | None, index: int) -> tuple[Tensor, str]:
    """(the digit, (1, 28, 28) float in [0, 1], and its caption): the user's image file, else test image `index`."""
    if image is not None:
        from lenet.preprocess import prepare_image  # the one preprocessing path of CLI, API and page

        return prepare_image(image), f"your image {Path(image).name}"
    if not 0 <= index < len(test_labels):
        raise ValueError(f"--index {index} is outside the test set: choose 0..{len(test_labels) - 1}")
    return test_images[index].float() / 255, f"test image #{index} (label {int(test_labels[index])})"


def write_figures(
    figures: dict[str, Any], out_dir: str | Path, tensorboard: str | Path | None, step: int,
    features: Tensor, images: Tensor, labels: Tensor,
) -> dict[str, Path]:
    """Each figure as out_dir/<name>.png and, given a TensorBoard folder, as explain/<name> there, with
    the penultimate `features` of uint8 `images` in the projector tab. Returns {name: PNG path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = None
    if tensorboard is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard))
    paths = {name: save(fig, out_dir / f"{name}.png", writer, f"explain/{name}", step) for name, fig in figures.items()}
    if writer is not None:
        # The projector tab: an interactive 3-D PCA/t-SNE of the same features, with the digits as sprites.
        writer.add_embedding(features, metadata=labels.tolist(), label_img=images.float() / 255, global_step=step, tag="explain/penultimate")
        writer.close()
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lenet-explain",
        description="Visualise a trained network: first-layer filters, feature maps, saliency, "
        "a 2-D embedding of the penultimate layer and the most confused classes.",
    )
    parser.add_argument("checkpoint", help="a run directory (uses checkpoints/best.ckpt) or a .ckpt file")
    parser.add_argument("image", nargs="?", help="a digit image to explain (PNG/JPEG...); default: MNIST test image --index")
    parser.add_argument("--out", help="output folder for the PNGs (default: <run dir>/explain, or ./explain for a .ckpt)")
    parser.add_argument("--index", type=int, default=0, help="MNIST test image to explain when no IMAGE is given (default: 0)")
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $LENET_DATA_DIR, else ./data)")
    parser.add_argument("--samples", type=int, default=1000, help="test images in the embedding (default: 1000)")
    parser.add_argument("--method", choices=EMBEDDING_METHODS, default="tsne", help="embedding method (default: tsne)")
    parser.add_argument("--tensorboard", help="also log the figures to this TensorBoard folder (default: <run dir>/tensorboard)")
    parser.add_argument("--no-tensorboard", action="store_true", help="write PNG files only")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)

    run_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else None
    out_dir = args.out or (run_dir / "explain" if run_dir else Path("explain"))
    tensorboard = args.tensorboard or (run_dir / "tensorboard" if run_dir else None)
    try:
        explain(
            args.checkpoint, out_dir, args.image, args.index, args.data_dir, args.samples, args.method,
            None if args.no_tensorboard else tensorboard, args.device,
        )
    except (FileNotFoundError, ValueError, DataError) as error:  # ValueError includes lenet.preprocess.ImageError
        print(f"lenet-explain: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
