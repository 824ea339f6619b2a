"""Augmentation: shapes, range, identity at zero strength, seeded determinism, geometry, configs,
and labels that stay right (a trained net still reads warped digits)."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate

from lenet.augment import (
    Compose, ElasticDistortion, FillBox, LowResolution, RandomAffine, RandomApply, StrokeGaps, StrokeWidth, StyleStrokes,
    apply,
)
from lenet.inference import load_model

AUGMENTATIONS = {
    "affine": lambda: RandomAffine(degrees=15, translate=0.1, scale=(0.85, 1.15), shear=15),
    "elastic": lambda: ElasticDistortion(alpha=34, sigma=4),
    "compose": lambda: Compose([ElasticDistortion(alpha=34, sigma=6), RandomAffine(degrees=10, translate=0.1)]),
    "aspect": lambda: RandomAffine(aspect=1.5),
    "stroke": lambda: StrokeWidth(thinner=0.5, thicker=1.5),
    "lowres": lambda: LowResolution(low=10, high=18, binarize=0.7),
    "gaps": lambda: StrokeGaps(gaps=2, radius=(1.5, 3.0)),
    "random_apply": lambda: RandomApply(StrokeWidth(thinner=0.0, thicker=1.0), p=0.5),
}


def first_digits(split) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = split
    return images[:256].float() / 255, labels[:256]  # (256, 1, 28, 28) in [0, 1]


@pytest.fixture(scope="module")
def digits(synthetic_test):
    return first_digits(synthetic_test)


@pytest.fixture(scope="module")
def handwritten(mnist_test):
    """Real MNIST digits, for the tests whose figures are handwriting's (stroke widths, where a 7's bar falls)."""
    return first_digits(mnist_test)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_shape_range_and_ink_are_kept(name, digits):
    x, _ = digits
    torch.manual_seed(0)
    y = AUGMENTATIONS[name]()(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.allclose(y, x, atol=1e-3)  # it did warp
    # Bilinear resampling moves ink around but keeps most of it inside the frame.
    ink_ratio = y.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert 0.6 < float(ink_ratio.median()) < 1.4


@pytest.mark.parametrize(
    "identity",
    [
        RandomAffine(), RandomAffine(scale=(1.0, 1.0), aspect=1.0), ElasticDistortion(alpha=0.0),
        StrokeWidth(thinner=0.0, thicker=0.0), RandomApply(StrokeWidth(thicker=2.0), p=0.0),
        LowResolution(low=28, high=28, binarize=0.0), StrokeGaps(gaps=0),
    ],
    ids=repr,
)
def test_zero_strength_is_the_identity(identity, digits):
    x, _ = digits
    assert torch.allclose(identity(x), x, atol=1e-5)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_same_seed_same_images(name, digits):
    x, _ = digits
    outputs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        outputs.append(AUGMENTATIONS[name]()(x))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


def test_explicit_generator_reproduces_without_touching_the_global_rng(digits):
    x, _ = digits
    first = ElasticDistortion(generator=torch.Generator().manual_seed(3))(x)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    second = ElasticDistortion(generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(1), before)  # the global stream was not consumed


def _centre_of_mass(image):
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = image.squeeze()
    return float((mass * rows).sum() / mass.sum()), float((mass * cols).sum() / mass.sum())


def test_affine_geometry_zoom_and_shift():
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 9:11, 17:19] = 1  # centre of mass (9.5, 17.5): 4 px up, 4 px right of the centre 13.5
    zoomed = RandomAffine(scale=(2.0, 2.0))(dot)
    assert _centre_of_mass(zoomed) == pytest.approx((5.5, 21.5), abs=0.05)  # twice as far from the centre
    shifted = RandomAffine(translate=0.25, generator=torch.Generator().manual_seed(0))(dot)
    row, col = _centre_of_mass(shifted)
    assert max(abs(row - 9.5), abs(col - 17.5)) <= 7.0 + 0.05  # at most 25% of 28 px per axis
    assert (row, col) != pytest.approx((9.5, 17.5), abs=0.5)


def _stroke_width(image):
    """Mean stroke width in pixels: ink area over half the ink's boundary length."""
    mask = image.squeeze() > 0.5
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    boundary = mask[1:-1, 1:-1] & ~inner
    return 2 * float(mask.sum()) / max(float(boundary.sum()), 1.0)


