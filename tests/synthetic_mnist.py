"""A stand-in for MNIST the fast tests train and predict on: printed digits, jittered, in MNIST's own files.

The files are full size (60,000 and 10,000 images in torchvision's layout), so lenet.datafiles
reads and checks them exactly as it reads MNIST. Each digit is brought into MNIST's geometry (ink
fitted into a 20x20 box, centred by mass in 28x28) by the product's own preprocessing, as a user's
picture would be. Drawing 70,000 digits would take a minute, so a few thousand are drawn and
repeated; the test split is drawn apart from the training split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lenet.datafiles import SPLITS, raw_folder
from lenet.preprocess import prepare_array

DRAWN = {"train": 2_000, "test": 1_000}  # distinct digits per split (then repeated to the split's size)
SEEDS = {"train": 0, "test": 1}
CANVAS = 96  # the digit is drawn on a square this big, then prepared into 28x28
IDX_MAGIC = {3: 0x803, 1: 0x801}  # images (N, 28, 28), labels (N,)


def draw_digit(label: int, rng: np.random.Generator, font: ImageFont.FreeTypeFont) -> np.ndarray:
    """One printed digit with a random pen width, slant, rotation and aspect: uint8 (28, 28), light on black."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    pen = int(rng.integers(0, 3))  # pixels added around the font's own strokes
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), str(label), fill=255, font=font, anchor="mm", stroke_width=pen, stroke_fill=255)
    angle, shear = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(-0.3, 0.3)
    sx, sy = rng.uniform(0.75, 1.25), rng.uniform(0.85, 1.15)
    a, b = np.cos(angle) / sx, (np.sin(angle) + shear) / sx  # output -> input, about the centre
    d, e = -np.sin(angle) / sy, np.cos(angle) / sy
    centre = CANVAS / 2
    coefficients = (a, b, centre - a * centre - b * centre, d, e, centre - d * centre - e * centre)
    warped = canvas.transform(canvas.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    return np.round(255 * prepare_array(warped)).astype(np.uint8)


def draw_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and labels (N,) of one split at MNIST's size, classes balanced."""
    rng = np.random.default_rng(SEEDS[split])
    font = ImageFont.load_default(size=56)
    labels = np.arange(DRAWN[split]) % 10
    drawn = np.stack([draw_digit(int(label), rng, font) for label in labels])
    count = SPLITS[split][2]
    order = rng.permutation(count) % DRAWN[split]  # every drawn digit equally often, in a shuffled order
    return drawn[order], labels[order].astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST's: magic, big-endian dimensions, then the uint8 values."""
    header = IDX_MAGIC[array.ndim].to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_mnist(data_dir: Path) -> Path:
    """Writes the four files into <data_dir>/MNIST/raw/ and returns data_dir."""
    raw = raw_folder(data_dir, "mnist")
    raw.mkdir(parents=True, exist_ok=True)
    for split, (images_name, labels_name, _) in SPLITS.items():
        images, labels = draw_split(split)
        write_idx(raw / images_name, images)
        write_idx(raw / labels_name, labels)
    return data_dir
