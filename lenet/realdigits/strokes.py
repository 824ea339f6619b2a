"""The strokes of the pen-drawn sets: an MNIST digit's skeleton as line segments, its free ends, and the
style strokes (a flag on a 1, a crossbar on a 7, a curled tail on a 9) that MNIST's writers rarely use."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

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
