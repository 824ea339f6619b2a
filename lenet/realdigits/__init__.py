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

The package, in the order a set is made: `sources` (the data and fonts, the seeded streams),
`strokes` (skeletons and style strokes), `sets` (each set's parameters, one image of it, a whole
set), `cache` (prepared sets on disk), `scoring` (a model's answers). Each name below loads its
module on first use, so scoring a model imports none of the code that draws the sets.
"""

from __future__ import annotations

import importlib
from typing import Any

PUBLIC = {  # module -> the names it lends the package
    "sources": (
        "FONT_DIRS", "HANDWRITING_FONTS", "SetUnavailable", "mnist_test", "unipen_test", "set_groups", "usps_test",
        "handwriting_fonts", "fonts_for", "stream", "balanced_mnist",
    ),
    "strokes": ("skeleton", "endpoints", "skeleton_segments", "style_stroke", "plain_for_style"),
    "sets": (
        "SET_NAMES", "SET_PARAMS", "UserImage", "DigitSet", "set_params", "usps_image", "pen_image", "binary_scan_image",
        "styles_image", "photo_font_image", "unavailable", "set_size", "make_set",
    ),
    "cache": ("REFERENCE", "PreparedSet", "prepare_set", "cache_key", "load_prepared", "load_sets"),
    "scoring": (
        "REFUSED", "UNSURE_GRID", "SetScore", "score_set", "group_accuracy", "benchmark", "sweep_thresholds",
        "choose_threshold",
    ),
}  # fmt: skip
HOME = {name: module for module, names in PUBLIC.items() for name in names}
__all__ = sorted(HOME)


def __getattr__(name: str) -> Any:
    """A public name, its module imported the first time it is asked for (PEP 562)."""
    if name not in HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{HOME[name]}"), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
