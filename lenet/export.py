"""Export a trained model for deployment as ONNX, for ONNX Runtime: `lenet-export RUN_DIR_OR_CKPT --onnx model.onnx`.

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

from lenet.extras import require_extra
from lenet.inference import LOAD_ERRORS, LoadedModel, load_model, load_problem


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
    import onnx  # the export extra, like the onnxscript that torch.onnx.export uses

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
        verbose=False,  # no "[torch.onnx] ..." progress lines in the caller's output
    )
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"dataset": loaded.dataset})  # read back by lenet.inference.load_onnx
    onnx.save(model, str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    require_extra("export", "lenet-export")
    parser = argparse.ArgumentParser(prog="lenet-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run directory (uses checkpoints/best.ckpt) or a .ckpt file")
    parser.add_argument("--onnx", type=Path, required=True, help="write the ONNX model here")
    args = parser.parse_args(argv)
    if not args.onnx.parent.is_dir():
        parser.error(f"--onnx {args.onnx}: the folder {args.onnx.parent} does not exist; create it or choose another path")
    try:
        loaded = load_model(args.checkpoint)
    except LOAD_ERRORS as error:
        print(f"lenet-export: {load_problem(error, [args.checkpoint])}", file=sys.stderr)
        return 2
    print(f"ONNX: {export_onnx(loaded, args.onnx)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
