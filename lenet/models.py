"""The networks, as plain `torch.nn.Module`s with no Lightning in them.

`LeNet5` is the user's network; a Hydra config picks one by `_target_` (see conf/model/).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LeNet5(nn.Module):
    """LeNet-5 as the user specified it: 44,426 parameters.

    >>> sum(p.numel() for p in LeNet5().parameters())
    44426
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),  # (B, 6, 24, 24)
            nn.ReLU(),
            nn.AvgPool2d(2),  # (B, 6, 12, 12)
            nn.Conv2d(6, 16, kernel_size=5),  # (B, 16, 8, 8)
            nn.ReLU(),
            nn.AvgPool2d(2),  # (B, 16, 4, 4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 256)
            nn.Linear(16 * 4 * 4, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),  # (B, 10) logits: no activation, the loss applies softmax
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_output_shapes(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> list[tuple[str, tuple[int, ...]]]:
    """(layer name, output shape) for every leaf layer, by running one dummy batch."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: shapes.append((name, tuple(o.shape))))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes
