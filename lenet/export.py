"""Export a trained model for deployment: ONNX (for ONNX Runtime) and TorchScript.

`lenet-export RUN_DIR_OR_CKPT --onnx model.onnx --torchscript model.pt`

The exported program takes float images (B, 1, 28, 28) in 0..1, light ink on black (the output of
lenet.preprocess), and returns the 10 class probabilities: normalisation and softmax are inside,
so a deployment cannot get them wrong.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from lenet.inference import LoadedModel, load_model


class ProbabilityModel(nn.Module):
    """network(normalise(images)).softmax(): the whole inference path as one module."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std).softmax(dim=1)


def probability_model(loaded: LoadedModel) -> ProbabilityModel:
    # Plain contiguous weights: exporters and single-image latency do best without channels_last.
    net = copy.deepcopy(loaded.net).to(memory_format=torch.contiguous_format)
    return ProbabilityModel(net, loaded.mean, loaded.std).eval()


def export_onnx(loaded: LoadedModel, path: str | Path) -> Path:
    """ONNX file with a dynamic batch dimension (input `images`, output `probs`)."""
    path = Path(path)
    example = torch.rand(2, 1, 28, 28)
    torch.onnx.export(
        probability_model(loaded),
        (example,),
        str(path),
        input_names=["images"],
        output_names=["probs"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1 << 16)}},
        dynamo=True,
        external_data=False,  # one self-contained file
    )
    return path


def export_torchscript(loaded: LoadedModel, path: str | Path) -> Path:
    path = Path(path)
    with torch.no_grad():
        scripted = torch.jit.trace(probability_model(loaded), torch.rand(2, 1, 28, 28))
    torch.jit.save(torch.jit.freeze(scripted), str(path))
    return path


def onnx_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session (threads=0: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lenet-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run directory (uses checkpoints/best.ckpt) or a .ckpt file")
    parser.add_argument("--onnx", type=Path, help="write an ONNX model here")
    parser.add_argument("--torchscript", type=Path, help="write a TorchScript model here")
    args = parser.parse_args(argv)
    if not args.onnx and not args.torchscript:
        parser.error("name at least one output: --onnx PATH and/or --torchscript PATH")
    try:
        loaded = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"lenet-export: {error}", file=sys.stderr)
        return 2
    if args.onnx:
        print(f"ONNX: {export_onnx(loaded, args.onnx)}")
    if args.torchscript:
        print(f"TorchScript: {export_torchscript(loaded, args.torchscript)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
