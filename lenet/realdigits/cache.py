"""The real-digit sets as the model sees them: every image through the product's `prepare_image`, cached
on disk under a key covering everything the prepared images depend on."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lenet.cache import cache_folder
from lenet.evaluation import default_data_dir
from lenet.preprocess import ImageError, prepare_image
from lenet.realdigits.sets import SET_NAMES, DigitSet, make_set, set_params, set_size, unavailable
from lenet.realdigits.sources import SetUnavailable, fonts_for, mnist_test, unipen_test

REFERENCE = "mnist"  # the official MNIST test set, unmodified: the figure each set is held against
# The modules whose code picks, draws or prepares the images: an edit to any of them makes the cached sets stale.
IMAGE_CODE = (
    "lenet.preprocess", "lenet.render", "lenet.unipen",
    "lenet.realdigits.sources", "lenet.realdigits.strokes", "lenet.realdigits.sets", __name__,
)  # fmt: skip


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


def _digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
    return hasher.hexdigest()


def _source_digest(name: str, params: Mapping[str, Any], data_dir: str) -> str:
    """What the set is made from: the USPS file, UNIPEN's test writers, MNIST's test arrays, or the font files."""
    if name == "usps":
        return _digest((Path(data_dir) / "USPS" / "zip.test.gz").read_bytes())
    if name == "unipen_test":
        return _digest(*(part for d in unipen_test(data_dir) for part in (d.writer, str(d.label), *(s.tobytes() for s in d.strokes))))
    if name == "photo_font":
        return _digest(*(part for path in fonts_for(params) for part in (path.name, path.read_bytes())))
    images, labels = mnist_test(data_dir)
    return _digest(images.tobytes(), labels.tobytes())


def cache_key(name: str, seed: int = 0, data_dir: str | Path | None = None, **overrides: Any) -> str:
    """A digest of everything a prepared set depends on: parameters, seed, sources, the code making and
    preparing it (IMAGE_CODE) and the libraries drawing it."""
    from importlib.metadata import version

    params = set_params(name, **overrides)
    data_dir = str(data_dir or default_data_dir())
    code = [Path(importlib.import_module(module).__file__).read_bytes() for module in IMAGE_CODE]
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
