"""Batched data augmentation on the training device: random affine maps and elastic distortion.

Each augmentation is a callable on float batches (B, 1, 28, 28) in [0, 1], on any device, built
from `F.affine_grid` / `F.grid_sample` so a whole batch is warped in one call (no per-image PIL).
Randomness comes from torch's global RNG (seeded by `seed_everything`) or from an explicit
`generator`, so the same seed gives the same images. Labels are never touched: every warp keeps the
digit recognisable. Selected by `data.augment` (conf/augment/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(low: float, high: float, size: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """`size` numbers uniform in [low, high), drawn on the device of `like`."""
    return low + (high - low) * torch.rand(size, device=like.device, dtype=like.dtype, generator=generator)


def _sample(x: Tensor, grid: Tensor) -> Tensor:
    """Read `x` at the (B, H, W, 2) normalised positions of `grid`; outside the image is background (0)."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomAffine:
    """Per-image random rotation, translation, scale and shear, applied to a batch at once.

    degrees: rotation drawn in ±degrees; translate: shift in ± that fraction of the image side;
    scale: zoom factor range (low, high); shear: horizontal shear angle in ±shear degrees.
    All zero (scale (1, 1)) is the identity.
    """

    def __init__(
        self,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: Sequence[float] = (1.0, 1.0),
        shear: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        low, high = scale
        if degrees < 0 or translate < 0 or shear < 0 or not 0 < low <= high:
            raise ValueError(
                f"RandomAffine(degrees={degrees}, translate={translate}, scale={tuple(scale)}, shear={shear}): "
                "angles and shift must be >= 0 and scale a range (low, high) with 0 < low <= high"
            )
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, (low, high), shear
        self.generator = generator

    def matrices(self, batch: int, like: Tensor) -> Tensor:
        """(B, 2, 3) maps from output to input coordinates in affine_grid's [-1, 1] frame."""
        g = self.generator
        angle = torch.deg2rad(_uniform(-self.degrees, self.degrees, batch, like, g))
        shear = torch.deg2rad(_uniform(-self.shear, self.shear, batch, like, g))
        zoom = _uniform(*self.scale, batch, like, g)
        # The frame spans 2 units per image side, so a shift by a fraction f of the side is 2f units.
        shift = _uniform(-2 * self.translate, 2 * self.translate, 2 * batch, like, g).view(batch, 2)
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # Forward map: rotate·shear, then zoom; grid_sample needs its inverse (output -> input).
        forward = torch.stack(
            [torch.stack([cos, -sin + cos * tan], -1), torch.stack([sin, cos + sin * tan], -1)], -2
        ) * zoom.view(batch, 1, 1)  # (B, 2, 2)
        inverse = torch.linalg.inv(forward)
        offset = -(inverse @ shift.unsqueeze(-1))  # (B, 2, 1)
        return torch.cat([inverse, offset], dim=2)  # (B, 2, 3)

    def __call__(self, x: Tensor) -> Tensor:
        theta = self.matrices(len(x), x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return _sample(x, grid)

    def __repr__(self) -> str:
        return f"RandomAffine(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, shear={self.shear})"


def _gaussian_kernel(sigma: float, like: Tensor) -> Tensor:
    """1-D normalised Gaussian of std `sigma` pixels, 3 sigma each side."""
    radius = max(1, math.ceil(3 * sigma))
    positions = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return kernel / kernel.sum()


class ElasticDistortion:
    """Elastic distortion after Simard, Steinkraus & Platt (2003).

    A random displacement field, uniform in [-1, 1] per pixel, is smoothed by a Gaussian of std
    `sigma` pixels and scaled by `alpha` pixels; each image is resampled along its own field.
    Simard et al. report sigma 4 and alpha 34; a larger sigma (smoother, gentler) suits short trainings.
    alpha = 0 is the identity.
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, generator: torch.Generator | None = None) -> None:
        if alpha < 0 or sigma <= 0:
            raise ValueError(f"ElasticDistortion(alpha={alpha}, sigma={sigma}): need alpha >= 0 and sigma > 0")
        self.alpha, self.sigma, self.generator = alpha, sigma, generator

    def displacement(self, x: Tensor) -> Tensor:
        """(B, H, W, 2) smoothed random displacements in pixels, (dx, dy) last."""
        batch, _, height, width = x.shape
        noise = torch.rand(batch * 2, 1, height, width, device=x.device, dtype=x.dtype, generator=self.generator)
        field = 2 * noise - 1  # (2B, 1, H, W)
        kernel = _gaussian_kernel(self.sigma, x)
        pad = len(kernel) // 2
        # The Gaussian is separable: one pass along rows, one along columns.
        field = F.conv2d(F.pad(field, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
        return self.alpha * field.view(batch, 2, height, width).permute(0, 2, 3, 1)  # Simard's alpha * (G * U)

    def __call__(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        identity = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(batch, 2, 3)
        grid = F.affine_grid(identity, list(x.shape), align_corners=False)  # (B, H, W, 2) in [-1, 1]
        pixels_to_frame = torch.tensor([2 / width, 2 / height], device=x.device, dtype=x.dtype)
        return _sample(x, grid + self.displacement(x) * pixels_to_frame)

    def __repr__(self) -> str:
        return f"ElasticDistortion(alpha={self.alpha}, sigma={self.sigma})"


class Compose:
    """Apply several augmentations in order (e.g. elastic, then affine)."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Tensor) -> Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"
