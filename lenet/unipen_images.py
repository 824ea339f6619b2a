"""UNIPEN's writers as the model sees people's digits: each pen digit drawn in a style of lenet.render
and prepared by the product's own `prepare_array`, as a served image is; cached on disk.

    part = load_renders("data", "train", renders=4, styles={"page": 0.5, "scan": 0.5})
    part.images.shape, part.labels.shape        # (N, 4, 1, 28, 28) uint8, (N,)

Training draws a different render of each digit each epoch (lenet.data); validation and the
real-digits benchmark's `unipen_test` use one drawing as the page draws. Renders are made once per
(part, styles, seed, code) in worker processes (a few minutes for the training writers on 2 cores)
and cached under the cache folder (lenet.cache), so later runs load them in a second.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lenet.cache import cache_folder
from lenet.preprocess import ImageError, prepare_array
from lenet.render import STYLE_PARAMS, STYLES, draw, stroke_segments
from lenet.unipen import SPLIT_SEED, PenDigit, UnipenError, read_unipen, writer_split

PAGE = {"page": 1.0}  # as the drawing page draws: validation and the held-out writers
PARTS = ("train", "val", "test")


@dataclass
class RenderedPart:
    """One part of the writer split, each digit drawn `renders` times and prepared."""

    images: Tensor  # (N, R, 1, 28, 28) uint8, light ink on black
    labels: Tensor  # (N,) int64
    writers: list[str]  # (N,) "<contributor>/<writer id>"
    styles: list[list[str]]  # (N, R) the style each render was drawn in

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def contributors(self) -> list[str]:
        return [writer.split("/", 1)[0] for writer in self.writers]


@lru_cache(maxsize=2)
def split_digits(data_dir: str, seed: int = SPLIT_SEED) -> dict[str, list[PenDigit]]:
    """The writer split of UNIPEN's digits (read once per process)."""
    return writer_split(read_unipen(data_dir), seed)


def check_styles(styles: Mapping[str, float]) -> dict[str, float]:
    """Style weights, checked: known names, non-negative numbers, not all zero."""
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        raise ValueError(f"unknown drawing style(s) {unknown}; choose from {', '.join(STYLES)}")
    weights = {name: float(weight) for name, weight in styles.items()}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"style weights {weights} must be non-negative with a positive sum, e.g. {{page: 0.5, scan: 0.5}}")
    return weights


def style_of(styles: Mapping[str, float], seed: int, index: int, render: int) -> str:
    """The style of one render: drawn by weight from its own stream, so it does not depend on the other renders."""
    names = sorted(styles)
    weights = np.array([styles[n] for n in names]) / sum(styles.values())
    return names[int(np.random.default_rng([seed, index, render, 1]).choice(len(names), p=weights))]


def render_digit(digit: PenDigit, style: str, rng: np.random.Generator) -> np.ndarray | None:
    """One prepared (28, 28) uint8 image of a pen digit in a style; None when preparation refuses it."""
    image = draw(style, stroke_segments(digit.strokes), rng)
    try:
        prepared = prepare_array(image if isinstance(image, Image.Image) else Image.fromarray(image))
    except ImageError:
        return None
    return np.rint(prepared * 255).astype(np.uint8)


def _render_many(job: tuple[Sequence[PenDigit], Sequence[int], int, Mapping[str, float], int]) -> tuple[np.ndarray, list[list[str]]]:
    """Worker: every render of a chunk of digits. A render that preparation refuses (a pencil line too faint,
    say) is drawn again from the next stream, at last with the page's pen; a digit even that cannot draw is
    damaged data."""
    digits, indices, renders, styles, seed = job
    images = np.zeros((len(digits), renders, 28, 28), np.uint8)
    chosen = []
    for row, (digit, index) in enumerate(zip(digits, indices)):
        names = []
        for render in range(renders):
            style = style_of(styles, seed, index, render)
            for attempt, drawn_as in enumerate([style] * 4 + ["page"]):
                image = render_digit(digit, drawn_as, np.random.default_rng([seed, index, render, 0, attempt]))
                if image is not None:
                    break
            if image is None:
                raise UnipenError(f"{digit.source}: no drawing of this digit holds readable ink: the segment is damaged.")
            images[row, render] = image
            names.append(drawn_as)
        chosen.append(names)
    return images, chosen


