"""The networks, as plain `torch.nn.Module`s with no Lightning in them.

`LeNet5` is the user's network; a Hydra config picks one by `_target_` (see conf/model/).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lenet.geometry import IMAGE_SIZE


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


def layer_output_shapes(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, IMAGE_SIZE, IMAGE_SIZE)) -> list[tuple[str, tuple[int, ...]]]:
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


# ----------------------------------------------------------------------------- LeNet-5 as published


def scaled_tanh(x: Tensor) -> Tensor:
    """LeCun et al. 1998's squashing function f(a) = 1.7159 tanh(2a/3): f(±1) = ±1."""
    return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class TrainableSubsampling(nn.Module):
    """S2/S4 of LeNet-5: 2x2 average per map, times a trainable coefficient, plus a trainable bias
    (2 parameters per map), then the squashing function."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.coefficient = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.avg_pool2d(x, 2)  # (B, C, H/2, W/2)
        return scaled_tanh(pooled * self.coefficient.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1))


# Table I of LeCun et al. 1998: the S2 maps (0..5) each C3 map (0..15) reads. Breaking symmetry
# this way makes the maps learn different features and keeps C3 at 1,516 parameters, not 2,416.
C3_CONNECTIONS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class PartiallyConnectedConv(nn.Module):
    """C3: a 5x5 convolution where output map j sees only the input maps in `connections[j]`.

    Only the connected kernels are parameters (60 of them, 1,500 weights + 16 biases); they are
    scattered into a dense weight for one ordinary convolution per call.
    """

    def __init__(self, connections: tuple[tuple[int, ...], ...] = C3_CONNECTIONS, in_channels: int = 6, kernel_size: int = 5) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(connections), kernel_size
        pairs = [(out, inp) for out, inputs in enumerate(connections) for inp in inputs]
        self.register_buffer("out_index", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("in_index", torch.tensor([i for _, i in pairs]), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size, kernel_size))  # (60, 5, 5)
        self.bias = nn.Parameter(torch.empty(self.out_channels))
        fan_in = torch.tensor([len(inputs) for inputs in connections], dtype=torch.float32) * kernel_size**2  # per output map
        _lecun_uniform(self.weight, fan_in[self.out_index].view(-1, 1, 1))
        _lecun_uniform(self.bias, fan_in)

    def connection_mask(self) -> Tensor:
        """(out, in) booleans: True where an output map reads an input map."""
        mask = torch.zeros(self.out_channels, self.in_channels, dtype=torch.bool)
        mask[self.out_index.cpu(), self.in_index.cpu()] = True
        return mask

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        dense = dense.index_put((self.out_index, self.in_index), self.weight)  # (16, 6, 5, 5)
        return F.conv2d(x, dense, self.bias)


def _lecun_uniform(tensor: Tensor, fan_in: Tensor | float) -> None:
    """Uniform with std 1/sqrt(fan-in) (LeCun et al. 1998b, "Efficient BackProp", for scaled tanh).

    The paper's ±2.4/fan-in is too small for plain SGD: it relied on a second-order method, and
    with SGD the signal vanishes by C5 and the net does not learn in a few epochs.
    """
    with torch.no_grad():
        tensor.uniform_(-1, 1).mul_(torch.sqrt(3 / torch.as_tensor(fan_in, dtype=torch.float32)))


class LeNet5Classic(nn.Module):
    """LeNet-5 as published by LeCun, Bottou, Bengio & Haffner (1998), for historical comparison.

    32x32 input (the 28x28 digit padded by 2 inside the network), scaled tanh, trainable
    subsampling, the C3 connection table, C5 of 120 maps, F6 of 84 units. One change: the paper's
    output layer of 10 Euclidean RBF units with fixed 7x12 bitmap codes is replaced by a linear
    layer trained with cross-entropy (as every modern reimplementation does). 60,850 parameters.

    >>> sum(p.numel() for p in LeNet5Classic().parameters())
    60850
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, kernel_size=5)  # (B, 6, 28, 28) from the padded (B, 1, 32, 32)
        self.s2 = TrainableSubsampling(6)  # (B, 6, 14, 14)
        self.c3 = PartiallyConnectedConv(C3_CONNECTIONS, in_channels=6)  # (B, 16, 10, 10)
        self.s4 = TrainableSubsampling(16)  # (B, 16, 5, 5)
        self.c5 = nn.Conv2d(16, 120, kernel_size=5)  # (B, 120, 1, 1): full connection to S4
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)  # (B, 10) logits; the paper had RBF units here
        for layer in (self.c1, self.c5, self.f6, self.output):
            fan_in = layer.weight[0].numel()
            _lecun_uniform(layer.weight, fan_in)
            _lecun_uniform(layer.bias, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        # Padding with the background value (the input minimum) rather than 0: with normalised input,
        # 0 is mid-grey. The paper likewise centred the 28x28 digit in a blank 32x32 field.
        background = x.amin(dim=(1, 2, 3), keepdim=True)
        x = F.pad(x - background, (2, 2, 2, 2)) + background  # (B, 1, 32, 32)
        x = self.s2(scaled_tanh(self.c1(x)))
        x = self.s4(scaled_tanh(self.c3(x)))
        x = scaled_tanh(self.c5(x)).flatten(1)  # (B, 120)
        return self.output(scaled_tanh(self.f6(x)))


# ----------------------------------------------------------------------------- a deeper modern CNN


class ModernCNN(nn.Module):
    """A VGG-style CNN with batch norm and dropout, sized to train on two CPU cores in minutes.

    One stage per entry of `widths`: `convs_per_stage` convolutions (5x5 for the first, 3x3 after),
    each followed by batch norm and ReLU, with 2x2 max pooling after the stage's first convolution
    (28 -> 14 -> 7 -> 3). Pooling before batch norm and ReLU gives the same network family at a
    quarter of their cost, which is most of the time on a CPU. Then dropout and a linear classifier
    on the flattened maps.

    >>> sum(p.numel() for p in ModernCNN().parameters())
    104938
    """

    def __init__(
        self, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1, dropout: float = 0.3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for width in widths:
            for conv in range(convs_per_stage):
                kernel = 5 if in_channels == 1 else 3  # a wider first view of the digit costs little at one channel
                layers.append(nn.Conv2d(in_channels, width, kernel, padding=kernel // 2, bias=False))  # BN has the bias
                if conv == 0:
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                in_channels = width
        self.features = nn.Sequential(*layers)  # (B, widths[-1], 3, 3) for three stages
        side = IMAGE_SIZE // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * side * side, num_classes),  # (B, 10) logits
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
