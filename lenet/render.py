"""Draw pen trajectories as the images people's digits reach the product in: a drawing on the page's
pad, pencil, marker, a binarised scan, a grey postal scan, a photo of paper.

Every style is a function (segments, rng, params) -> image, seeded by the caller's generator so the
same seed draws the same image; segments are (K, 2, 2) centre-line pieces (start, end) x (row, col)
in any units (a digit is scaled by its own box). The images then go through the product's own
`lenet.preprocess.prepare_array`, as served images do (lenet.renders caches the results for training).

    image = draw("pencil", stroke_segments(digit.strokes), np.random.default_rng(0))
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

# Each style's parameters: ranges are drawn uniformly per image.
STYLE_PARAMS: dict[str, dict[str, Any]] = {
    # The drawing page: 280x280 white pad, black round pen 14-30 px, digit 110-230 px high, anywhere.
    "page": {"pad": 280, "pen": (14, 30), "height": (110, 230)},
    # A felt marker: strokes a fifth of the digit's height, small loops filled.
    "marker": {"pad": 280, "pen": (30, 46), "height": (150, 240)},
    # A pencil or fine ballpoint on grey paper: hair-thin grey strokes, paper grain (preparation thickens them).
    "pencil": {"pad": 280, "pen": (1.2, 3.5), "height": (110, 260), "ink": (30, 130), "paper": (190, 245), "grain": (3, 9)},
    # A scanned form: the digit stretched to fill a 16x16 box (aspect lost), binarised, upscaled blockily.
    "scan": {"box": 16, "pen": (0.08, 0.16), "scale": (3, 9), "margin": (0.1, 0.35)},
    # A postal archive's scan: deslanted, size-normalised into a 16x16 box (the narrow axis stretched part of the
    # way, or all of it), kept in grey levels, upscaled smoothly onto paper with grey ink and noise.
    "grey_scan": {"box": 16, "pen": (0.08, 0.18), "stretch": (0, 1), "scale": (3, 8), "margin": (0.1, 0.5), "paper": (195, 245), "ink": (10, 80), "noise": (2, 6)},
    # A pen digit on paper, photographed: colour, texture, uneven light, blur, JPEG.
    "photo": {
        "pad": 220, "pen": (4, 12), "height": (80, 180), "paper": (195, 245), "texture": (2, 6),
        "gradient": (0.05, 0.3), "vignette": (0.0, 0.15), "noise": (1.5, 4), "blur": (0.3, 1.2), "jpeg_quality": (50, 92),
    },
}  # fmt: skip
STYLES = tuple(STYLE_PARAMS)


def stroke_segments(strokes: Sequence[np.ndarray]) -> np.ndarray:
    """Pen strokes, each (P, 2) (x, y) with y down -> (K, 2, 2) segments in (row, col); a one-point stroke (a dot) is kept."""
    pieces = []
    for stroke in strokes:
        points = stroke[:, ::-1].astype(np.float64)  # (row, col)
        if len(points) == 1:
            points = np.repeat(points, 2, axis=0)
        pieces.append(polyline_segments(points))
    return np.concatenate(pieces)


def polyline_segments(points: np.ndarray) -> np.ndarray:
    """(P, 2) points -> (P-1, 2, 2) segments joining consecutive points."""
    return np.stack([points[:-1], points[1:]], axis=1)


def pen_ink(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """Centre-line segments -> float (pad, pad) ink coverage in [0, 1] of a round pen, anti-aliased as a canvas draws.

    The digit is scaled to a random height and pen width from params["height"] and params["pen"]
    (narrower if it would not fit the pad's width) and placed at a random spot where it fits.
    """
    pad, (low_h, high_h), (low_w, high_w) = params["pad"], params["height"], params["pen"]
    pen, height = rng.uniform(low_w, high_w), rng.uniform(low_h, high_h)
    points = segments.reshape(-1, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = np.maximum(high - low, 1.0)
    room = pad - pen - 2  # the pen's round ends stay on the pad
    scale = min(height / extent[0], room / extent[1])
    size = extent * scale
    corner = pen / 2 + 1 + rng.uniform(0, 1, 2) * (room - size)
    placed = (segments - low) * scale + corner  # (K, 2, 2) in pad pixels
    # Sample each segment densely enough that no pixel of the centre line is skipped.
    steps = int(np.ceil(np.abs(placed[:, 1] - placed[:, 0]).max(initial=0))) + 2
    t = np.linspace(0, 1, steps)[None, :, None]
    samples = np.rint(placed[:, :1] + t * (placed[:, 1:] - placed[:, :1])).astype(int).reshape(-1, 2)
    samples = np.clip(samples, 0, pad - 1)
    # The distance to the centre line is needed only within the pen's reach of it: a window around the
    # digit, not the whole pad (the same ink, 2-3 times faster).
    reach = int(np.ceil(pen / 2 + 1))
    low_corner = np.maximum(samples.min(axis=0) - reach, 0)
    high_corner = np.minimum(samples.max(axis=0) + reach + 1, pad)
    centre = np.zeros(tuple(high_corner - low_corner), bool)
    centre[samples[:, 0] - low_corner[0], samples[:, 1] - low_corner[1]] = True
    ink = np.zeros((pad, pad))
    window = (slice(low_corner[0], high_corner[0]), slice(low_corner[1], high_corner[1]))
    ink[window] = np.clip(pen / 2 + 0.5 - ndimage.distance_transform_edt(~centre), 0, 1)
    return ink


def draw_with_pen(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """Centre-line segments -> uint8 (pad, pad) white pad with the digit in a black round pen, as the drawing page draws."""
    return np.rint(255 * (1 - pen_ink(segments, rng, params))).astype(np.uint8)


def draw_in_pencil(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """Hair-thin grey strokes on grey paper with grain: uint8 (pad, pad)."""
    ink = pen_ink(segments, rng, params)
    paper, lead = rng.uniform(*params["paper"]), rng.uniform(*params["ink"])
    grain = rng.normal(0, rng.uniform(*params["grain"]), ink.shape)
    return np.clip(np.rint(paper - ink * (paper - lead) + grain), 0, 255).astype(np.uint8)


def scan_cells(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """The digit stretched to fill a box x box grid (each axis on its own), binarised: bool (box, box)."""
    return box_ink(segments, rng, params) > 0.5


def box_ink(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """The digit stretched to fill a box x box grid (each axis on its own, or as far as params["stretch"] says):
    float (box, box) ink coverage in [0, 1]."""
    box, detail = params["box"], 8  # drawn at 8x the grid, then averaged into its cells
    side = box * detail
    points = segments.reshape(-1, 2)
    low, extent = points.min(axis=0), np.maximum(np.ptp(points, axis=0), 1e-6)
    pen = rng.uniform(*params["pen"]) * side
    room = side - pen - 2
    square = (segments - low) / extent * room  # both axes fill the box: a 1 becomes a bar
    if "stretch" in params:  # how far the narrow axis is stretched: 0 keeps the digit's aspect, 1 fills the box
        stretch = rng.uniform(*params["stretch"])
        square = square * (stretch + (1 - stretch) * extent / extent.max())  # pen_ink fits the longer axis to the box
    ink = pen_ink(square, rng, {"pad": side, "pen": (pen, pen), "height": (room, room)})
    return ink.reshape(box, detail, box, detail).mean(axis=(1, 3))


def deslant(segments: np.ndarray) -> np.ndarray:
    """Segments sheared along the rows so that the digit's ink has no slant (no row-column covariance),
    as postal scans are normalised. The moments are those of ink spread evenly along each segment."""
    start, end = segments[:, 0], segments[:, 1]  # (K, 2) (row, col)
    weights = np.linalg.norm(end - start, axis=1) + 1e-9
    mean = np.average((start + end) / 2, axis=0, weights=weights)
    a, b = start - mean, end - mean  # a segment's points a + t (b - a), t uniform in 0..1
    row_var = np.average((a[:, 0] ** 2 + a[:, 0] * b[:, 0] + b[:, 0] ** 2) / 3, weights=weights)
    if row_var < 1e-12:  # a flat stroke has no slant to remove
        return segments
    covariance = np.average((2 * a[:, 0] * a[:, 1] + a[:, 0] * b[:, 1] + b[:, 0] * a[:, 1] + 2 * b[:, 0] * b[:, 1]) / 6, weights=weights)
    sheared = segments.copy()
    sheared[..., 1] -= covariance / row_var * (segments[..., 0] - mean[0])
    return sheared


def draw_scan(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """A binarised box scan, upscaled with square cells and an uneven margin: uint8 black on white."""
    return blocky_scan(scan_cells(segments, rng, params), rng, params)


def draw_grey_scan(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """A grey postal scan: deslanted, size-normalised into the box, grey levels, upscaled smoothly: uint8 dark on paper."""
    return smooth_scan(box_ink(deslant(segments), rng, params), rng, params)


def smooth_scan(ink: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """Grey ink cells (0..1, (box, box)) as a scan arrives: upscaled bicubically 3-8x, an uneven margin,
    grey ink on paper, noise: uint8."""
    side = round(ink.shape[0] * rng.uniform(*params["scale"]))
    ink = Image.fromarray(ink.astype(np.float32)).resize((side, side), Image.Resampling.BICUBIC)
    ink = np.clip(np.asarray(ink), 0, 1)
    top, bottom, left, right = (round(side * rng.uniform(*params["margin"])) for _ in range(4))
    ink = np.pad(ink, ((top, bottom), (left, right)))
    paper, ink_level = rng.uniform(*params["paper"]), rng.uniform(*params["ink"])
    image = paper - ink * (paper - ink_level) + rng.normal(0, rng.uniform(*params["noise"]), ink.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def blocky_scan(cells: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> np.ndarray:
    """Binary cells -> uint8 black on white, each cell an integer number of pixels, with a margin."""
    factor = int(rng.integers(params["scale"][0], params["scale"][1] + 1))
    image = np.kron(cells, np.ones((factor, factor), bool))  # nearest-neighbour: the scan's cells stay square
    side = cells.shape[0] * factor
    top, bottom, left, right = (round(side * rng.uniform(*params["margin"])) for _ in range(4))
    image = np.pad(image, ((top, bottom), (left, right)))
    return np.where(image, 0, 255).astype(np.uint8)


def photograph(alpha: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any], scale: float) -> Image.Image:
    """Ink coverage on paper (0..1, (H, W)) photographed: an RGB JPEG with paper colour and texture, a black or
    blue pen, light falling off across the page, noise and blur (`scale`: the writing's size in pixels)."""
    height, width = alpha.shape
    paper_grey = rng.uniform(*params["paper"])
    paper = np.array([paper_grey, paper_grey - rng.uniform(0, 8), paper_grey - rng.uniform(5, 20)], np.float32)
    pen = np.array([rng.uniform(10, 60)] * 3, np.float32)
    if rng.uniform() < 0.4:  # a blue ballpoint rather than black ink
        pen = np.array([rng.uniform(20, 50), rng.uniform(30, 60), rng.uniform(100, 150)], np.float32)
    image = paper * (1 - alpha[..., None]) + pen * alpha[..., None]
    # Paper texture (soft blotches and grain) and light falling off across the page and to its corners.
    blotches = ndimage.gaussian_filter(rng.normal(size=(height, width)), scale / 15)
    image += (blotches / max(blotches.std(), 1e-6) * rng.uniform(*params["texture"]))[..., None]
    rows, cols = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * (cols / width - 0.5) + np.sin(angle) * (rows / height - 0.5)  # -0.7..0.7
    radius = np.hypot(cols / width - 0.5, rows / height - 0.5) / np.sqrt(0.5)  # 0 centre .. 1 corner
    light = 1 - rng.uniform(*params["gradient"]) * (along + 0.71) / 1.42 - rng.uniform(*params["vignette"]) * radius**2
    image = image * light[..., None] + rng.normal(0, rng.uniform(*params["noise"]), (height, width, 1))
    photo = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(*params["blur"]) * scale / 100))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=int(rng.integers(*params["jpeg_quality"])))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def draw_photo(segments: np.ndarray, rng: np.random.Generator, params: Mapping[str, Any]) -> Image.Image:
    """A pen digit on paper, photographed."""
    alpha = pen_ink(segments, rng, params)
    return photograph(alpha, rng, params, scale=float(np.mean(params["height"])))


DRAW = {
    "page": draw_with_pen, "marker": draw_with_pen, "pencil": draw_in_pencil, "scan": draw_scan, "grey_scan": draw_grey_scan,
    "photo": draw_photo,
}  # fmt: skip


def draw(style: str, segments: np.ndarray, rng: np.random.Generator, **overrides: Any) -> np.ndarray | Image.Image:
    """One image of `segments` in a style of STYLES (its STYLE_PARAMS, with overrides)."""
    if style not in STYLE_PARAMS:
        raise ValueError(f"unknown drawing style {style!r}; choose from {', '.join(STYLES)}")
    return DRAW[style](segments, rng, {**STYLE_PARAMS[style], **overrides})
