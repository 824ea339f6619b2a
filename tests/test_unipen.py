"""The UNIPEN reader on small files written here, the writer split, the drawing styles and the prepared renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lenet import render, unipen, unipen_images
from lenet.unipen import PenDigit, UnipenError, parse_components, read_unipen, split_writers, writer_split

PEN_DATA = """.VERSION 1.0
.INCLUDE toy/toy.doc
.WRITER_ID anna
.PEN_DOWN
10 100
10 50
10 0
.PEN_UP
.DT 12
.PEN_DOWN
0 100
20 100
.PEN_UP
.INCLUDE toy/data/more.dat
.PEN_DOWN
 5 5
 6 6
 7 7
 8 8
.PEN_UP
.PEN_DOWN
0 0
.PEN_UP
"""
MORE = """.COMMENT a nested file: its strokes count where the .INCLUDE stands
.PEN_DOWN
1 1
2 2
.PEN_UP
.PEN_UP
3 3
"""  # the last points are the pen hovering (.PEN_UP), not ink
DOC = """.COORD X Y
.COMMENT
        indented text is not a keyword:
        .PEN_DOWN
"""


def write_unipen(root: Path, segments: str, contributor: str = "toy", pen: str = PEN_DATA) -> Path:
    """A UNIPEN folder with one segmentation file (the given .SEGMENT lines) over the pen data above."""
    folder = root / "UNIPEN"
    (folder / "include" / contributor / "data").mkdir(parents=True, exist_ok=True)
    (folder / "include" / contributor / "toy.doc").write_text(DOC)
    (folder / "include" / contributor / "data" / "pen.dat").write_text(pen.replace("toy/", f"{contributor}/"))
    (folder / "include" / contributor / "data" / "more.dat").write_text(MORE)
    (folder / "data" / "1a" / contributor).mkdir(parents=True, exist_ok=True)
    path = folder / "data" / "1a" / contributor / "session.dat"
    path.write_text(f".VERSION 1.0\n.INCLUDE {contributor}/data/pen.dat\n{segments}")
    return path


def test_reads_strokes_ranges_nested_includes_and_flips_y(tmp_path: Path) -> None:
    write_unipen(tmp_path, '.SEGMENT CHARACTER 0 ? "1"\n.SEGMENT CHARACTER 1-2 OK "7"\n.SEGMENT CHARACTER 3:1-3:2 ? "0"\n')
    one, seven, zero = read_unipen(tmp_path)
    assert (one.label, seven.label, zero.label) == (1, 7, 0)
    assert one.writer == "toy/anna" and one.contributor == "toy"
    assert one.source == "data/1a/toy/session.dat:3"
    # y grows upwards on the tablet: the 1's stroke from (10, 100) down to (10, 0) becomes 0 -> -100 on screen
    np.testing.assert_array_equal(one.strokes[0], [[10, -100], [10, -50], [10, 0]])
    # strokes 1-2: the bar, then the nested file's only pen-down stroke (its hovering points are no ink)
    assert [s.tolist() for s in seven.strokes] == [[[0, -100], [20, -100]], [[1, -1], [2, -2]]]
    # 3:1-3:2: points 1 to 2 (inclusive) of stroke 3
    assert zero.strokes[0].tolist() == [[6, -6], [7, -7]]


def test_component_lists() -> None:
    assert parse_components("73") == [(73, None, 73, None)]
    assert parse_components("169-170") == [(169, None, 170, None)]
    assert parse_components("12,14") == [(12, None, 12, None), (14, None, 14, None)]
    assert parse_components("380:1-381") == [(380, 1, 381, None)]
    assert parse_components("379-380:1") == [(379, None, 380, 1)]
    for bad in ("a-3", "5-2", "1--2", ""):
        with pytest.raises(ValueError):
            parse_components(bad)


def test_padding_strokes_are_dropped_and_a_digit_of_padding_only_is_skipped(tmp_path: Path) -> None:
    write_unipen(tmp_path, '.SEGMENT CHARACTER 3-4 ? "4"\n.SEGMENT CHARACTER 4 ? "5"\n')
    (four,) = read_unipen(tmp_path)  # stroke 4 is one (0, 0) point: some tablets pad with those
    assert four.label == 4 and len(four.strokes) == 1


@pytest.mark.parametrize(
    "segments, message",
    [
        ('.SEGMENT CHARACTER 9 ? "3"\n', "stroke 9 is named but the pen data has 5 strokes"),
        ('.SEGMENT CHARACTER 0 ? "x"\n', "label 'x' is not a digit"),
        (".SEGMENT CHARACTER 0\n", "is not '.SEGMENT CHARACTER"),
        ('.SEGMENT CHARACTER 2-1 ? "3"\n', "runs backwards"),
    ],
)
def test_a_bad_segment_is_named_in_one_line(tmp_path: Path, segments: str, message: str) -> None:
    write_unipen(tmp_path, segments)
    with pytest.raises(UnipenError, match=message) as raised:
        read_unipen(tmp_path)
    assert "data/1a/toy/session.dat:3" in str(raised.value) and "\n" not in str(raised.value)


def test_damaged_pen_data_and_missing_files_are_named(tmp_path: Path) -> None:
    write_unipen(tmp_path, '.SEGMENT CHARACTER 0 ? "1"\n', pen=PEN_DATA.replace("10 50", "10 fifty"))
    with pytest.raises(UnipenError, match=r"pen\.dat:6: pen points that are not numbers|pen\.dat:\d+: pen points"):
        read_unipen(tmp_path)
    write_unipen(tmp_path, '.SEGMENT CHARACTER 0 ? "1"\n', pen=PEN_DATA.replace("10 50", "10"))
    with pytest.raises(UnipenError, match=r"pen\.dat:6: a pen point needs x and y"):
        read_unipen(tmp_path)
    (tmp_path / "UNIPEN" / "include" / "toy" / "data" / "more.dat").unlink()
    write_unipen(tmp_path, '.SEGMENT CHARACTER 0 ? "1"\n')
    (tmp_path / "UNIPEN" / "include" / "toy" / "data" / "more.dat").unlink()
    with pytest.raises(UnipenError, match=r"more\.dat is missing \(named by an \.INCLUDE\)"):
        read_unipen(tmp_path)


def test_a_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UnipenError, match=r"UNIPEN is not in .* \(no data/1a/ folder\).*LENET_DATA_DIR.*data.sources=\[mnist\]"):
        read_unipen(tmp_path)


def test_left_out_contributors_are_not_read(tmp_path: Path) -> None:
    write_unipen(tmp_path, '.SEGMENT CHARACTER 0 ? "1"\n', contributor="tos")
    write_unipen(tmp_path, '.SEGMENT CHARACTER 0 ? "1"\n', contributor="abc")
    assert {d.contributor for d in read_unipen(tmp_path)} == {"abc"}


def _writers(contributor: str, count: int) -> list[str]:
    return [f"{contributor}/w{i}" for i in range(count)]


def test_the_writer_split_holds_out_a_fifth_of_each_contributors_writers_and_is_stable() -> None:
    writers = _writers("big", 40) + _writers("mid", 5) + _writers("two", 2) + _writers("one", 1)
    split = split_writers(writers)
    by = lambda c, part: sorted(w for w, p in split.items() if w.startswith(c) and p == part)  # noqa: E731
    assert (len(by("big", "test")), len(by("big", "val")), len(by("big", "train"))) == (8, 4, 28)
    assert (len(by("mid", "test")), len(by("mid", "val")), len(by("mid", "train"))) == (1, 1, 3)
    assert (len(by("two", "test")), len(by("two", "train"))) == (1, 1)
    assert split["one/w0"] == "train"
    # Stable: the order writers come in, and writers added later, move nobody already placed.
    assert split_writers(reversed(writers)) == split
    grown = split_writers(writers + _writers("new", 10))
    assert {w: grown[w] for w in split} == split
    # Another seed, another split (the split's seed is fixed in the product: SPLIT_SEED).
    assert split_writers(writers, seed=1) != split


def test_no_writer_is_in_two_parts() -> None:
    digits = [PenDigit(i % 10, (np.ones((2, 2), np.float32),), w, f"f:{i}") for i, w in enumerate(_writers("c", 30) * 3)]
    parts = writer_split(digits)
    sets = [{d.writer for d in parts[name]} for name in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(p) for p in parts.values()) == len(digits)


SEVEN = (np.array([[0, 0], [40, 0], [15, 60]], np.float32),)


@pytest.mark.parametrize("style", render.STYLES)
def test_every_style_draws_a_digit_that_preparation_reads(style: str) -> None:
    segments = render.stroke_segments(SEVEN)
    first = render.draw(style, segments, np.random.default_rng(3))
    again = render.draw(style, segments, np.random.default_rng(3))
    other = render.draw(style, segments, np.random.default_rng(4))
    assert np.array_equal(np.asarray(first), np.asarray(again))  # seeded
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    prepared = unipen_images.render_digit(PenDigit(7, SEVEN, "c/w", "f:1"), style, np.random.default_rng(3))
    assert prepared is not None and prepared.shape == (28, 28) and prepared.dtype == np.uint8
    rows, cols = np.nonzero(prepared > 128)
    assert 18 <= rows.max() - rows.min() + 1 <= 21  # MNIST's geometry: the digit's longer side in a 20 px box


def test_the_scan_style_stretches_a_one_to_fill_its_box() -> None:
    one = render.stroke_segments((np.array([[0, 0], [3, 80]], np.float32),))
    cells = render.scan_cells(one, np.random.default_rng(0), render.STYLE_PARAMS["scan"])
    assert cells.shape == (16, 16)
    assert cells.any(axis=0).all() and cells.any(axis=1).all()  # a slanted stroke stretched corner to corner, aspect lost


def test_the_grey_scan_style_deslants_and_keeps_grey_levels() -> None:
    slanted_one = render.stroke_segments((np.array([[0, 0], [30, 80]], np.float32),))  # (x, y): leaning right
    upright = render.deslant(slanted_one)
    assert np.allclose(upright[..., 1], upright[0, 0, 1])  # every point in one column: the lean sheared away
    assert np.array_equal(upright[..., 0], slanted_one[..., 0])  # rows untouched
    params = render.STYLE_PARAMS["grey_scan"]
    narrow_one = render.stroke_segments((np.array([[0, 0], [3, 80]], np.float32),))
    kept = render.box_ink(narrow_one, np.random.default_rng(0), {**params, "stretch": (0, 0)})
    filled = render.box_ink(narrow_one, np.random.default_rng(0), {**params, "stretch": (1, 1)})
    assert kept.any(axis=0).sum() <= 4 and filled.any(axis=0).all()  # aspect kept: a thin 1; stretched: a bar
    ink = render.box_ink(render.stroke_segments(SEVEN), np.random.default_rng(0), params)
    assert ((ink > 0.05) & (ink < 0.95)).any()  # anti-aliased edges, not binarised
    image = render.draw("grey_scan", render.stroke_segments(SEVEN), np.random.default_rng(0))
    assert image.dtype == np.uint8 and 48 <= image.shape[0] <= 16 * 8 * 2  # upscaled 3-8x, with its margin


def test_renders_keep_labels_are_seeded_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digits = [PenDigit(7, SEVEN, f"c/w{i}", f"f:{i}") for i in range(3)] + [PenDigit(1, (np.array([[0, 0], [2, 50]], np.float32),), "c/w9", "f:9")]
    styles = {"page": 0.5, "scan": 0.5}
    images, chosen = unipen_images.render_all(digits, 2, styles, seed=5, workers=1)
    again, _ = unipen_images.render_all(digits[2:], 2, styles, seed=5, workers=1, indices=[2, 3])
    assert images.shape == (4, 2, 28, 28) and np.array_equal(images[2:], again)  # a digit's renders do not depend on the others
    assert all(name in styles for names in chosen for name in names)
    assert (images.reshape(8, -1).max(axis=1) > 0).all()  # every render has ink
    monkeypatch.setattr(unipen_images, "split_digits", lambda data_dir, seed=0: {"train": digits, "val": digits[:1], "test": digits[:1]})
    monkeypatch.setattr(unipen_images, "_cache_key", lambda *args: "key")
    part = unipen_images.load_renders(tmp_path, "train", 2, styles, seed=5, cache_dir=tmp_path / "cache")
    assert part.labels.tolist() == [7, 7, 7, 1] and part.images.shape == (4, 2, 1, 28, 28)
    assert np.array_equal(part.images[:, :, 0].numpy(), images)
    assert (tmp_path / "cache" / "train-key.pt").is_file()
    monkeypatch.setattr(unipen_images, "render_all", lambda *args, **kwargs: pytest.fail("drew again instead of reading the cache"))
    cached = unipen_images.load_renders(tmp_path, "train", 2, styles, seed=5, cache_dir=tmp_path / "cache")
    assert np.array_equal(cached.images.numpy(), part.images.numpy())


def test_bad_style_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown drawing style"):
        unipen_images.check_styles({"crayon": 1})
    with pytest.raises(ValueError, match="positive sum"):
        unipen_images.check_styles({"page": 0})


def test_the_real_folder_reads_as_its_readme_says(mnist_dir: Path) -> None:
    """shared/data/UNIPEN: 15,306 drawable digits (README: 15,309, three of them padding strokes only), 13 contributors."""
    if not (mnist_dir / unipen.FOLDER).is_dir():
        pytest.skip(f"no UNIPEN folder in {mnist_dir} beside MNIST")
    parts = unipen_images.split_digits(str(mnist_dir))
    digits = [d for part in parts.values() for d in part]
    assert len(digits) == 15_306
    assert len({d.contributor for d in digits}) == 13 and len({d.writer for d in digits}) == 221
    test_writers = {d.writer for d in parts["test"]}
    assert 40 <= len(test_writers) <= 50 and not test_writers & {d.writer for d in parts["train"]}


def test_a_refused_drawing_is_drawn_again_at_last_with_the_page_pen(monkeypatch: pytest.MonkeyPatch) -> None:
    real = unipen_images.render_digit
    monkeypatch.setattr(unipen_images, "render_digit", lambda digit, style, rng: None if style == "pencil" else real(digit, style, rng))
    images, chosen = unipen_images.render_all([PenDigit(7, SEVEN, "c/w", "f:1")], 2, {"pencil": 1.0}, seed=0, workers=1)
    assert chosen == [["page", "page"]] and (images.reshape(2, -1).max(axis=1) > 0).all()
    monkeypatch.setattr(unipen_images, "render_digit", lambda digit, style, rng: None)
    with pytest.raises(UnipenError, match=r"f:1: no drawing of this digit holds readable ink"):
        unipen_images.render_all([PenDigit(7, SEVEN, "c/w", "f:1")], 1, {"page": 1.0}, seed=0, workers=1)