def test_stroke_width_goes_both_ways_and_keeps_every_stroke(digits):
    x, _ = digits
    widths = torch.tensor([_stroke_width(image) for image in x])
    thick = StrokeWidth(thinner=0.0, thicker=2.0, generator=torch.Generator().manual_seed(0))
    thin = StrokeWidth(thinner=0.6, thicker=0.0, generator=torch.Generator().manual_seed(0))
    thick_widths = torch.tensor([_stroke_width(image) for image in thick(x)])
    thin_x = thin(x)
    thin_widths = torch.tensor([_stroke_width(image) for image in thin_x])
    changed = thick_widths != widths  # half the images are left thin by the thicker-only setting
    assert float((thick_widths[changed] - widths[changed]).median()) > 0.8
    changed = thin_widths != widths
    assert float((thin_widths[changed] - widths[changed]).median()) < -0.2
    assert float(thin_x.amax(dim=(1, 2, 3)).min()) > 0.9  # every stroke core survives thinning


def test_aspect_changes_width_not_height():
    bar = torch.zeros(1, 1, 28, 28)
    bar[0, 0, 6:22, 12:16] = 1  # 16 px high, 4 px wide
    rows = lambda image: int((image.squeeze() > 0.5).any(dim=1).sum())  # noqa: E731
    cols = lambda image: int((image.squeeze() > 0.5).any(dim=0).sum())  # noqa: E731
    widths = set()
    for seed in range(8):
        out = RandomAffine(aspect=2.0, generator=torch.Generator().manual_seed(seed))(bar)
        assert abs(rows(out) - 16) <= 1
        widths.add(cols(out))
    assert min(widths) <= 3 and max(widths) >= 6


def test_fill_box_stretches_the_ink_to_the_centred_box():
    bar = torch.zeros(2, 1, 28, 28)
    bar[0, 0, 4:24, 12:15] = 1  # a 1: 20 px high, 3 px wide, off centre
    out = FillBox(box=20)(bar)
    ink = out[0, 0] > 0.3
    rows, cols = ink.any(dim=1).nonzero().flatten(), ink.any(dim=0).nonzero().flatten()
    assert (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])) == pytest.approx((4, 23, 4, 23), abs=1)
    assert torch.equal(out[1], bar[1])  # an empty image stays empty


def test_low_resolution_binarises_when_asked(handwritten):
    x, _ = handwritten
    out = LowResolution(low=8, high=8, binarize=1.0)(x)
    small = torch.nn.functional.interpolate(out, size=(8, 8), mode="area")
    assert not torch.allclose(out, x, atol=0.05)
    # Scaled back up from a black-and-white 8x8 image: its 8x8 area averages are nearly 0 or 1.
    assert float(((small > 0.1) & (small < 0.9)).float().mean()) < 0.35


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="sigma"):
        ElasticDistortion(sigma=0)
    with pytest.raises(ValueError, match="aspect"):
        RandomAffine(aspect=0.5)
    with pytest.raises(ValueError, match="thinner"):
        StrokeWidth(thinner=1.0)
    with pytest.raises(ValueError, match="low"):
        LowResolution(low=2)
    with pytest.raises(ValueError, match="probability"):
        RandomApply(StrokeWidth(), p=1.5)
    with pytest.raises(ValueError, match="flag"):
        StyleStrokes(flag=2)
    with pytest.raises(ValueError, match="radius"):
        StrokeGaps(radius=(3.0, 1.0))
    with pytest.raises(ValueError, match="needs the batch's labels"):
        apply(Compose([StyleStrokes()]), torch.zeros(2, 1, 28, 28))


def test_stroke_gaps_erase_a_small_disc_of_ink_and_nothing_else(digits):
    x, _ = digits
    y = StrokeGaps(gaps=1, radius=(2.0, 2.0), generator=torch.Generator().manual_seed(0))(x)
    assert (y <= x).all()  # only erases
    removed = (x - y).flatten(1)
    # Every image loses some ink, at most a disc of radius 2.5 px (soft edge included): about 20 pixels.
    assert (removed.amax(1) > 0.3).all()
    assert int(((x - y) > 0.01).flatten(1).sum(1).max()) <= 21
    # The erased pixels sit within 2.5 px of one point on the stroke.
    for i in range(8):
        where = ((x[i, 0] - y[i, 0]) > 0.01).nonzero().float()
        assert float(torch.cdist(where, where).max()) <= 5.0
    blank = torch.zeros(2, 1, 28, 28)
    assert torch.equal(StrokeGaps(gaps=3)(blank), blank)


