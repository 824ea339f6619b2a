"""The real-digit sets: each one's generator parameters, how one image of it is made, and a whole set
made deterministically (seeded, one random stream per image) from the sources on this machine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lenet.evaluation import default_data_dir
from lenet.realdigits.sources import (
    HANDWRITING_FONTS, IMAGE, SetUnavailable, balanced_mnist, fonts_for, stream, unipen_test, usps_test,
)  # fmt: skip
from lenet.realdigits.strokes import plain_for_style, skeleton, skeleton_segments, style_stroke
from lenet.render import blocky_scan, draw_with_pen, photograph, polyline_segments, smooth_scan, stroke_segments

SET_NAMES = ("usps", "unipen_test", "pen", "binary_scan", "styles", "photo_font")
UserImage = np.ndarray | Image.Image  # uint8 grey (H, W), or a PIL image (photographs are RGB)

# Each set's generator parameters (ranges are drawn uniformly per image). They are part of the cache key.
SKELETON_SETS = ("pen", "styles")  # the sets drawn along MNIST digits' skeletons (lenet.realdigits.strokes)
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


# ----------------------------------------------------------------------------- one image of each set


def usps_image(values: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """A USPS digit (16x16, -1..1) as a scan arrives: upscaled 3-8x, an uneven margin, grey ink on paper, noise."""
    return smooth_scan((values + 1) / 2, rng, params)


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


# ----------------------------------------------------------------------------- a whole set


def unavailable(name: str, data_dir: str | Path | None = None) -> str | None:
    """Why a set cannot be made on this machine, or None when it can."""
    if name in SKELETON_SETS:  # drawn along MNIST digits' skeletons (scikit-image)
        from lenet.extras import missing_extra

        missing = missing_extra("bench", f"the {name} set")
        if missing:
            return missing
    try:
        if name == "usps":
            usps_test(str(data_dir or default_data_dir()))
        elif name == "unipen_test":
            unipen_test(str(data_dir or default_data_dir()))
        elif name == "photo_font":
            fonts_for(SET_PARAMS[name])
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
        images = [usps_image(values[i], stream(seed, name, IMAGE, i), params) for i in range(count)]
    elif name == "unipen_test":
        digits = unipen_test(data_dir)[:count]
        labels = np.array([d.label for d in digits], np.int64)
        images = [draw_with_pen(stroke_segments(d.strokes), stream(seed, name, IMAGE, i), params) for i, d in enumerate(digits)]
    elif name in ("pen", "binary_scan"):
        digits, labels = balanced_mnist(name, range(10), count, seed, data_dir)
        draw = pen_image if name == "pen" else binary_scan_image
        images = [draw(digit, stream(seed, name, IMAGE, i), params) for i, digit in enumerate(digits)]
    elif name == "styles":
        digits, labels = balanced_mnist(name, (1, 7, 9), count, seed, data_dir, plain_for_style)
        images = [styles_image(d, int(y), stream(seed, name, IMAGE, i), params) for i, (d, y) in enumerate(zip(digits, labels))]
    else:  # photo_font: every font writes every digit equally often
        fonts = fonts_for(params)
        labels = np.arange(count, dtype=np.int64) % 10
        images = [
            photo_font_image(int(y), fonts[(i // 10) % len(fonts)], stream(seed, name, IMAGE, i), params) for i, y in enumerate(labels)
        ]
    return DigitSet(name, images, np.asarray(labels, np.int64), params)