def render_all(
    digits: Sequence[PenDigit], renders: int, styles: Mapping[str, float], seed: int, workers: int | None = None,
    indices: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[list[str]]]:  # fmt: skip
    """(N, R, 28, 28) uint8 prepared renders of `digits` and their styles; digit i's streams are seeded by
    indices[i] (its place in its part), so any subset renders the same images it does within the whole."""
    indices = list(range(len(digits))) if indices is None else list(indices)
    workers = max(1, min(workers or os.cpu_count() or 1, len(digits) // 64 or 1))
    chunk = max(1, -(-len(digits) // (workers * 8)))
    jobs = [(digits[i : i + chunk], indices[i : i + chunk], renders, dict(styles), seed) for i in range(0, len(digits), chunk)]
    if workers == 1:
        results = [_render_many(job) for job in jobs]
    else:  # fork: the workers need no torch, and inherit the digits instead of unpickling them
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_render_many, jobs)
    images = np.concatenate([r[0] for r in results]) if results else np.zeros((0, renders, 28, 28), np.uint8)
    return images, [names for r in results for names in r[1]]


def _cache_key(data_dir: str, part: str, renders: int, styles: Mapping[str, float], seed: int, limit: int | None) -> str:
    """Everything the renders depend on: the UNIPEN files, the split, the styles, the seed and the code."""
    hasher = hashlib.sha256()
    root = Path(data_dir) / "UNIPEN"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        hasher.update(f"{path.relative_to(root)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    modules = ("unipen", "render", "preprocess", "unipen_images")
    for name in modules:
        hasher.update((Path(__file__).parent / f"{name}.py").read_bytes())
    libraries = [f"{package}=={version(package)}" for package in ("pillow", "scipy", "numpy")]
    params = {name: STYLE_PARAMS[name] for name in styles}
    described = {"part": part, "renders": renders, "styles": dict(styles), "seed": seed, "limit": limit, "params": params, "libraries": libraries}
    hasher.update(json.dumps(described, sort_keys=True, default=list).encode())
    return hasher.hexdigest()[:20]


def load_renders(
    data_dir: str | Path, part: str, renders: int = 1, styles: Mapping[str, float] = PAGE, seed: int = 0,
    limit: int | None = None, cache_dir: str | Path | None = None, log: Callable[[str], None] | None = None,
) -> RenderedPart:  # fmt: skip
    """A part of the writer split ("train", "val", "test") drawn `renders` times a digit in `styles` (name ->
    weight), prepared, from the cache or made and cached; `limit`: the first that many digits only."""
    if part not in PARTS:
        raise ValueError(f"unknown UNIPEN part {part!r}; choose from {', '.join(PARTS)}")
    if isinstance(renders, bool) or not isinstance(renders, int) or renders < 1:
        raise ValueError(f"renders={renders!r} must be a positive whole number, e.g. 4")
    styles = check_styles(styles)
    data_dir = str(data_dir)
    digits = split_digits(data_dir)[part][:limit]
    if not digits:
        raise UnipenError(f"the UNIPEN {part} writers have no digits in {data_dir}: the folder is incomplete.")
    folder = Path(cache_dir) if cache_dir is not None else cache_folder("unipen")
    path = folder / f"{part}-{_cache_key(data_dir, part, renders, styles, seed, limit)}.pt"
    labels = torch.tensor([d.label for d in digits], dtype=torch.int64)
    writers = [d.writer for d in digits]
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        return RenderedPart(cached["images"], labels, writers, cached["styles"])
    if log:
        log(f"drawing {len(digits):,} UNIPEN {part} digits {renders}x ({', '.join(f'{k} {v:g}' for k, v in styles.items())}); cached in {folder}")
    images, chosen = render_all(digits, renders, styles, seed)
    images = torch.from_numpy(images).unsqueeze(2)  # (N, R, 1, 28, 28)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed: readers never see half a file
    torch.save({"images": images, "styles": chosen}, partial)
    os.replace(partial, path)
    return RenderedPart(images, labels, writers, chosen)
