"""Preprocessing: users' images (any size, mode, format, polarity, position) give MNIST's 28x28 view."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from helpers import first_of
from lenet.preprocess import ImageError, ImageTooLargeError, NoDigitError, prepare_image

SAME = 0.05  # mean absolute pixel difference between two preparations of one digit (edge blur)
SAME_LOSSY = 0.07  # JPEG/WebP artefacts, 1-bit thresholding


def mnist_digit(test_split, digit: int) -> np.ndarray:
    """The split's first image of `digit`: uint8 (28, 28), light ink on black, in MNIST's geometry."""
    return test_split[0][first_of(test_split[1], digit), 0].numpy()


def on_paper(digit: np.ndarray, scale: float, canvas: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    """The digit enlarged `scale` times, dark ink on a white canvas (height, width), top-left at `at`."""
    side = round(28 * scale)
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), np.float32)
    paper = np.full(canvas, 255.0, np.float32)
    paper[at[0] : at[0] + side, at[1] : at[1] + side] -= ink
    return Image.fromarray(paper.astype(np.uint8))


def encode(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def mean_abs(a: torch.Tensor, b: torch.Tensor | np.ndarray) -> float:
    """Mean absolute pixel difference of two 28x28 images, allowing a one-pixel offset.

    Centring by mass places a digit to the whole pixel, as MNIST did; a centre of mass that falls
    near a half pixel can round either way, so two preparations of one digit may differ by a
    one-pixel shift. Placement itself is checked by `centred`.
    """
    a, b = a.reshape(28, 28), torch.as_tensor(b, dtype=torch.float32).reshape(28, 28)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return min(float((a - torch.roll(b, shift, dims=(0, 1))).abs().mean()) for shift in shifts)


def centred(image: torch.Tensor) -> bool:
    """Centre of mass within half a pixel of MNIST's (14, 14)."""
    return all(abs(c - 14) <= 0.5 for c in ndimage.center_of_mass(image[0].numpy()))


@pytest.fixture(scope="module")
def seven(synthetic_test) -> np.ndarray:
    return mnist_digit(synthetic_test, 7)


@pytest.fixture(scope="module")
def seven_prepared(seven) -> torch.Tensor:
    return prepare_image(Image.fromarray(seven))


# ----------------------------------------------------------------------------- MNIST geometry


def test_output_contract(seven_prepared):
    image = seven_prepared
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert float(image.min()) == 0.0 and float(image.max()) == pytest.approx(1.0)
    rows, cols = np.nonzero(image[0].numpy() >= 0.5)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20  # MNIST's 20 px box
    assert centred(image)


def test_mnist_digits_pass_through_almost_unchanged(mnist_test):
    differences = [mean_abs(prepare_image(Image.fromarray(mnist_digit(mnist_test, d))), mnist_digit(mnist_test, d) / 255) for d in range(10)]
    assert np.mean(differences) < 0.01, differences
    assert max(differences) < 0.05, differences


@pytest.mark.parametrize("scale, canvas, at", [(3, (600, 800), (40, 520)), (1.5, (300, 200), (230, 10)), (8, (1500, 1200), (700, 300))])
def test_small_off_centre_dark_digit_on_white_matches_mnist_input(synthetic_test, scale, canvas, at):
    for label in range(10):
        digit = mnist_digit(synthetic_test, label)
        user = prepare_image(encode(on_paper(digit, scale, canvas, at), "PNG"))
        mnist_style = prepare_image(Image.fromarray(digit))
        assert centred(user), label
        assert mean_abs(user, mnist_style) < SAME, label
        assert mean_abs(user, digit / 255) < SAME, label


def test_background_noise_and_specks_are_removed(seven, seven_prepared):
    rng = np.random.default_rng(0)
    paper = np.asarray(on_paper(seven, 4, (500, 500), (150, 100)), np.float32)
    paper += rng.normal(0, 8, paper.shape)  # sensor noise
    for row, col in [(20, 20), (450, 470), (30, 400), (480, 30)]:
        paper[row : row + 3, col : col + 3] = 0  # dust specks, far from the digit
    noisy = prepare_image(Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)))
    assert mean_abs(noisy, seven_prepared) < SAME


def test_uneven_grey_paper_with_pencil_grey_ink(seven, seven_prepared):
    paper = np.asarray(on_paper(seven, 3, (300, 400), (100, 50)), np.float32)
    ink = (255 - paper) / 255
    shading = np.linspace(150, 230, 400)[None, :]  # a shadow across the page
    photo = shading - ink * (shading - 90)
    assert mean_abs(prepare_image(Image.fromarray(photo.astype(np.uint8))), seven_prepared) < SAME


def test_thin_pen_strokes_are_thickened_to_mnist_width():
    def zero(pen: int) -> torch.Tensor:
        """An oval 0, 300x400 px along the middle of its stroke, drawn with a pen `pen` px wide."""
        image, half = Image.new("L", (600, 600), 255), pen // 2
        ImageDraw.Draw(image).ellipse((150 - half, 100 - half, 450 + half, 500 + half), outline=0, width=pen)
        return prepare_image(image)

    # A fine pen, and a marker as wide relative to the digit as MNIST's strokes (2.6 px in 20).
    thin, mnist_wide = zero(2), zero(56)
    assert mean_abs(thin, mnist_wide) < SAME
    assert float(thin.sum()) == pytest.approx(float(mnist_wide.sum()), rel=0.15)


