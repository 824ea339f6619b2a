"""Turn any image of one handwritten digit into the 28x28 MNIST-style tensor the model was trained on.

MNIST was made by fitting each digit (light ink on black) into a 20x20 box, aspect ratio kept, and
placing that box in a 28x28 field so the centre of mass lands on the centre. A photo, a scan or a
canvas drawing only gets MNIST-like accuracy when prepared the same way, so this one function,
`prepare_image`, serves the predict CLI, the REST API and the drawing page:

    open (size and pixel limits) -> grey levels in [0, 1] (alpha composited) -> ink made light on
    black -> cropped to the ink -> background and specks removed (thick strokes: decided on a copy
    shrunk to the digit's scale) -> strokes thickened when too thin -> longer side scaled to 20 px ->
    placed in 28x28 by centre of mass.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from lenet.geometry import DIGIT_BOX, IMAGE_SIZE

if TYPE_CHECKING:
    import torch

MAX_PIXELS = 50_000_000  # refuse larger images (decompression bombs); a 48 MP phone photo still fits
WORK_SIDE = 1024  # larger images are shrunk first: a digit needs no more to end up 20 px high
BAND_BLOCKS = 64  # large images are shrunk a band of this many output rows at a time (bounded extra memory)
MIN_CONTRAST = 0.15  # ink must differ from the background by this much (of full scale) to count
INK_LEVEL = 0.5  # a pixel is ink when it is at least half as bright as the brightest ink
MIN_PART = 0.1  # ink blobs under this share of the largest blob's mass are specks, not strokes
MNIST_STROKE = 2.6  # median stroke width of MNIST test digits, in pixels of the 20 px box
THIN_STROKE = 0.4  # strokes under this share of MNIST_STROKE (about 1 px in 20) are thickened to it
MIN_SIDE = 8  # smaller images cannot hold a readable digit
LIGHT_WINDOW = 0.25  # strokes are narrower than this share of the image side; lighting varies more slowly
LIGHT_GRID = 32  # the page's lighting is estimated on a copy this many pixels a side, at most
MIN_SOLID_SHARE = 0.1  # ink with under this share of its pixels inside solid strokes ...
MAX_INK_SHARE = 0.2  # ... covering more of the image than this (MNIST: 0 of 10,000 digits) ...
MAX_INK_PARTS = 20  # ... or in more separate parts than this (MNIST: at most 8) is noise, not strokes
WORK_EXTENT = 64  # specks and soft edges are found on a copy shrunk while the ink's box keeps this many pixels ...
MIN_WORK_STROKE = 4  # ... and its strokes this many: thin pen lines in a photo are never shrunk away

ImageSource = str | Path | bytes | bytearray | Image.Image


class ImageError(ValueError):
    """An image that cannot be read or used; the message names the problem and the fix."""


class ImageTooLargeError(ImageError):
    """An image over the byte or pixel limit."""


class NoDigitError(ImageError):
    """A readable image without any ink: blank, or too faint to tell ink from background."""


# ----------------------------------------------------------------------------- reading the image


def open_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A decoded PIL image (first frame, EXIF rotation applied) from a path, bytes or image.

    JPEGs larger than needed are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's own reduced decoding),
    so a 48 MP photo costs about as much memory as a 3 MP one.
    """
    if isinstance(source, Image.Image):
        image, name = source, "the image"
    else:
        if isinstance(source, (str, Path)):
            name = str(source)
            try:
                data = Path(source).read_bytes()
            except OSError as error:
                raise ImageError(f"{name} cannot be read ({error.strerror or error}): check the path.") from error
        else:
            data, name = bytes(source), "the uploaded data"
        if not data:
            raise ImageError(f"{name} is empty (0 bytes): send the bytes of a PNG, JPEG or other image file.")
        try:
            image = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as error:  # Pillow's own limit, far above any real photo
            raise ImageTooLargeError(f"{name} has too many pixels to decode safely ({error}).") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ImageError(
                f"{name} is not an image file Pillow can read ({type(error).__name__}): send a PNG, JPEG, BMP, "
                "GIF, WebP or TIFF file."
            ) from error
    width, height = image.size
    if width * height > max_pixels:  # checked from the header, before any pixel is decoded
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}: "
            "crop or shrink it (a digit needs only a few hundred pixels a side)."
        )
    try:
        image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
        scale = _reduction(image.size)
        if scale >= 2 and image.format == "JPEG":
            image.draft(image.mode, (width // scale, height // scale))  # at least WORK_SIDE on the longer side
        image.load()
        # Phone photos are stored sideways with an EXIF rotation. Rotating in place spares a second
        # full-size copy; an image the caller passed in is left as it was.
        if isinstance(source, Image.Image):
            return ImageOps.exif_transpose(image)
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(
            f"{name} is damaged or truncated and cannot be decoded ({error}): save or upload it again."
        ) from error


def grey_levels(image: Image.Image) -> np.ndarray:
    """Any mode -> float32 (H, W) grey levels in [0, 1], transparency composited, large images shrunk."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _high_depth_grey(image)
    mode = image.mode
    if mode in ("P", "PA"):  # palette indices cannot be averaged: their colours can
        mode = "RGBA" if "transparency" in image.info or mode == "PA" else "RGB"
    elif mode == "1":
        mode = "L"
    factor = _reduction(image.size)
    if factor > 1:
        image = _reduce(image, factor, mode)
    elif mode != image.mode:
        image = image.convert(mode)
    if image.mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert(image.mode[:-1] + "A")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV
        image = image.convert("RGB")
    alpha = np.asarray(image.getchannel("A"), np.float32) / 255 if image.mode in ("LA", "RGBA") else None
    grey = np.asarray(image if image.mode == "L" else image.convert("L"), np.float32)  # ITU-R 601 luma, as Pillow computes it
    grey *= 1 / 255
    if alpha is None or alpha.min() == 1:
        return grey
    # Put the visible strokes on the backdrop they contrast with: dark ink on white, light ink on black.
    visible_ink = float((grey * alpha).sum() / max(alpha.sum(), 1e-6))
    backdrop = 1.0 if visible_ink < 0.5 else 0.0
    return grey * alpha + backdrop * (1 - alpha)


def _high_depth_grey(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer and float images: shrunk, then scaled by their bit depth (floats by their range)."""
    # Averaged in float64, a band of rows at a time: Pillow cannot reduce 16-bit images, its float
    # sums overflow near float32's limit, and numpy would copy a whole 16-bit image twice.
    factor, (width, height) = _reduction(image.size), image.size
    band = BAND_BLOCKS * factor
    values = np.concatenate(
        [_block_mean(np.asarray(image.crop((0, top, width, min(top + band, height))), np.float64), factor)
         for top in range(0, height, band)]
    )
    if not np.isfinite(values).all():  # NaN or infinity survive the averaging above, so none is missed
        raise ImageError(
            "the image holds NaN or infinite pixel values (a float TIFF?): replace them with finite values, "
            "or save the image as an 8-bit PNG."
        )
    if image.mode == "F":
        low, high = float(values.min()), float(values.max())
        scale = (0.0, 1.0) if low >= 0 and high <= 1 else (low, max(high - low, 1e-6))
        return ((values - scale[0]) / scale[1]).astype(np.float32)
    return np.clip(values / 65535, 0, 1).astype(np.float32)  # I;16 and the I mode Pillow opens 16-bit PNGs as


def _block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Means of factor x factor blocks (those at the right and bottom edges over the pixels they hold)."""
    if factor == 1:
        return values
    starts = [np.arange(0, size, factor) for size in values.shape]
    sums = np.add.reduceat(np.add.reduceat(values, starts[0], axis=0), starts[1], axis=1)
    counts = [np.diff(np.append(start, size)) for start, size in zip(starts, values.shape)]
    return sums / np.outer(*counts)


def _reduce(image: Image.Image, factor: int, mode: str) -> Image.Image:
    """`image` in `mode`, box-averaged by `factor`, a band of rows at a time.

    Converting a palette image, or reducing one with alpha (Pillow premultiplies it first), would
    otherwise make a second full-size copy: 200 MB more for a 7000x7000 transparent PNG.
    """
    width, height = image.size
    reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
    band = BAND_BLOCKS * factor  # rows: a multiple of the factor, so the bands' blocks are the whole image's
    for top in range(0, height, band):
        part = image.crop((0, top, width, min(top + band, height)))
        reduced.paste((part if part.mode == mode else part.convert(mode)).reduce(factor), (0, top // factor))
    return reduced


def _reduction(size: tuple[int, int]) -> int:
    """The whole-number factor that brings the longer side to at most WORK_SIDE (a digit needs no more)."""
    return -(-max(size) // WORK_SIDE)


# ----------------------------------------------------------------------------- finding the ink


def find_ink(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels -> (ink intensity in [0, 1] on a zero background, boolean stroke mask).

    Raises NoDigitError when nothing stands out from the background: a blank page, however unevenly
    lit, an image too small to hold a digit, or noise and texture without strokes.
    """
    _refuse_too_small(grey)
    # A 3x3 average (on images larger than MNIST's) only steers which way the ink goes and how
    # strong it is, so single noisy pixels cannot pass for ink; the pixels kept are unsmoothed. The
    # windows centred on every other pixel still cover the image, at a quarter of the cost.
    smooth = _mean_3x3_every_other(grey) if min(grey.shape) >= 2 * IMAGE_SIZE else grey
    paper = find_paper(smooth)
    contrast = _refuse_blank(paper.light_ink(smooth), paper.background)
    # Everything below works on the box holding all pixels on the ink's side of the paper (outside it
    # the ink is 0): most of a drawing pad is blank.
    rows, cols = _bounding_box(paper.ink_side(grey))
    ink = np.clip((paper.light_ink(grey[rows, cols]) - paper.background) / contrast, 0, 1)
    mask = ink >= INK_LEVEL
    inner = int(_erode(mask).sum())
    ink_pixels = max(int(mask.sum()), 1)
    _refuse_scattered(mask, inner, ink_pixels, grey.size)
    strokes, near_strokes = _strokes_and_soft_edges(ink, mask, inner, ink_pixels, (rows.start, cols.start))
    whole_ink, whole_strokes = np.zeros(grey.shape, ink.dtype), np.zeros(grey.shape, bool)
    whole_ink[rows, cols], whole_strokes[rows, cols] = ink * near_strokes, strokes
    return whole_ink, whole_strokes


@dataclass(frozen=True)
class Paper:
    """The page under the ink: its grey level, and which way the ink goes from it."""

    level: float  # in the image's own grey levels
    dark_ink: bool  # dark ink on light paper, flipped to MNIST's light ink on black

    @property
    def background(self) -> float:
        """The paper's level once the ink is light on black."""
        return 1 - self.level if self.dark_ink else self.level

    def light_ink(self, grey: np.ndarray) -> np.ndarray:
        """Grey levels in MNIST's polarity, light ink on a dark page."""
        return 1 - grey if self.dark_ink else grey

    def ink_side(self, grey: np.ndarray) -> np.ndarray:
        """The pixels on the ink's side of the paper's level."""
        return grey < self.level if self.dark_ink else grey > self.level


def find_paper(smooth: np.ndarray) -> Paper:
    """The paper is the median of a ring along the edges (the digit rarely touches them; paper does),
    and the ink is dark when the darkest pixel lies further from it than the lightest."""
    ring = max(1, round(0.02 * min(smooth.shape)))
    border = np.concatenate(
        [smooth[:ring].ravel(), smooth[-ring:].ravel(), smooth[:, :ring].ravel(), smooth[:, -ring:].ravel()]
    )
    level = float(np.median(border))
    return Paper(level, dark_ink=level - float(smooth.min()) > float(smooth.max()) - level)


def _refuse_too_small(grey: np.ndarray) -> None:
    if min(grey.shape) < MIN_SIDE:
        raise NoDigitError(
            f"no digit found: the image is {grey.shape[1]}x{grey.shape[0]} pixels, too small to hold a digit. "
            f"Send an image at least {MIN_SIDE}x{MIN_SIDE} pixels (a few hundred a side is best)."
        )


def _refuse_blank(light_ink: np.ndarray, background: float) -> float:
    """The ink's contrast over the background (light ink on black); refused when too faint, or when
    only the page's light varies."""
    contrast = float(light_ink.max()) - background
    if contrast < MIN_CONTRAST:
        raise NoDigitError(
            f"no digit found: the image is blank or too faint (ink differs from the background by "
            f"{contrast:.0%} of full scale, at least {MIN_CONTRAST:.0%} needed). Draw or photograph a "
            "digit with clear contrast."
        )
    if _local_contrast(light_ink) < MIN_CONTRAST:
        raise NoDigitError(
            "no digit found: the image holds no strokes, only light that changes across the page (a shadow, "
            "vignetting or a gradient). Draw or photograph a digit with clear contrast."
        )
    return contrast


def _refuse_scattered(mask: np.ndarray, inner: int, ink_pixels: int, image_pixels: int) -> None:
    """Ink with hardly any solid strokes is scattered specks, or a thin line: specks when it covers
    much of the image or falls into many parts."""
    if inner / ink_pixels >= MIN_SOLID_SHARE:
        return
    parts = ndimage.label(mask, structure=np.ones((3, 3)))[1]
    ink_share = ink_pixels / image_pixels
    if ink_share > MAX_INK_SHARE or parts > MAX_INK_PARTS:
        raise NoDigitError(
            f"no digit found: the ink is scattered specks ({parts} parts over {ink_share:.0%} of the image), not "
            "strokes: noise or texture. Photograph one digit on plain paper, or draw it on the pad."
        )


def _strokes_and_soft_edges(
    ink: np.ndarray, mask: np.ndarray, inner: int, ink_pixels: int, origin: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(the ink mask without specks, the pixels near enough to those strokes to be their soft
    anti-aliased edge) for an ink crop whose top-left pixel is `origin` in the image.

    Both are decided on a copy shrunk by a whole factor when the strokes are thick enough to survive
    it (a drawing pad, a marker): 5 to 10 times cheaper on a 280x280 pad. The ink itself keeps every pixel.
    """
    factor = min(int(max(ink.shape) // WORK_EXTENT), int(_band_width(ink_pixels, inner) // MIN_WORK_STROKE))
    if factor > 1:
        offset = (origin[0] % factor, origin[1] % factor)  # the image's grid of blocks
        small = _shrink(ink, factor, offset)
        small_mask = small >= INK_LEVEL
        if small_mask.any():  # else too little ink survives the shrinking: decided at full size
            kept = _strokes(*ndimage.label(small_mask, structure=np.ones((3, 3))), small)
            strokes = mask & _enlarge(_dilate(kept, steps=1), factor, offset, ink.shape)
            return strokes, _enlarge(_soft_edges(kept), factor, offset, ink.shape)
    strokes = _strokes(*ndimage.label(mask, structure=np.ones((3, 3))), ink)
    return strokes, _soft_edges(strokes)


def _soft_edges(strokes: np.ndarray) -> np.ndarray:
    """The strokes grown by the reach of their anti-aliased edge: a pixel per 20 of the digit's extent."""
    return _dilate(strokes, steps=max(1, round(_extent(strokes) / DIGIT_BOX)))


def _mean_3x3_every_other(grey: np.ndarray) -> np.ndarray:
    """scipy.ndimage.uniform_filter(grey, size=3)[1:-1:2, 1:-1:2]: the 3x3 means centred on odd rows
    and columns, whose windows cover every pixel (but an even-sized image's last row or column)."""
    rows = grey[0:-2:2] + grey[1:-1:2] + grey[2::2]
    means = rows[:, 0:-2:2] + rows[:, 1:-1:2] + rows[:, 2::2]
    means *= 1 / 9
    return means


def _shrink(ink: np.ndarray, factor: int, offset: tuple[int, int]) -> np.ndarray:
    """Means of factor x factor blocks of an ink crop that starts `offset` pixels into its first block;
    beyond the crop the ink is 0."""
    height, width = ink.shape[0] + offset[0], ink.shape[1] + offset[1]
    padded = np.zeros((-(-height // factor) * factor, -(-width // factor) * factor), np.float32)
    padded[offset[0] : height, offset[1] : width] = ink
    blocks = _reduce_blocks(padded, factor, np.add)
    blocks *= 1 / factor**2
    return blocks


def _reduce_blocks(array: np.ndarray, factor: int, combine: np.ufunc) -> np.ndarray:
    """`combine` (np.add, np.maximum) over the factor x factor blocks of an array whose sides are
    multiples of factor, as a fold over strided slices: 6 to 20 times faster than reshape + reduce here."""
    columns = array[:, 0::factor].copy()
    for i in range(1, factor):
        combine(columns, array[:, i::factor], out=columns)
    blocks = columns[0::factor].copy()
    for i in range(1, factor):
        combine(blocks, columns[i::factor], out=blocks)
    return blocks


def _enlarge(mask: np.ndarray, factor: int, offset: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """A mask of factor x factor blocks back at full size: the inverse of _shrink's grid, cropped to `shape`."""
    full = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    return full[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]]


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The smallest (rows, columns) slices holding every True pixel of a mask with at least one."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _local_contrast(light_ink: np.ndarray) -> float:
    """How far the brightest ink stands out from the paper right around it (0..1).

    The paper is a grey-level opening with a window wider than any stroke: it removes the strokes
    and keeps the page's slowly varying light, so a blank page lit unevenly has no local contrast.
    Computed on a copy at most LIGHT_GRID px a side whose pixels keep the brightest value of their block,
    so that a thin pen line in a large photo keeps its full contrast.
    """
    factor = max(1, -(-max(light_ink.shape) // LIGHT_GRID))
    rows, cols = (light_ink.shape[0] // factor) * factor, (light_ink.shape[1] // factor) * factor
    small = _reduce_blocks(light_ink[:rows, :cols], factor, np.maximum)
    window = max(3, round(LIGHT_WINDOW * max(small.shape)))
    paper = ndimage.grey_opening(small, size=(window, window), mode="nearest")
    return float((small - ndimage.uniform_filter(paper, size=window, mode="nearest")).max())


# Erosion and dilation by the 3x3 cross, outside the image counting as background: scipy.ndimage's
# binary_erosion and binary_dilation(iterations=steps) exactly, as shifted ANDs and ORs of whole
# arrays, 5 to 10 times faster on a drawing.


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return inner


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def _strokes(labels: np.ndarray, count: int, ink: np.ndarray) -> np.ndarray:
    """The ink mask without specks: of its 8-connected blobs (`labels`, 1..count), those with at least
    MIN_PART of the largest one's mass."""
    if count == 1:  # one blob, as most drawings are: nothing to drop
        return labels > 0
    masses = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)  # ink per blob, 0 first
    keep = masses >= MIN_PART * masses[1:].max()
    keep[0] = False  # the background
    return keep[labels]


def _extent(mask: np.ndarray) -> int:
    """The longer side of a mask's bounding box."""
    rows, cols = _bounding_box(mask)
    return max(rows.stop - rows.start, cols.stop - cols.start)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean width of the strokes of a mask."""
    return _band_width(float(mask.sum()), float(_erode(mask).sum()))


def _band_width(area: float, inner: float) -> float:
    """Mean width of strokes covering `area` pixels, `inner` of them off their boundary: area over half
    the boundary length (a stroke is a long thin band)."""
    return 2 * area / max(area - inner, 1.0)


# ----------------------------------------------------------------------------- MNIST's geometry


def mnist_field(ink: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """Ink on black -> (28, 28): cropped to the strokes, thickened if thin, 20 px box, centred by mass."""
    rows, cols = _bounding_box(strokes)
    top, bottom, left, right = rows.start, rows.stop, cols.start, cols.stop
    extent = max(bottom - top, right - left)

    # Pen strokes in a photo are far thinner, relative to the digit, than MNIST's: thicken them to
    # MNIST's width, or they fade to a faint trace when the digit shrinks to 20 px.
    wanted_width = MNIST_STROKE * extent / DIGIT_BOX
    width = _stroke_width(strokes[top:bottom, left:right])
    if width < THIN_STROKE * wanted_width:
        grow = (wanted_width - width) / 2
        distance = ndimage.distance_transform_edt(~strokes)  # pixels from the nearest stroke
        ink = np.maximum(ink, np.clip(grow + 1 - distance, 0, 1))  # anti-aliased outer edge
        pad = int(np.ceil(grow))
        top, left = max(top - pad, 0), max(left - pad, 0)
        bottom, right = min(bottom + pad, ink.shape[0]), min(right + pad, ink.shape[1])
        extent = max(bottom - top, right - left)

    digit = ink[top:bottom, left:right]
    scale = DIGIT_BOX / extent
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    # Shrinking averages each output pixel's area (anti-aliasing, as rendering into a 20 px box would).
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    digit = np.asarray(Image.fromarray(digit.astype(np.float32)).resize(size, resample))
    digit = np.clip(digit, 0, 1)
    digit = digit / max(float(digit.max()), 1e-6)  # MNIST's strokes are saturated (255)

    # Centre of mass onto the field's centre (MNIST's test digits: (14.0, 14.0) in pixel indices).
    weights = digit.astype(np.float64)  # as scipy.ndimage.center_of_mass sums, 3 times faster on 20x20
    mass = float(weights.sum())
    com_row = float(weights.sum(axis=1) @ np.arange(digit.shape[0])) / mass
    com_col = float(weights.sum(axis=0) @ np.arange(digit.shape[1])) / mass
    height, width = digit.shape
    top = int(np.clip(round(IMAGE_SIZE / 2 - com_row), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(IMAGE_SIZE / 2 - com_col), 0, IMAGE_SIZE - width))
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    field[top : top + height, left : left + width] = digit
    return field


def prepare_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Path, bytes or PIL image of one digit -> (1, 28, 28) float32 in [0, 1], light ink on black.

    Raises ImageError for unreadable images and NoDigitError when there is no ink to read.
    """
    import torch  # here, not above: lenet-predict's image workers run prepare_array without it

    return torch.from_numpy(prepare_array(source, max_pixels)).unsqueeze(0)  # (1, 28, 28)


def prepare_array(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """prepare_image's answer as a (28, 28) numpy array, for processes that have not imported torch."""
    ink, strokes = find_ink(grey_levels(open_image(source, max_pixels)))
    return mnist_field(ink, strokes)
