"""A benchmark of handwriting that is not MNIST's, read the way users' images are read (`prepare_image` -> model).

MNIST test accuracy (99.2-99.5%) overstates what users of the drawing page, `lenet-predict` and the
API meet (issue 10): other writers, pens, scanners and cameras. Each set below imitates one way
real digits differ, made deterministically (seeded, one random stream per image) from data on this
machine; all but USPS derive from the MNIST *test* set (2,000 digits a set, balanced over the
classes), so a set's accuracy can be held against the same model's MNIST test accuracy; usps and
unipen_test are other people's handwriting:

    usps         the 2,007 USPS test digits (other writers, envelopes), scanned: upscaled, margin, dark on light, noise
    unipen_test  UNIPEN's held-out writers (lenet.unipen: never trained on, never used to choose a recipe),
                 their pen trajectories drawn as the drawing page draws (the pen set's pad, pen and sizes)
    pen          MNIST test digits skeletonised and redrawn as on the drawing page: 280x280 white pad,
                 black round pen 14-30 px, digit 110-230 px high, anywhere on the pad (the thickest fill small loops)
    binary_scan  MNIST test digits binarised at 16x16 after stretching to fill the box (a 1 becomes wide),
                 upscaled with a margin, as in scanned-form collections
    styles       pen-drawn MNIST 1s, 7s and 9s (500 each) given strokes MNIST's writers rarely use: a flag
                 on the 1, a crossbar on the 7, a tail curling left on the 9
    photo_font   digits of handwriting fonts photographed on paper: texture, uneven light, blur, JPEG
                 (only where such fonts are installed, e.g. Debian's fonts-dkg-handwriting, fonts-bwht)

Every image goes through the product's own `lenet.preprocess.prepare_image`; the prepared
(N, 1, 28, 28) tensors do not depend on the model, so they are cached on disk, keyed by the set's
parameters, its source data and the code that makes and prepares it. An image that preparation
refuses (NoDigitError, ImageError) counts as a wrong answer and is reported as "refused".

    sets = load_sets(["usps", "pen"])                      # {"mnist": ..., "usps": ..., "pen": ...}
    scores = benchmark(load_model("outputs/<run>"), sets)  # {"usps": SetScore, ...}
    scores["pen"].accuracy, scores["pen"].confusions()     # 0.98..., [("4→9", 3), ...]
    choose_threshold(scores, "usps", max_unsure=0.02)      # largest unsure threshold allowed by USPS
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from torch import Tensor

import lenet.preprocess
from lenet.cache import cache_folder
from lenet.evaluation import Evaluation, default_data_dir, score
from lenet.inference import UNSURE_BELOW
from lenet.preprocess import ImageError, prepare_image
import lenet.render
import lenet.unipen
from lenet.render import blocky_scan, draw_with_pen, photograph, polyline_segments, stroke_segments
from lenet.unipen import PenDigit, UnipenError
from lenet.unipen_images import split_digits

SET_NAMES = ("usps", "unipen_test", "pen", "binary_scan", "styles", "photo_font")
REFERENCE = "mnist"  # the official MNIST test set, unmodified: the figure each set is held against
REFUSED = 10  # the answer index of "no digit found" in a SetScore's probabilities (after digits 0-9)
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# Handwriting-style fonts (Debian packages fonts-bwht, -comic-neue, -dancingscript, -kaushanscript,
# -breip, -dkg-handwriting, -humor-sans, -klee, -kristi, -rufscript, -sjfonts, -yusei-magic).
# Outline and hairline fonts (femkeklaver, ecolier) are left out: nobody writes like that.
HANDWRITING_FONTS = (
    "BecauseWeBuild-Regular.otf", "BecauseWeConnect-Regular.otf", "BecauseWeCreate-Regular.otf",
    "BecauseWeLearn-Regular.otf", "BecauseWeMentor-Regular.otf", "BecauseWeOrganize-Regular.otf",
    "ComicNeue-Regular.otf", "ComicNeue-Bold.otf", "ComicNeue-Italic.otf", "DancingScript-Regular.otf",
    "KaushanScript-Regular.otf", "Breip.ttf", "dkg.ttf", "dkgBd.ttf", "dkgIt.ttf", "Humor-Sans.ttf",
    "KleeOne-Regular.ttf", "Kristi.ttf", "Rufscript010.ttf", "Delphine.ttf", "SteveHand.ttf",
    "YuseiMagic-Regular.ttf",
)  # fmt: skip

UserImage = np.ndarray | Image.Image  # uint8 grey (H, W), or a PIL image (photographs are RGB)


class SetUnavailable(RuntimeError):
    """A set that cannot be made on this machine (its source data or fonts are missing)."""


# ----------------------------------------------------------------------------- sources


@lru_cache(maxsize=2)
def mnist_test(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's official test digits, uint8 (10000, 28, 28) light on black, and their labels."""
    from lenet.evaluation import test_split  # lenet.data imports Lightning: only when MNIST is read

    images, labels = test_split("mnist", data_dir)
    return images[:, 0].numpy(), labels.numpy()