# ----------------------------------------------------------------------------- modes, formats, sources


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    """A dark-on-white L image in another mode, keeping what it shows."""
    if mode == "I;16":
        return Image.fromarray(np.asarray(image).astype(np.uint16) * 257)  # full 16-bit range
    if mode == "LA":
        return Image.merge("LA", (image, Image.new("L", image.size, 255)))
    return image.convert(mode)


MODE_FORMATS = [
    ("L", "PNG"), ("L", "JPEG"), ("L", "BMP"), ("L", "GIF"), ("L", "TIFF"), ("L", "WEBP"),
    ("LA", "PNG"), ("LA", "TIFF"),
    ("RGB", "PNG"), ("RGB", "JPEG"), ("RGB", "BMP"), ("RGB", "WEBP"), ("RGB", "TIFF"),
    ("RGBA", "PNG"), ("RGBA", "WEBP"), ("RGBA", "TIFF"), ("RGBA", "BMP"),
    ("P", "PNG"), ("P", "GIF"), ("P", "BMP"), ("P", "TIFF"),
    ("I;16", "PNG"), ("I;16", "TIFF"),
    ("CMYK", "JPEG"), ("CMYK", "TIFF"),
    ("1", "PNG"), ("F", "TIFF"),
]


@pytest.mark.parametrize("mode, file_format", MODE_FORMATS)
def test_every_mode_and_format_gives_the_same_digit(seven, seven_prepared, mode, file_format):
    paper = on_paper(seven, 3, (200, 260), (60, 120))
    image = as_mode(paper, mode)
    assert image.mode == mode
    data = encode(image, file_format, **({"quality": 95} if file_format in ("JPEG", "WEBP") else {}))
    lossy = file_format in ("JPEG", "WEBP") or mode == "1"  # "1" is a 1-bit threshold of the anti-aliased ink
    tolerance = SAME_LOSSY if lossy else SAME
    assert mean_abs(prepare_image(data), seven_prepared) < tolerance
    assert mean_abs(prepare_image(image), seven_prepared) < tolerance  # a PIL image in that mode, too


def test_paths_bytes_and_images_are_the_same_input(tmp_path, seven):
    paper = on_paper(seven, 2, (100, 150), (10, 10))
    path = tmp_path / "seven.png"
    paper.save(path)
    results = [prepare_image(source) for source in (path, str(path), path.read_bytes(), paper)]
    for result in results[1:]:
        assert torch.equal(result, results[0])


@pytest.mark.parametrize("ink_colour, backdrop", [(0, "white ink on transparent"), (255, "black ink on transparent")])
def test_transparent_background_either_ink_colour(seven, seven_prepared, ink_colour, backdrop):
    shape = np.asarray(on_paper(seven, 3, (200, 200), (30, 40)))
    alpha = 255 - shape  # opaque where the ink is
    grey = np.full_like(shape, 255 - ink_colour)  # the colour under transparent pixels is arbitrary
    image = Image.merge("RGBA", [Image.fromarray(grey)] * 3 + [Image.fromarray(alpha)])
    assert mean_abs(prepare_image(encode(image, "PNG")), seven_prepared) < SAME, backdrop


@pytest.mark.parametrize("mode, file_format", [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("F", "TIFF"),
                                               ("RGB", "JPEG"), ("CMYK", "TIFF"), ("1", "PNG")])
def test_large_images_shrunk_on_reading_give_the_same_digit(seven, seven_prepared, mode, file_format):
    """A 2600x3000 page: JPEG decoded at reduced scale, the others box-averaged band by band."""
    paper = on_paper(seven, 40, (3000, 2600), (700, 900))
    if mode in ("RGBA", "LA"):  # ink only where it is opaque: the compositing path too
        ink = Image.fromarray(255 - np.asarray(paper))
        image = Image.merge(mode, [Image.new("L", paper.size, 0)] * (len(mode) - 1) + [ink])
    else:
        image = as_mode(paper, mode)
    data = encode(image, file_format, **({"quality": 95} if file_format == "JPEG" else {}))
    assert mean_abs(prepare_image(data), seven_prepared) < (SAME_LOSSY if mode in ("1", "RGB") else SAME)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", [64, 3000])  # read as it is, and shrunk first
