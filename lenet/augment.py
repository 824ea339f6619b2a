"""Batched data augmentation on the training device: random affine maps and elastic distortion.

Each augmentation is a callable on float batches (B, 1, 28, 28) in [0, 1], on any device, built
from `F.affine_grid` / `F.grid_sample` so a whole batch is warped in one call (no per-image PIL).
Randomness comes from torch's global RNG (seeded by `seed_everything`) or from an explicit
`generator`, so the same seed gives the same images. Labels are never changed: every augmentation
keeps the digit what it was. `StyleStrokes` reads them (it adds strokes to 1s and 7s only), so
augmentations are applied through `apply(transform, images, labels)`. Selected by `data.augment`
(conf/augment/).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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
    scale: zoom factor range (low, high); shear: horizontal shear angle in ±shear degrees;
    aspect: width scaled against height by a factor log-uniform in [1/aspect, aspect] (people's
    digits are narrower or wider than MNIST's, and scans stretched to fill a box make a 1 wide).
    All zero (scale (1, 1), aspect 1) is the identity.
    """

    def __init__(
        self,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: Sequence[float] = (1.0, 1.0),
        shear: float = 0.0,
        aspect: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        low, high = scale
        if degrees < 0 or translate < 0 or shear < 0 or not 0 < low <= high or aspect < 1:
            raise ValueError(
                f"RandomAffine(degrees={degrees}, translate={translate}, scale={tuple(scale)}, shear={shear}, "
                f"aspect={aspect}): angles and shift must be >= 0, scale a range (low, high) with 0 < low <= high, "
                "and aspect >= 1"
            )
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, (low, high), shear
        self.aspect, self.generator = aspect, generator

    def matrices(self, batch: int, like: Tensor) -> Tensor:
        """(B, 2, 3) maps from output to input coordinates in affine_grid's [-1, 1] frame."""
        g = self.generator
        angle = torch.deg2rad(_uniform(-self.degrees, self.degrees, batch, like, g))
        shear = torch.deg2rad(_uniform(-self.shear, self.shear, batch, like, g))
        zoom = _uniform(*self.scale, batch, like, g)
        stretch = torch.exp(_uniform(-math.log(self.aspect), math.log(self.aspect), batch, like, g))
        # The frame spans 2 units per image side, so a shift by a fraction f of the side is 2f units.
        shift = _uniform(-2 * self.translate, 2 * self.translate, 2 * batch, like, g).view(batch, 2)
        cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
        # Forward map: rotate·shear, then zoom; grid_sample needs its inverse (output -> input).
        forward = torch.stack(
            [torch.stack([cos, -sin + cos * tan], -1), torch.stack([sin, cos + sin * tan], -1)], -2
        ) * zoom.view(batch, 1, 1)  # (B, 2, 2)
        forward[:, 0, :] *= stretch.view(batch, 1)  # x (width) only
        inverse = torch.linalg.inv(forward)
        offset = -(inverse @ shift.unsqueeze(-1))  # (B, 2, 1)
        return torch.cat([inverse, offset], dim=2)  # (B, 2, 3)

    def __call__(self, x: Tensor) -> Tensor:
        theta = self.matrices(len(x), x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return _sample(x, grid)

    def __repr__(self) -> str:
        return (
            f"RandomAffine(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
            f"shear={self.shear}, aspect={self.aspect})"
        )


def _ink_box(x: Tensor, level: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per image: the (B, H, W) mask of pixels above `level`, and its bounding box's top, bottom,
    left and right (exclusive ends; an empty image gets bottom <= top)."""
    _, _, height, width = x.shape
    ink = x[:, 0] > level
    positions = torch.arange(max(height, width), device=x.device, dtype=x.dtype)
    rows, cols = ink.any(dim=2), ink.any(dim=1)  # (B, H), (B, W)
    top = torch.where(rows, positions[:height], height).amin(1)
    bottom = torch.where(rows, positions[:height], -1).amax(1) + 1
    left = torch.where(cols, positions[:width], width).amin(1)
    right = torch.where(cols, positions[:width], -1).amax(1) + 1
    return ink, top, bottom, left, right


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


class StrokeWidth:
    """Per-image random stroke width, thinner or thicker: people draw with pens from hair-thin to
    marker-thick, MNIST's writers mostly did not.

    Thicker: grey-level dilation (3x3 max pooling, about one pixel of width per pass), up to
    `thicker` passes, the last one blended by its fraction. Thinner: the level below which a pixel
    counts as background is raised by up to `thinner` (of full scale), which strips the soft edges
    of each stroke and keeps its core, so no stroke vanishes (erosion would erase MNIST's 2 px lines).
    Each image is made thinner or thicker with equal odds. 0 and 0 is the identity.
    """

    def __init__(self, thinner: float = 0.5, thicker: float = 1.5, generator: torch.Generator | None = None) -> None:
        if not 0 <= thinner < 1 or thicker < 0:
            raise ValueError(f"StrokeWidth(thinner={thinner}, thicker={thicker}): need 0 <= thinner < 1 and thicker >= 0 (pixels)")
        self.thinner, self.thicker, self.generator = thinner, thicker, generator

    def __call__(self, x: Tensor) -> Tensor:
        batch = len(x)
        thicken = torch.rand(batch, device=x.device, dtype=x.dtype, generator=self.generator).view(-1, 1, 1, 1) < 0.5
        amount = torch.rand(batch, device=x.device, dtype=x.dtype, generator=self.generator).view(-1, 1, 1, 1)
        level = amount * self.thinner
        thin = ((x - level) / (1 - level)).clamp(0, 1)
        thick, grown = x, x
        for step in range(math.ceil(self.thicker)):
            grown = F.max_pool2d(grown, 3, stride=1, padding=1)
            share = (amount * self.thicker - step).clamp(0, 1)  # 1 for whole passes, the rest for the last
            thick = thick + share * (grown - thick)
        return torch.where(thicken, thick, thin)

    def __repr__(self) -> str:
        return f"StrokeWidth(thinner={self.thinner}, thicker={self.thicker})"


class LowResolution:
    """Digits scanned at low resolution: per image, shrunk to `low`..`high` pixels a side, binarised
    (with probability `binarize`, at a threshold in [0.3, 0.6]) and scaled back up, as a 16x16 form
    scan reaches the model after preprocessing (blocky, hard-edged strokes)."""

    def __init__(self, low: int = 12, high: int = 20, binarize: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 4 <= low <= high <= 28 or not 0 <= binarize <= 1:
            raise ValueError(f"LowResolution(low={low}, high={high}, binarize={binarize}): need 4 <= low <= high <= 28 and 0 <= binarize <= 1")
        self.low, self.high, self.binarize, self.generator = low, high, binarize, generator

    def __call__(self, x: Tensor) -> Tensor:
        size = x.shape[-1]
        sides = torch.randint(self.low, self.high + 1, (len(x),), generator=self.generator, device="cpu" if self.generator is None else self.generator.device)
        threshold = _uniform(0.3, 0.6, len(x), x, self.generator).view(-1, 1, 1, 1)
        binarize = torch.rand(len(x), device=x.device, generator=self.generator).view(-1, 1, 1, 1) < self.binarize
        out = torch.empty_like(x)
        for side in sides.unique().tolist():  # one resize per distinct side: a handful of calls per batch
            chosen = (sides == side).nonzero().flatten().to(x.device)
            small = F.interpolate(x[chosen], size=(side, side), mode="area")
            small = torch.where(binarize[chosen], (small > threshold[chosen]).to(x.dtype), small)
            out[chosen] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        return out

    def __repr__(self) -> str:
        return f"LowResolution(low={self.low}, high={self.high}, binarize={self.binarize})"


class FillBox:
    """Each digit stretched to fill its box, aspect ratio not kept, as scanned forms were normalised
    (USPS, NIST-style form scans): a 1 becomes a wide bar, a wide 2 a tall one.

    The ink's bounding box (pixels above `level`) is mapped onto the centred `box`-pixel square by one
    batched affine resampling. Prepared user images put the longer side at 20 px, so box=20 matches them.
    """

    def __init__(self, box: int = 20, level: float = 0.3) -> None:
        if not 4 <= box <= 28 or not 0 < level < 1:
            raise ValueError(f"FillBox(box={box}, level={level}): need 4 <= box <= 28 and 0 < level < 1")
        self.box, self.level = box, level

    def __call__(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        _, top, bottom, left, right = _ink_box(x, self.level)
        empty = bottom <= top
        # Normalised frame [-1, 1]: the output box spans +-box/side, the input box its ink's extent.
        half_out = self.box / width
        centre_x = (left + right) / width - 1
        centre_y = (top + bottom) / height - 1
        scale_x = ((right - left).clamp(min=1) / width) / half_out
        scale_y = ((bottom - top).clamp(min=1) / height) / half_out
        theta = torch.zeros(batch, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = scale_x, centre_x
        theta[:, 1, 1], theta[:, 1, 2] = scale_y, centre_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return torch.where(empty.view(-1, 1, 1, 1), x, _sample(x, grid))

    def __repr__(self) -> str:
        return f"FillBox(box={self.box}, level={self.level})"


class StrokeGaps:
    """Breaks in the strokes: a pen that skips, a faint scan, or a writer who leaves a 0, a 6 or a 9
    open at the top (USPS's misread 0s and 5s are often such open or broken shapes).

    `gaps` discs are erased per image, each centred on an ink pixel (above `level`) drawn at random,
    with a radius uniform in `radius` (pixels). Erasing at most a few pixels of stroke keeps the digit
    what it was; empty images are left as they are; gaps=0 is the identity.
    """

    def __init__(self, gaps: int = 1, radius: Sequence[float] = (1.5, 2.5), level: float = 0.3, generator: torch.Generator | None = None) -> None:
        low, high = radius
        if gaps < 0 or not 0 < low <= high or not 0 < level < 1:
            raise ValueError(f"StrokeGaps(gaps={gaps}, radius={tuple(radius)}, level={level}): need gaps >= 0, "
                             "a radius range 0 < low <= high (pixels) and 0 < level < 1")
        self.gaps, self.radius, self.level, self.generator = gaps, (low, high), level, generator

    def __call__(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        ink = (x[:, 0] > self.level).flatten(1)  # (B, H*W)
        has_ink = ink.any(dim=1)
        # Blank images get uniform weights so every row can be sampled; they are left untouched below.
        weights = torch.where(has_ink.unsqueeze(1), ink.to(x.dtype), torch.ones_like(ink, dtype=x.dtype))
        ys = torch.arange(height, device=x.device, dtype=x.dtype).view(1, -1, 1)
        xs = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, -1)
        keep = torch.ones(batch, height, width, device=x.device, dtype=x.dtype)
        for _ in range(self.gaps):
            centre = torch.multinomial(weights, 1, generator=self.generator).flatten()
            cy, cx = (centre // width).to(x.dtype).view(-1, 1, 1), (centre % width).to(x.dtype).view(-1, 1, 1)
            r = _uniform(*self.radius, batch, x, self.generator).view(-1, 1, 1)
            keep = keep * (torch.hypot(xs - cx, ys - cy) - r + 0.5).clamp(0, 1)  # soft edge, one pixel wide
        return torch.where(has_ink.view(-1, 1, 1, 1), x * keep.unsqueeze(1), x)

    def __repr__(self) -> str:
        return f"StrokeGaps(gaps={self.gaps}, radius={self.radius}, level={self.level})"


class StyleStrokes:
    """Strokes that many writers add and MNIST's rarely do: a flag on the 1 (a stroke from its top
    end down to the left; without it a European 1 reads as a 7) and a crossbar through the 7's stem.

    For a share `flag` of the batch's 1s and `crossbar` of its 7s, one straight stroke 1.5-2.5 px
    wide is drawn into the image. Flag: from the topmost ink, `flag_length` of the digit's height long,
    20-60 degrees below horizontal. Crossbar: centred on the stem's ink at 45-65% of the height,
    30-50% of the height long, tilted up to 8 degrees. Other digits, and empty images, are left as
    they are; 0 and 0 is the identity.
    """

    needs_labels = True

    def __init__(
        self, flag: float = 0.5, crossbar: float = 0.3, flag_length: Sequence[float] = (0.2, 0.45),
        generator: torch.Generator | None = None,
    ) -> None:
        low, high = flag_length
        if not 0 <= flag <= 1 or not 0 <= crossbar <= 1 or not 0 < low <= high <= 1:
            raise ValueError(
                f"StyleStrokes(flag={flag}, crossbar={crossbar}, flag_length={tuple(flag_length)}): flag and crossbar "
                "are probabilities in [0, 1], flag_length a range (low, high) of the digit's height within (0, 1]"
            )
        self.flag, self.crossbar, self.flag_length, self.generator = flag, crossbar, (low, high), generator

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        g = self.generator
        draw = torch.rand(len(x), device=x.device, generator=g)
        ink, top, bottom, _, _ = _ink_box(x, 0.3)
        height_px = x.shape[-2]
        tall = (bottom - top).clamp(min=1).to(x.dtype)
        has_ink = bottom > top
        flags = (labels == 1) & (draw < self.flag) & has_ink
        bars = (labels == 7) & (draw < self.crossbar) & has_ink
        chosen = (flags | bars).nonzero().flatten()
        if len(chosen) == 0:
            return x
        n = len(chosen)
        # Where the stroke starts: the ink's mean column on the row it hangs from.
        at_row = torch.where(flags[chosen], top[chosen].to(x.dtype), top[chosen] + _uniform(0.45, 0.65, n, x, g) * tall[chosen])
        row_ink = ink[chosen, at_row.long().clamp(0, height_px - 1)].to(x.dtype)  # (n, W)
        columns = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype)
        centre = (row_ink * columns).sum(1) / row_ink.sum(1).clamp(min=1)
        length = torch.where(flags[chosen], _uniform(*self.flag_length, n, x, g), _uniform(0.3, 0.5, n, x, g)) * tall[chosen]
        angle = torch.deg2rad(torch.where(flags[chosen], _uniform(20, 60, n, x, g), _uniform(-8, 8, n, x, g)))
        dx, dy = -torch.cos(angle) * length, torch.sin(angle) * length  # down-left for a flag (y grows down)
        # A flag starts at the 1's top; a crossbar is centred on the stem.
        start_x = torch.where(flags[chosen], centre, centre - dx / 2)
        start_y = torch.where(flags[chosen], at_row, at_row - dy / 2)
        stroke = _segment(start_x, start_y, dx, dy, _uniform(1.5, 2.5, n, x, g), x.shape[-2:], x)
        out = x.clone()
        out[chosen] = torch.maximum(x[chosen], stroke)
        return out

    def __repr__(self) -> str:
        return f"StyleStrokes(flag={self.flag}, crossbar={self.crossbar}, flag_length={self.flag_length})"


def _segment(x0: Tensor, y0: Tensor, dx: Tensor, dy: Tensor, width: Tensor, size, like: Tensor) -> Tensor:
    """(N, 1, H, W) anti-aliased straight strokes from (x0, y0) along (dx, dy), `width` px wide, in pixel units."""
    height, width_px = size
    ys = torch.arange(height, device=like.device, dtype=like.dtype).view(1, -1, 1)
    xs = torch.arange(width_px, device=like.device, dtype=like.dtype).view(1, 1, -1)
    x0, y0, dx, dy, width = (t.view(-1, 1, 1) for t in (x0, y0, dx, dy, width))
    along = (((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy).clamp(min=1e-6)).clamp(0, 1)
    distance = torch.hypot(xs - (x0 + along * dx), ys - (y0 + along * dy))
    return (width / 2 + 0.5 - distance).clamp(0, 1).unsqueeze(1)


def needs_labels(transform) -> bool:
    return getattr(transform, "needs_labels", False)


def apply(transform, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """`transform(x)`, or `transform(x, labels)` for an augmentation that reads labels."""
    if needs_labels(transform):
        if labels is None:
            raise ValueError(f"{transform!r} draws strokes by digit: it needs the batch's labels")
        return transform(x, labels)
    return transform(x)


class RandomApply:
    """Apply `transform` to a random share `p` of the batch's images, leave the others as they are."""

    def __init__(self, transform, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"RandomApply(p={p}): p is a probability in [0, 1]")
        self.transform, self.p, self.generator = transform, p, generator

    @property
    def needs_labels(self) -> bool:
        return needs_labels(self.transform)

    def __call__(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        chosen = (torch.rand(len(x), device=x.device, generator=self.generator) < self.p).nonzero().flatten()
        if len(chosen) == 0:
            return x
        out = x.clone()
        out[chosen] = apply(self.transform, x[chosen], None if labels is None else labels[chosen])
        return out

    def __repr__(self) -> str:
        return f"RandomApply({self.transform!r}, p={self.p})"


class Compose:
    """Apply several augmentations in order (e.g. elastic, then affine). `transforms` is a list, or a
    mapping of named steps in order whose None entries are left out, so that a config can compose on
    another one by filling in or replacing a step by name (conf/augment/robust_styles.yaml)."""

    def __init__(self, transforms: Sequence | Mapping) -> None:
        steps = transforms.values() if isinstance(transforms, Mapping) else transforms
        self.transforms = [step for step in steps if step is not None]

    @property
    def needs_labels(self) -> bool:
        return any(needs_labels(transform) for transform in self.transforms)

    def __call__(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        for transform in self.transforms:
            x = apply(transform, x, labels)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"