def unipen_test(data_dir: str) -> list[PenDigit]:
    """The digits of UNIPEN's held-out test writers, in reading order."""
    try:
        return split_digits(data_dir)["test"]
    except UnipenError as error:
        raise SetUnavailable(f"the unipen_test set needs UNIPEN: {error}") from error


def set_groups(name: str, data_dir: str | Path | None = None) -> list[str] | None:
    """Per image, the group a set's accuracy is also reported by (unipen_test: the contributing institution)."""
    if name != "unipen_test":
        return None
    return [digit.contributor for digit in unipen_test(str(data_dir or default_data_dir()))]


@lru_cache(maxsize=2)
def usps_test(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """USPS test digits as float (2007, 16, 16) in -1 (background) .. 1 (ink), and their labels."""
    path = Path(data_dir) / "USPS" / "zip.test.gz"
    if not path.is_file():
        raise SetUnavailable(f"{path} is missing: the usps set needs the USPS test file (see shared/data/USPS).")
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, dtype=np.float32)
    return rows[:, 1:].reshape(-1, 16, 16), rows[:, 0].astype(np.int64)


def handwriting_fonts() -> list[Path]:
    """The installed HANDWRITING_FONTS, in that order (the first copy of each name found)."""
    found: dict[str, Path] = {}
    for folder in FONT_DIRS:
        for path in sorted(Path(folder).expanduser().rglob("*")) if Path(folder).expanduser().is_dir() else []:
            found.setdefault(path.name, path)
    return [found[name] for name in HANDWRITING_FONTS if name in found]


def _digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
    return hasher.hexdigest()