def test_non_finite_float_pixels_are_a_bad_image(value, side):
    pixels = np.zeros((side, side), np.float32)
    pixels[side // 4 : 3 * side // 4, side // 2 : side // 2 + side // 10] = 1.0
    pixels[-1, -1] = value  # one pixel, in the last (partial) block
    with pytest.raises(ImageError, match="NaN or infinite"):
        prepare_image(encode(Image.fromarray(pixels, "F"), "TIFF"))


def test_extreme_finite_floats_are_scaled_not_refused(seven, seven_prepared):
    paper = np.asarray(on_paper(seven, 40, (3000, 2600), (700, 900)), np.float64)
    extreme = ((paper / 255) * 6e38 - 3e38).astype(np.float32)  # float32's whole range: sums would overflow
    assert mean_abs(prepare_image(Image.fromarray(extreme, "F")), seven_prepared) < SAME


def test_animated_gif_uses_the_first_frame(seven, seven_prepared):
    first = on_paper(seven, 2, (100, 100), (20, 20))
    data = io.BytesIO()
    first.save(data, format="GIF", save_all=True, append_images=[Image.new("L", (100, 100), 255)])
    assert mean_abs(prepare_image(data.getvalue()), seven_prepared) < SAME


def test_exif_rotation_is_applied(seven, seven_prepared):
    upright = on_paper(seven, 3, (200, 300), (50, 60)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones store portrait photos
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert mean_abs(prepare_image(data), seven_prepared) < SAME_LOSSY


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "image",
    [Image.new("L", (64, 64), 255), Image.new("L", (64, 64), 0), Image.new("RGB", (300, 200), (128, 128, 128)),
     Image.new("RGBA", (50, 50), (0, 0, 0, 0))],
    ids=["white", "black", "grey", "transparent"],
)
def test_blank_images_have_no_digit(image):
    with pytest.raises(NoDigitError, match="no digit found"):
        prepare_image(image)


def test_faint_noise_alone_is_not_a_digit():
    noise = np.random.default_rng(0).normal(240, 4, (400, 400))
    with pytest.raises(NoDigitError):
        prepare_image(Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)))


def test_unreadable_inputs_name_the_problem(tmp_path, seven):
    png = encode(on_paper(seven, 2, (100, 100), (20, 20)), "PNG")
    cases = {
        b"": "empty",
        b"not an image at all": "not an image file",
        png[: len(png) // 2]: "truncated",
        str(tmp_path / "missing.png"): "cannot be read",
    }
    for source, message in cases.items():
        with pytest.raises(ImageError, match=message):
            prepare_image(source)
    assert issubclass(NoDigitError, ImageError) and issubclass(ImageError, ValueError)


def png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels: a decompression bomb's first bytes."""
    png = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(png[24:29])
    png[12:29] = header
    png[29:33] = zlib.crc32(header).to_bytes(4, "big")
    return bytes(png)


@pytest.mark.parametrize("side", [10_000, 30_000])  # 100 MP: over our limit; 900 MP: over Pillow's too
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(ImageTooLargeError, match="pixels"):
        prepare_image(png_claiming_size(side, side))
    with pytest.raises(ImageTooLargeError, match="over the limit of 10,000"):
        prepare_image(encode(Image.new("L", (200, 100)), "PNG"), max_pixels=10_000)


def test_shifted_erosion_and_dilation_are_scipys():
    """preprocess's own erosion and dilation by the 3x3 cross equal scipy.ndimage's, edges included."""
    from lenet.preprocess import _dilate, _erode

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 6), (2, 2), (3, 7), (40, 33)]:
        for share in (0.1, 0.5, 0.9):
            mask = rng.random(shape) < share
            assert np.array_equal(_erode(mask), ndimage.binary_erosion(mask))
            for steps in (1, 2, 5):
                assert np.array_equal(_dilate(mask, steps), ndimage.binary_dilation(mask, iterations=steps))


def test_every_other_3x3_mean_is_scipys():
    from lenet.preprocess import _mean_3x3_every_other

    rng = np.random.default_rng(1)
    for shape in [(3, 3), (5, 9), (56, 80), (57, 81)]:
        grey = rng.random(shape, dtype=np.float32)
        assert np.allclose(_mean_3x3_every_other(grey), ndimage.uniform_filter(grey, size=3)[1:-1:2, 1:-1:2], atol=1e-6)


def test_thick_strokes_are_read_at_the_digits_scale_with_the_same_result(synthetic_test, monkeypatch):
    """A drawing-pad digit (strokes ~20 px) has its specks and soft edges found on a shrunk copy; the
    prepared digit matches the full-resolution path, and thin pen lines are never shrunk."""
    import lenet.preprocess as preprocess

    shrink, factors = preprocess._shrink, []
    monkeypatch.setattr(preprocess, "_shrink", lambda ink, factor, offset: factors.append(factor) or shrink(ink, factor, offset))
    pads = [on_paper(mnist_digit(synthetic_test, d), 8, (280, 280), (20 + 3 * d, 40)) for d in range(10)]  # 224 px, ~20 px strokes
    shrunk = [prepare_image(encode(pad, "PNG")) for pad in pads]
    assert len(factors) == len(pads) and min(factors) >= 2

    factors.clear()
    pen = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(pen).line([(60, 40), (200, 40), (120, 260)], fill=0, width=2)
    prepare_image(pen)  # a thin pen line: read at full resolution
    assert factors == []

    monkeypatch.setattr(preprocess, "WORK_EXTENT", 10_000)  # never shrink
    for pad, fast in zip(pads, shrunk):
        assert mean_abs(fast, prepare_image(encode(pad, "PNG"))) < 0.01
    assert factors == []
