"""What the real-digit sets are drawn from: MNIST's test digits, USPS's, UNIPEN's held-out writers, the
installed handwriting fonts, and the seeded random streams that pick and draw each image."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from lenet.evaluation import default_data_dir
from lenet.unipen import PenDigit, UnipenError
from lenet.unipen_images import split_digits

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

class SetUnavailable(RuntimeError):
    """A set that cannot be made on this machine (its source data or fonts are missing)."""


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


def fonts_for(params: Mapping[str, Any]) -> list[Path]:
    """The installed fonts among a photo_font set's `fonts` parameter (SetUnavailable when there is none)."""
    fonts = [path for path in handwriting_fonts() if path.name in params["fonts"]]
    if not fonts:
        raise SetUnavailable(
            "photo_font needs handwriting fonts and none is installed: e.g. `apt-get install fonts-dkg-handwriting "
            "fonts-bwht fonts-comic-neue fonts-humor-sans fonts-sjfonts` (any of HANDWRITING_FONTS)."
        )
    return fonts


def stream(seed: int, name: str, *where: int) -> np.random.Generator:
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
        order = stream(seed, name, ORDER, digit).permutation(np.flatnonzero(labels == digit))
        if accept is not None:  # lazily: stop once enough digits passed
            order = list(islice((i for i in order if accept(images[i], digit)), wanted))
        if len(order) < wanted:
            raise ValueError(f"set {name!r} wants {wanted} MNIST test {digit}s, only {len(order)} qualify: lower its count")
        chosen.append(list(order[:wanted]))
    # Interleave: item j is class classes[j % k], its (j // k)-th pick.
    indices = np.array([chosen[j % len(classes)][j // len(classes)] for j in range(count)], dtype=np.int64)
    return images[indices], labels[indices]