def _rng(seed: int, name: str, *where: int) -> np.random.Generator:
    """One independent stream per (seed, set, purpose, item): the first N images do not depend on how many are made."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *where])


IMAGE, ORDER = 0, 1  # the purposes of the streams: drawing image i, ordering the digits of class c


def balanced_mnist(
    name: str, classes: Sequence[int], count: int, seed: int, data_dir: str, accept: Callable[[np.ndarray, int], bool] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`count` MNIST test digits (uint8 28x28) and labels, classes interleaved (0, 1, ..., 9, 0, ...) so that
    any prefix is balanced; each class's digits drawn in a seeded order, keeping those `accept` passes."""
    images, labels = mnist_test(data_dir)
    chosen: list[list[int]] = []
    for k, digit in enumerate(classes):
        wanted = len(range(k, count, len(classes)))
        order = _rng(seed, name, ORDER, digit).permutation(np.flatnonzero(labels == digit))
        if accept is not None:  # lazily: stop once enough digits passed
            order = list(islice((i for i in order if accept(images[i], digit)), wanted))
        if len(order) < wanted:
            raise ValueError(f"set {name!r} wants {wanted} MNIST test {digit}s, only {len(order)} qualify: lower its count")
        chosen.append(list(order[:wanted]))
    # Interleave: item j is class classes[j % k], its (j // k)-th pick.
    indices = np.array([chosen[j % len(classes)][j // len(classes)] for j in range(count)], dtype=np.int64)
    return images[indices], labels[indices]


# ----------------------------------------------------------------------------- strokes: skeletons and the pen

UPSAMPLE = 4  # MNIST digits are skeletonised at 112x112: smooth centre lines, few spurs


def skeleton(digit: np.ndarray) -> np.ndarray:
    """uint8 28x28 MNIST digit -> boolean (112, 112) centre line of its strokes."""
    from skimage.morphology import skeletonize  # scikit-image is only needed to make the pen sets

    side = 28 * UPSAMPLE
    big = np.asarray(Image.fromarray(digit.astype(np.float32) / 255).resize((side, side), Image.Resampling.BICUBIC))
    # Smoothing before the threshold keeps MNIST's pixel steps from sprouting one-pixel branches.
    return skeletonize(ndimage.gaussian_filter(big, 1.5) > 0.45)


def endpoints(centre: np.ndarray) -> np.ndarray:
    """(K, 2) (row, col) of the skeleton pixels with exactly one neighbour: the free ends of strokes."""
    neighbours = ndimage.convolve(centre.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
    return np.argwhere(centre & (neighbours == 1)).astype(np.float64)


def skeleton_segments(centre: np.ndarray, smooth: float = 3.0) -> np.ndarray:
    """(K, 2, 2) line segments (start, end) x (row, col) joining each pair of touching skeleton pixels.

    Each pixel is first moved to the Gaussian-weighted mean of the skeleton pixels around it
    (`smooth` px): scaled up to the pad, a skeleton's pixel staircase would draw a wobbly line.
    """
    pixels = np.argwhere(centre)
    distance = np.hypot(*(pixels[:, None, :] - pixels[None, :, :]).transpose(2, 0, 1))
    weights = np.exp(-0.5 * (distance / smooth) ** 2) * (distance < 3 * smooth)
    smoothed = weights @ pixels / weights.sum(axis=1, keepdims=True)
    index = np.full(centre.shape, -1)
    index[tuple(pixels.T)] = np.arange(len(pixels))
    padded = np.pad(index, 1, constant_values=-1)
    pairs = []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each neighbour pair once
        neighbour = padded[1 + dr : 1 + dr + centre.shape[0], 1 + dc : 1 + dc + centre.shape[1]]
        both = (index >= 0) & (neighbour >= 0)
        pairs.append(np.stack([index[both], neighbour[both]], axis=1))
    return smoothed[np.concatenate(pairs)]


# ----------------------------------------------------------------------------- one image of each set


def usps_image(values: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """A USPS digit (16x16, -1..1) as a scan arrives: upscaled 3-8x, an uneven margin, grey ink on paper, noise."""
    side = round(16 * rng.uniform(*params["scale"]))
    ink = Image.fromarray((values + 1) / 2).resize((side, side), Image.Resampling.BICUBIC)
    ink = np.clip(np.asarray(ink), 0, 1)
    top, bottom, left, right = (round(side * rng.uniform(*params["margin"])) for _ in range(4))
    ink = np.pad(ink, ((top, bottom), (left, right)))
    paper, ink_level = rng.uniform(*params["paper"]), rng.uniform(*params["ink"])
    image = paper - ink * (paper - ink_level) + rng.normal(0, rng.uniform(*params["noise"]), ink.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def pen_image(digit: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """An MNIST digit's centre line redrawn with a round pen on the drawing page's pad."""
    return draw_with_pen(skeleton_segments(skeleton(digit)), rng, params)


def binary_scan_image(digit: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """An MNIST digit stretched to fill a 16x16 box (aspect ratio lost), binarised, upscaled blockily, with a margin."""
    ink = digit.astype(np.float32) / 255
    rows, cols = np.flatnonzero((ink > 0.25).any(axis=1)), np.flatnonzero((ink > 0.25).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = params["box"]
    cells = np.asarray(Image.fromarray(crop).resize((box, box), Image.Resampling.BILINEAR)) > 0.5
    return blocky_scan(cells, rng, params)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, steps: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, steps)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def style_stroke(centre: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    """The extra stroke (P, 2) (row, col) a European-style writer adds to a 1, 7 or 9's centre line.

    1: a flag from the top end down to the left, 25-45% of the height, 25-55 degrees below horizontal.
    7: a crossbar through the stem at 50-62% of the height, 30-50% of the height long, tilted up to 6 degrees.
    9: the tail carried on and curled to the left (a hook), as in 9s written with a curved tail.
    """
    pixels = np.argwhere(centre).astype(np.float64)
    top, bottom = pixels[:, 0].min(), pixels[:, 0].max()
    height = bottom - top + 1
    ends = endpoints(centre)
    if label == 1:
        start = ends[ends[:, 0].argmin()]
        angle, length = np.radians(rng.uniform(25, 55)), rng.uniform(0.25, 0.45) * height
        return np.linspace(start, start + length * np.array([np.sin(angle), -np.cos(angle)]), 16)
    if label == 7:
        row = top + rng.uniform(0.50, 0.62) * height
        stem = pixels[np.abs(pixels[:, 0] - row) <= 1.5, 1]
        col = float(np.median(stem)) if len(stem) else float(pixels[:, 1].mean())
        half, tilt = rng.uniform(0.15, 0.25) * height, np.radians(rng.uniform(-6, 6))
        offset = half * np.array([np.sin(tilt), np.cos(tilt)])
        middle = np.array([row, col + rng.uniform(-0.2, 0.2) * half])
        return np.linspace(middle - offset, middle + offset, 16)
    if label == 9:
        end = ends[ends[:, 0].argmax()]
        near = pixels[np.hypot(*(pixels - end).T) < 0.15 * height]
        direction = end - near.mean(axis=0)  # the way the tail runs at its end
        direction = direction / max(np.hypot(*direction), 1e-6)
        bend = end + rng.uniform(0.08, 0.16) * height * direction
        curl = bend + height * np.array([-rng.uniform(0.0, 0.1), -rng.uniform(0.2, 0.35)])
        return _bezier(end, bend, curl)
    raise ValueError(f"no style stroke for digit {label}: styles has 1s, 7s and 9s")


def plain_for_style(digit: np.ndarray, label: int) -> bool:
    """Whether an MNIST digit lacks the style already: a 1 or a 7 drawn as one open stroke (two ends), a 9 with one end."""
    return len(endpoints(skeleton(digit))) == (1 if label == 9 else 2)


def styles_image(digit: np.ndarray, label: int, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """A pen drawing of an MNIST 1, 7 or 9 with its style stroke added."""
    centre = skeleton(digit)
    segments = np.concatenate([skeleton_segments(centre), polyline_segments(style_stroke(centre, label, rng))])
    return draw_with_pen(segments, rng, params)


def photo_font_image(label: int, font: Path, rng: np.random.Generator, params: Mapping[str, Any]) -> Image.Image:
    """A digit written in a handwriting font on paper, photographed: RGB JPEG with texture, uneven light and blur."""
    size = int(rng.integers(*params["font_size"]))
    glyph = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(glyph).text((1.5 * size, 1.5 * size), str(label), font=ImageFont.truetype(str(font), size), fill=255, anchor="mm")
    glyph = glyph.rotate(rng.uniform(-params["rotate"], params["rotate"]), Image.Resampling.BILINEAR)
    glyph = glyph.crop(glyph.getbbox())
    ink = np.asarray(glyph, np.float32) / 255 * rng.uniform(0.8, 1.0)
    extent = max(ink.shape)
    height, width = (round(max(extent * rng.uniform(*params["paper_size"]), n * 1.3)) for n in ink.shape)
    top, left = (int(rng.integers(round(0.1 * s), s - n - round(0.1 * s) + 1)) for s, n in zip((height, width), ink.shape))
    alpha = np.zeros((height, width), np.float32)
    alpha[top : top + ink.shape[0], left : left + ink.shape[1]] = ink

    return photograph(alpha, rng, params, scale=size)


# ----------------------------------------------------------------------------- the sets

# Each set's generator parameters (ranges are drawn uniformly per image). They are part of the cache key.
SET_PARAMS: dict[str, dict[str, Any]] = {
    "usps": {"scale": (3, 8), "margin": (0.1, 0.5), "paper": (195, 245), "ink": (10, 80), "noise": (2, 6)},
    "unipen_test": {"pad": 280, "pen": (14, 30), "height": (110, 230)},
    "pen": {"count": 2000, "pad": 280, "pen": (14, 30), "height": (110, 230)},
    "binary_scan": {"count": 2000, "box": 16, "scale": (4, 10), "margin": (0.1, 0.35)},
    "styles": {"count": 1500, "pad": 280, "pen": (14, 30), "height": (110, 230)},
    "photo_font": {
        "count": 2000, "fonts": HANDWRITING_FONTS, "font_size": (48, 160), "rotate": 8, "paper_size": (1.4, 2.6),
        "paper": (200, 245), "texture": (2, 6), "gradient": (0.05, 0.25), "vignette": (0.0, 0.15),
        "noise": (1.5, 4), "blur": (0.3, 1.2), "jpeg_quality": (55, 92),
    },
}  # fmt: skip


@dataclass
class DigitSet:
    """User-like images of one set and their true digits."""

    name: str
    images: list[UserImage]
    labels: np.ndarray  # (N,) int64
    params: dict[str, Any]


def set_params(name: str, **overrides: Any) -> dict[str, Any]:
    """The generator parameters of a set, with overrides (unknown names refused)."""
    if name not in SET_PARAMS:
        raise ValueError(f"unknown real-digits set {name!r}; choose from {', '.join(SET_NAMES)}")
    unknown = sorted(set(overrides) - set(SET_PARAMS[name]))
    if unknown:
        raise ValueError(f"set {name!r} has no parameter(s) {unknown}; it has {sorted(SET_PARAMS[name])}")
    return {**SET_PARAMS[name], **overrides}


def _fonts(params: Mapping[str, Any]) -> list[Path]:
    fonts = [path for path in handwriting_fonts() if path.name in params["fonts"]]
    if not fonts:
        raise SetUnavailable(
            "photo_font needs handwriting fonts and none is installed: e.g. `apt-get install fonts-dkg-handwriting "
            "fonts-bwht fonts-comic-neue fonts-humor-sans fonts-sjfonts` (any of HANDWRITING_FONTS)."
        )
    return fonts


def unavailable(name: str, data_dir: str | Path | None = None) -> str | None:
    """Why a set cannot be made on this machine, or None when it can."""
    try:
        if name == "usps":
            usps_test(str(data_dir or default_data_dir()))
        elif name == "unipen_test":
            unipen_test(str(data_dir or default_data_dir()))
        elif name == "photo_font":
            _fonts(SET_PARAMS[name])
    except SetUnavailable as error:
        return str(error)
    return None


def set_size(name: str, data_dir: str | Path | None = None, **overrides: Any) -> int:
    """How many images the whole set has: all of USPS's test digits or UNIPEN's test writers' digits, else the `count` parameter."""
    if name == "usps":
        return len(usps_test(str(data_dir or default_data_dir()))[1])
    if name == "unipen_test":
        return len(unipen_test(str(data_dir or default_data_dir())))
    return int(set_params(name, **overrides)["count"])


def make_set(name: str, limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None, **overrides: Any) -> DigitSet:
    """The first `limit` images (all when None) of a set; the same seed and parameters give the same images."""
    params = set_params(name, **overrides)
    data_dir = str(data_dir or default_data_dir())
    size = set_size(name, data_dir, **overrides)
    count = size if limit is None else max(0, min(size, limit))
    if name == "usps":
        values, labels = usps_test(data_dir)
        labels = labels[:count]
        images = [usps_image(values[i], _rng(seed, name, IMAGE, i), params) for i in range(count)]
    elif name == "unipen_test":
        digits = unipen_test(data_dir)[:count]
        labels = np.array([d.label for d in digits], np.int64)
        images = [draw_with_pen(stroke_segments(d.strokes), _rng(seed, name, IMAGE, i), params) for i, d in enumerate(digits)]
    elif name in ("pen", "binary_scan"):
        digits, labels = balanced_mnist(name, range(10), count, seed, data_dir)
        draw = pen_image if name == "pen" else binary_scan_image
        images = [draw(digit, _rng(seed, name, IMAGE, i), params) for i, digit in enumerate(digits)]
    elif name == "styles":
        digits, labels = balanced_mnist(name, (1, 7, 9), count, seed, data_dir, plain_for_style)
        images = [styles_image(d, int(y), _rng(seed, name, IMAGE, i), params) for i, (d, y) in enumerate(zip(digits, labels))]
    else:  # photo_font: every font writes every digit equally often
        fonts = _fonts(params)
        labels = np.arange(count, dtype=np.int64) % 10
        images = [
            photo_font_image(int(y), fonts[(i // 10) % len(fonts)], _rng(seed, name, IMAGE, i), params) for i, y in enumerate(labels)
        ]
    return DigitSet(name, images, np.asarray(labels, np.int64), params)


# ----------------------------------------------------------------------------- preparing, with a cache on disk


@dataclass
class PreparedSet:
    """A set as the model sees it: prepare_image's (N, 1, 28, 28) images; refused images are blank and flagged."""

    name: str
    images: Tensor  # float32 in [0, 1] (uint8 for the MNIST reference)
    labels: Tensor  # (N,) int64
    refused: Tensor  # (N,) bool: prepare_image raised ImageError (NoDigitError included)
    reasons: list[str] = field(default_factory=list)  # the first words of each refusal's message

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int) -> PreparedSet:
        refused_before = int(self.refused[:count].sum())
        return PreparedSet(self.name, self.images[:count], self.labels[:count], self.refused[:count], self.reasons[:refused_before])


def prepare_set(digit_set: DigitSet) -> PreparedSet:
    """Every image of a set through the product's own `prepare_image`."""
    images, refused, reasons = [], [], []
    for image in digit_set.images:
        try:
            images.append(prepare_image(Image.fromarray(image) if isinstance(image, np.ndarray) else image))
            refused.append(False)
        except ImageError as error:  # the user would get "no digit found" or a refusal: a wrong answer
            images.append(torch.zeros(1, 28, 28))
            refused.append(True)
            reasons.append(str(error).split(":")[0])
    stacked = torch.stack(images) if images else torch.zeros(0, 1, 28, 28)
    return PreparedSet(digit_set.name, stacked, torch.from_numpy(digit_set.labels), torch.tensor(refused, dtype=torch.bool), reasons)


def _source_digest(name: str, params: Mapping[str, Any], data_dir: str) -> str:
    """What the set is made from: the USPS file, UNIPEN's test writers, MNIST's test arrays, or the font files."""
    if name == "usps":
        return _digest((Path(data_dir) / "USPS" / "zip.test.gz").read_bytes())
    if name == "unipen_test":
        return _digest(*(part for d in unipen_test(data_dir) for part in (d.writer, str(d.label), *(s.tobytes() for s in d.strokes))))
    if name == "photo_font":
        return _digest(*(part for path in _fonts(params) for part in (path.name, path.read_bytes())))
    images, labels = mnist_test(data_dir)
    return _digest(images.tobytes(), labels.tobytes())


def cache_key(name: str, seed: int = 0, data_dir: str | Path | None = None, **overrides: Any) -> str:
    """A digest of everything a prepared set depends on: parameters, seed, sources, the code making and
    preparing it (this module and lenet/preprocess.py) and the libraries drawing it."""
    from importlib.metadata import version

    params = set_params(name, **overrides)
    data_dir = str(data_dir or default_data_dir())
    code = [Path(module.__file__).read_bytes() for module in (lenet.preprocess, lenet.render, lenet.unipen)] + [Path(__file__).read_bytes()]
    libraries = [f"{package}=={version(package)}" for package in ("pillow", "scipy", "scikit-image", "numpy")]
    described = json.dumps({"name": name, "seed": seed, "params": params, "libraries": libraries}, sort_keys=True, default=list)
    return _digest(described, _source_digest(name, params, data_dir), *code)[:20]


def load_prepared(
    name: str, limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None, **overrides: Any,
) -> PreparedSet:  # fmt: skip
    """A prepared set from the cache, else made, prepared and cached (a cached larger set serves a smaller limit)."""
    key = cache_key(name, seed, data_dir, **overrides)
    folder = Path(cache_dir) if cache_dir is not None else cache_folder("realdigits")
    wanted = None if limit is None else max(0, limit)
    for path in sorted(folder.glob(f"{name}-{key}-*.pt"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
        cached = torch.load(path, weights_only=True)
        if cached["complete"] or (wanted is not None and len(cached["labels"]) >= wanted):
            prepared = PreparedSet(name, cached["images"], cached["labels"], cached["refused"], list(cached["reasons"]))
            return prepared if wanted is None else prepared.head(wanted)
    digit_set = make_set(name, limit, seed, data_dir, **overrides)
    prepared = prepare_set(digit_set)
    complete = len(prepared) == set_size(name, data_dir, **overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key}-{len(prepared)}.pt"
    partial = path.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed: readers never see half a file
    torch.save({"images": prepared.images, "labels": prepared.labels, "refused": prepared.refused,
                "reasons": prepared.reasons, "complete": complete}, partial)  # fmt: skip
    os.replace(partial, path)
    return prepared


def load_sets(
    names: Iterable[str] | None = None, limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None, reference: bool = True, log: Callable[[str], None] | None = None,
) -> dict[str, PreparedSet]:  # fmt: skip
    """Prepared sets by name (all that this machine can make when `names` is None), the unmodified
    MNIST test set first under "mnist" when `reference` (never limited: it is the figure to compare with)."""
    data_dir = str(data_dir or default_data_dir())
    if names is None:
        names = [name for name in SET_NAMES if unavailable(name, data_dir) is None]
    sets: dict[str, PreparedSet] = {}
    if reference:
        images, labels = mnist_test(data_dir)
        count = len(labels)
        sets[REFERENCE] = PreparedSet(REFERENCE, torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), torch.zeros(count, dtype=torch.bool))
    for name in names:
        reason = unavailable(name, data_dir)
        if reason:
            raise SetUnavailable(reason)
        sets[name] = load_prepared(name, limit, seed, data_dir, cache_dir)
        if log:
            log(f"{name}: {len(sets[name])} images, {int(sets[name].refused.sum())} refused by prepare_image")
    return sets


# ----------------------------------------------------------------------------- scoring

UNSURE_GRID = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.01))  # thresholds swept when choosing one


@dataclass
class SetScore:
    """A model's answers on one set: lenet.evaluation's metrics, the confusions, refusals and unsure answers.

    The probabilities have 11 columns: the ten digits, then REFUSED (1 for an image prepare_image
    refused, whose digit columns are 0), so a refusal is scored as a wrong answer by the one metrics
    definition, and shows among the confusions as "3→refused".
    """

    name: str
    evaluation: Evaluation
    unsure_below: float = UNSURE_BELOW

    @property
    def count(self) -> int:
        return len(self.evaluation.labels)

    @property
    def accuracy(self) -> float:
        return self.evaluation.metrics[f"{self.name}/acc"]

    @property
    def f1(self) -> float:
        """Macro F1 over the digits present in the set (styles has only 1s, 7s and 9s)."""
        present = torch.unique(self.evaluation.labels).tolist()
        return float(np.mean([self.evaluation.metrics[f"{self.name}/class_{c}/f1"] for c in present]))

    @property
    def refused(self) -> Tensor:
        return self.evaluation.probs[:, REFUSED] > 0.5

    def unsure(self, threshold: float | None = None) -> Tensor:
        """(N,) bool: answered, but with a top probability under the threshold (default: unsure_below)."""
        threshold = self.unsure_below if threshold is None else threshold
        return ~self.refused & (self.evaluation.probs[:, :REFUSED].max(dim=1).values < threshold)

    def unsure_rate(self, threshold: float | None = None) -> float:
        """Share of all the set's images that get an "unsure" answer."""
        return float(self.unsure(threshold).float().mean()) if self.count else 0.0

    def answered_accuracy(self, threshold: float | None = None) -> float:
        """Accuracy on the images answered with confidence (neither refused nor unsure)."""
        answered = ~self.refused & ~self.unsure(threshold)
        right = self.evaluation.predicted == self.evaluation.labels
        return float(right[answered].float().mean()) if answered.any() else float("nan")

    def confusions(self, top: int = 5) -> list[tuple[str, int]]:
        """The most frequent mistakes as ("true→predicted", count), most frequent first."""
        matrix = self.evaluation.confusion()
        matrix.fill_diagonal_(0)
        pairs = sorted(((int(n), t, p) for (t, p), n in np.ndenumerate(matrix.numpy()) if n), key=lambda x: (-x[0], x[1], x[2]))
        return [(f"{t}→{'refused' if p == REFUSED else p}", n) for n, t, p in pairs[:top]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "accuracy": self.accuracy,
            "macro_f1": self.f1,
            "refused_rate": float(self.refused.float().mean()) if self.count else 0.0,
            "unsure_below": self.unsure_below,
            "unsure_rate": self.unsure_rate(),
            "answered_accuracy": self.answered_accuracy(),
            "top_confusions": dict(self.confusions()),
        }


def score_set(
    name: str, probs: Tensor, labels: Tensor, refused: Tensor | None = None, unsure_below: float = UNSURE_BELOW
) -> SetScore:
    """Score (N, 10) probabilities of a set's prepared images, the refused ones counted wrong."""
    refused = torch.zeros(len(labels), dtype=torch.bool) if refused is None else refused.bool()
    probs = probs.float().cpu() * ~refused[:, None]
    return SetScore(name, score(torch.cat([probs, refused[:, None].float()], dim=1), labels, prefix=f"{name}/"), unsure_below)


def group_accuracy(set_score: SetScore, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per group (e.g. unipen_test's contributors, set_groups): the count and the accuracy of its images."""
    right = (set_score.evaluation.predicted == set_score.evaluation.labels).tolist()
    totals: dict[str, list[int]] = {}
    for group, correct in zip(groups, right):
        totals.setdefault(group, [0, 0])
        totals[group][0] += 1
        totals[group][1] += int(correct)
    return {group: {"count": n, "accuracy": hits / n} for group, (n, hits) in sorted(totals.items())}


def benchmark(model: Any, sets: Mapping[str, PreparedSet], unsure_below: float = UNSURE_BELOW) -> dict[str, SetScore]:
    """Scores of a model (anything with `predict_probs`: load_model, load_ensemble) on each prepared set."""
    return {
        name: score_set(name, model.predict_probs(prepared.images), prepared.labels, prepared.refused, unsure_below)
        for name, prepared in sets.items()
    }


def sweep_thresholds(scores: Mapping[str, SetScore], thresholds: Iterable[float] = UNSURE_GRID) -> list[dict[str, Any]]:
    """For each threshold: per set, the share of unsure answers and the accuracy on the answered ones."""
    return [
        {"threshold": t, **{name: {"unsure_rate": s.unsure_rate(t), "answered_accuracy": s.answered_accuracy(t)} for name, s in scores.items()}}
        for t in thresholds
    ]


def choose_threshold(
    scores: Mapping[str, SetScore], set_name: str = "usps", max_unsure: float = 0.02, thresholds: Iterable[float] = UNSURE_GRID
) -> float | None:
    """The largest threshold that leaves at most `max_unsure` of a set's images unsure (None if even the smallest does not)."""
    allowed = [t for t in thresholds if scores[set_name].unsure_rate(t) <= max_unsure]
    return max(allowed) if allowed else None