def test_style_strokes_add_ink_to_ones_and_sevens_only_and_keep_labels(handwritten):
    x, labels = handwritten
    generator = torch.Generator().manual_seed(0)
    y = StyleStrokes(flag=1.0, crossbar=1.0, generator=generator)(x, labels)
    changed = (y - x).abs().flatten(1).amax(1) > 0.5
    assert set(labels[changed].tolist()) == {1, 7}
    assert changed.sum() >= 0.95 * ((labels == 1) | (labels == 7)).sum()  # a crossbar may cross the stem's own ink
    assert (y >= x).all() and float(y.max()) <= 1.0  # strokes only add ink
    ones = (labels == 1).nonzero().flatten()
    # A flag hangs from the 1's top end, down and to the left.
    down_left = []
    for i in ones.tolist():
        added = ((y[i, 0] - x[i, 0]) > 0.3).nonzero().float()  # (row, column) of the new ink
        top = int((x[i, 0] > 0.3).any(1).nonzero()[0])
        top_column = (x[i, 0, top] > 0.3).nonzero().float().mean()
        down_left.append(bool(added[:, 0].mean() > top and added[:, 1].mean() < top_column))
    assert sum(down_left) >= 0.95 * len(down_left)
    assert torch.equal(StyleStrokes(flag=0.0, crossbar=0.0)(x, labels), x)
    same = StyleStrokes(flag=0.5, crossbar=0.5, generator=torch.Generator().manual_seed(3))(x, labels)
    assert torch.equal(same, StyleStrokes(flag=0.5, crossbar=0.5, generator=torch.Generator().manual_seed(3))(x, labels))
    # Through RandomApply and Compose the labels follow the chosen images.
    composed = Compose([RandomApply(StyleStrokes(flag=1.0, crossbar=0.0), p=1.0)])
    through = (apply(composed, x, labels) - x).abs().flatten(1).amax(1) > 0.5
    assert composed.needs_labels and not (through & (labels != 1)).any() and through.sum() >= 0.95 * (labels == 1).sum()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("none", type(None)), ("affine", RandomAffine), ("elastic", Compose), ("stroke", StrokeWidth),
        ("aspect", RandomAffine), ("lowres", RandomApply), ("fill_box", RandomApply), ("robust", Compose),
        ("styles", StyleStrokes), ("robust_styles", Compose), ("gaps", RandomApply),
    ],
)
def test_config_group_builds_the_augmentation(option, expected, tmp_path, synthetic_dir):
    cfg = compose_config(tmp_path, [f"augment={option}"], synthetic_dir)
    datamodule = instantiate(cfg.data, _recursive_=False)
    assert isinstance(datamodule.augment, expected)


def test_robust_styles_is_robust_with_style_strokes_first(tmp_path, synthetic_dir):
    """robust_styles.yaml composes robust.yaml by filling in its empty `styles` step: the same steps, in
    order, after the strokes, and the same images as the composition written out."""
    robust, styled = (
        instantiate(compose_config(tmp_path, [f"augment={name}"], synthetic_dir).data, _recursive_=False).augment
        for name in ("robust", "robust_styles")
    )
    assert isinstance(styled.transforms[0], StyleStrokes) and repr(styled.transforms[1:]) == repr(robust.transforms)
    written_out = Compose([StyleStrokes(flag=0.25, crossbar=0.3), *robust.transforms])
    x, labels = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    torch.manual_seed(0)
    composed = apply(styled, x, labels)
    torch.manual_seed(0)
    assert torch.equal(composed, apply(written_out, x, labels))
    assert Compose({"off": None, "affine": RandomAffine()}).transforms[0].__class__ is RandomAffine  # empty steps skipped


def test_augmentation_keeps_labels_a_trained_net_still_reads_the_digits(trained_run, mnist_test):
    images, labels = mnist_test
    model = load_model(trained_run)
    x, y = images[:2000].float() / 255, labels[:2000]

    def accuracy(batch):
        return float((model.predict_probs(batch).argmax(1) == y).float().mean())

    torch.manual_seed(0)
    elastic = accuracy(ElasticDistortion(alpha=34, sigma=6)(x))
    torch.manual_seed(0)
    both = accuracy(AUGMENTATIONS["compose"]()(x))
    # A one-epoch LeNet-5 that never saw a warp still reads most warped digits (a 7-epoch one:
    # 95% elastic, 84% elastic + affine): the warps keep each digit's identity. Chance is 10%.
    assert accuracy(x) > 0.95
    assert elastic > 0.80
    assert both > 0.55
