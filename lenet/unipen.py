"""UNIPEN's isolated digits (train_r01_v07, category 1a): pen trajectories by about 200 writers, read
from the original text files and split by writer.

    digits = read_unipen("data")                 # [PenDigit, ...]: <data_dir>/UNIPEN/{data/1a,include}
    parts = writer_split(digits)                 # {"train": [...], "val": [...], "test": [...]}

The format (UNIPEN 1.0, plain latin-1 text): each segmentation file under `data/1a/` names its pen
data with `.INCLUDE <path under include/>` and then lists the digits, one `.SEGMENT CHARACTER
<components> <quality> "<label>"` line each. Pen data is `.PEN_DOWN`, one `x y` pair a line,
`.PEN_UP`; components (strokes) are numbered from 0 in the order their `.PEN_DOWN`s appear, counting
those of nested `.INCLUDE`s in place. A component list is a stroke (`73`), a range (`169-170`), a
comma list (`12,14`), or strokes with point offsets (`380:1-381`, `426:18-426:68`: inclusive).

The quirks (shared/data/UNIPEN/README.md): y grows upwards (flipped here, so strokes are in screen
coordinates); resolutions differ by contributor (a digit is scaled by its own box when drawn); the
segments of four contributors do not land on their digits with this numbering, so they are left out.
Writers are `<contributor>/<.WRITER_ID>`: no writer is shared across contributors.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet.datafiles import DataError

FOLDER = "UNIPEN"
CATEGORY = "1a"  # isolated digits
# Their segments name strokes that draw letters, scribbles or fragments under the numbering above.
EXCLUDED_CONTRIBUTORS = ("cea", "ceb", "pri", "tos")
SPLIT_SHARES = {"test": 0.2, "val": 0.1}  # of each contributor's writers; the rest trains
SPLIT_SEED = 0  # fixed: the held-out writers never change with a run's seed
_SEGMENT = re.compile(r'^\.SEGMENT\s+CHARACTER\s+(\S+)\s+(\S+)\s+"(.*)"\s*$')
_BOUND = re.compile(r"^(\d+)(?::(\d+))?$")  # a stroke, optionally with a point offset
ATTRIBUTION = (
    "UNIPEN train_r01_v07 (International Unipen Foundation; I. Guyon, L. Schomaker, R. Plamondon, M. Liberman, "
    "S. Janet, ICPR 1994), category 1a, CC BY 4.0"
)


class UnipenError(DataError):
    """The UNIPEN folder is missing, or one of its files is damaged; the message names the file and the fix."""


@dataclass(frozen=True)
class PenDigit:
    """One handwritten digit as its writer's pen drew it."""

    label: int
    strokes: tuple[np.ndarray, ...]  # each (P, 2) float32 (x, y), y growing downwards as on a screen
    writer: str  # "<contributor>/<writer id>"
    source: str  # "<segmentation file>:<line>", for error messages and inspection

    @property
    def contributor(self) -> str:
        return self.writer.split("/", 1)[0]


def unipen_folder(data_dir: str | Path) -> Path:
    return Path(data_dir) / FOLDER


def _missing(data_dir: str | Path, what: str) -> UnipenError:
    return UnipenError(
        f"UNIPEN is not in {unipen_folder(data_dir).resolve()} ({what}): put UNIPEN train_r01_v07's data/1a/ and "
        "include/ folders there (shared/data/UNIPEN/README.md), or point data.data_dir / LENET_DATA_DIR at the "
        "folder that holds UNIPEN/; or train on MNIST alone (data.sources=[mnist])."
    )


# ----------------------------------------------------------------------------- pen data


@dataclass
class _PenData:
    """The strokes of one included file (nested includes in place) and each stroke's writer."""

    strokes: list[np.ndarray]
    writers: list[str]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="latin-1").splitlines()
    except OSError as error:
        raise UnipenError(f"{path} cannot be read ({error.strerror or error}): copy an intact UNIPEN folder there.") from error


def read_pen_data(path: Path, include_dir: Path, writer: str = "", depth: int = 0) -> _PenData:
    """Every `.PEN_DOWN` stroke of a pen-data file, those of its `.INCLUDE`s counted where they stand."""
    if depth > 8:
        raise UnipenError(f"{path}: .INCLUDEs nested more than 8 deep (a file that includes itself?): the folder is damaged.")
    if not path.is_file():
        raise UnipenError(f"{path} is missing (named by an .INCLUDE): copy an intact UNIPEN folder there.")
    data = _PenData([], [])
    lines = _read_lines(path)
    index, down = 0, False
    while index < len(lines):
        line = lines[index].rstrip()
        index += 1
        if not line.startswith("."):  # keywords start their line; indented text (comments) is not one
            continue
        keyword, _, argument = line.partition(" ")
        argument = argument.strip()
        if keyword == ".INCLUDE":
            nested = read_pen_data(include_dir / argument, include_dir, writer, depth + 1)
            data.strokes += nested.strokes
            data.writers += nested.writers
        elif keyword == ".WRITER_ID":
            writer = argument
        elif keyword in (".PEN_DOWN", ".PEN_UP"):
            down = keyword == ".PEN_DOWN"
            start = index
            while index < len(lines) and not lines[index].startswith("."):
                index += 1
            if down:  # pen-up points (the pen hovering) are no ink
                data.strokes.append(_points(lines[start:index], path, start))
                data.writers.append(writer)
    return data


def _points(lines: Sequence[str], path: Path, first_line: int) -> np.ndarray:
    """`x y` lines -> (P, 2) float32 with y pointing down (the tablets' y grows upwards)."""
    rows = [line.split() for line in lines if line.strip()]
    if any(len(row) < 2 for row in rows):
        bad = next(i for i, line in enumerate(lines) if line.strip() and len(line.split()) < 2)
        raise UnipenError(f"{path}:{first_line + bad + 1}: a pen point needs x and y, got {lines[bad].strip()!r}: the file is damaged.")
    try:
        points = np.array([row[:2] for row in rows], np.float32).reshape(-1, 2)
    except ValueError as error:
        raise UnipenError(f"{path}:{first_line + 1}: pen points that are not numbers ({error}): the file is damaged.") from error
    points[:, 1] *= -1
    return points


# ----------------------------------------------------------------------------- segments


def parse_components(spec: str) -> list[tuple[int, int | None, int, int | None]]:
    """'380:1-381,12' -> [(380, 1, 381, None), (12, None, 12, None)]: (first stroke, its first point,
    last stroke, its last point), points inclusive and None for the stroke's own start or end."""
    parts = []
    for part in spec.split(","):
        start, _, end = part.partition("-")
        low, high = _BOUND.match(start), _BOUND.match(end or start)
        if not low or not high:
            raise ValueError(f"component range {part!r} is not N, N-M, N:P or N:P-M:Q")
        first, last = int(low[1]), int(high[1])
        first_point = int(low[2]) if low[2] else None
        last_point = int(high[2]) if high[2] else None
        if not end and first_point is not None:  # "N:P" alone: stroke N from point P on
            last_point = None
        if last < first:
            raise ValueError(f"component range {part!r} runs backwards")
        parts.append((first, first_point, last, last_point))
    return parts


def select_strokes(strokes: Sequence[np.ndarray], spec: str) -> list[np.ndarray]:
    """The strokes (or parts of strokes) a segment's component list names."""
    chosen = []
    for first, first_point, last, last_point in parse_components(spec):
        if last >= len(strokes):
            raise IndexError(f"stroke {last} is named but the pen data has {len(strokes)} strokes (0-{len(strokes) - 1})")
        for number in range(first, last + 1):
            points = strokes[number]
            begin = first_point if number == first and first_point is not None else 0
            end = last_point + 1 if number == last and last_point is not None else len(points)
            chosen.append(points[begin:end])
    return chosen


def read_segmentation(path: Path, root: Path) -> list[PenDigit]:
    """The digits one segmentation file (under data/1a/) names, from the pen data it includes."""
    include_dir = root / "include"
    contributor = path.relative_to(root / "data" / CATEGORY).parts[0]
    pen = _PenData([], [])
    digits = []
    for number, raw in enumerate(_read_lines(path), start=1):
        line = raw.rstrip()
        if line.startswith(".INCLUDE"):
            included = read_pen_data(include_dir / line.split(None, 1)[1].strip(), include_dir)
            pen.strokes += included.strokes
            pen.writers += included.writers
        elif line.startswith(".SEGMENT"):
            where = f"{path.relative_to(root)}:{number}"
            match = _SEGMENT.match(line)
            if not match:
                raise UnipenError(f"{where}: {line!r} is not '.SEGMENT CHARACTER <components> <quality> \"<digit>\"': the file is damaged.")
            spec, quality, label = match.groups()
            if quality.upper() == "BAD":  # the contributor marked the segmentation wrong
                continue
            if len(label) != 1 or not label.isdigit():
                raise UnipenError(f"{where}: label {label!r} is not a digit 0-9: category 1a holds digits only; the file is damaged.")
            try:
                strokes = select_strokes(pen.strokes, spec)
            except (ValueError, IndexError) as error:
                raise UnipenError(f"{where}: {error}: the segment does not fit its pen data; the file is damaged.") from error
            strokes = [s for s in strokes if s.any()]  # some tablets pad with all-zero strokes
            if not strokes:  # only padding strokes: nothing was written there
                continue
            writer = pen.writers[parse_components(spec)[0][0]] or Path(path).stem  # no .WRITER_ID: one writer a file
            digits.append(PenDigit(int(label), tuple(strokes), f"{contributor}/{writer}", where))
    return digits


def segmentation_files(data_dir: str | Path) -> list[Path]:
    """The category's segmentation files, contributors in EXCLUDED_CONTRIBUTORS left out, in a fixed order."""
    root = unipen_folder(data_dir)
    segments = root / "data" / CATEGORY
    if not segments.is_dir():
        raise _missing(data_dir, f"no data/{CATEGORY}/ folder")
    if not (root / "include").is_dir():
        raise _missing(data_dir, "no include/ folder")
    files = sorted(
        path for path in segments.rglob("*.dat")
        if path.relative_to(segments).parts[0] not in EXCLUDED_CONTRIBUTORS
    )  # fmt: skip
    if not files:
        raise _missing(data_dir, f"data/{CATEGORY}/ holds no .dat segmentation files")
    return files


def read_unipen(data_dir: str | Path) -> list[PenDigit]:
    """Every digit of the category's segmentation files (see module docstring), in a fixed order."""
    root = unipen_folder(data_dir)
    return [digit for path in segmentation_files(data_dir) for digit in read_segmentation(path, root)]


# ----------------------------------------------------------------------------- the writer split


def _rank(writer: str, seed: int) -> str:
    """A writer's place in its contributor's seeded order: a hash, so adding writers never moves others."""
    return hashlib.sha256(f"{seed}:{writer}".encode()).hexdigest()


def split_writers(writers: Iterable[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Writer -> "train", "val" or "test": per contributor, about SPLIT_SHARES of its writers (at least one
    test writer where there are two or more, a validation writer only where three would still train)."""
    by_contributor: dict[str, list[str]] = defaultdict(list)
    for writer in sorted(set(writers)):
        by_contributor[writer.split("/", 1)[0]].append(writer)
    assignment = {}
    for members in by_contributor.values():
        members.sort(key=lambda w: _rank(w, seed))
        count = len(members)
        tests = max(1, round(SPLIT_SHARES["test"] * count)) if count >= 2 else 0
        vals = max(1, round(SPLIT_SHARES["val"] * count)) if count - tests >= 3 else 0
        for position, writer in enumerate(members):
            assignment[writer] = "test" if position < tests else "val" if position < tests + vals else "train"
    return assignment


def writer_split(digits: Sequence[PenDigit], seed: int = SPLIT_SEED) -> dict[str, list[PenDigit]]:
    """The digits of the train, val and test writers (no writer in two parts), each in reading order."""
    assignment = split_writers((d.writer for d in digits), seed)
    parts: dict[str, list[PenDigit]] = {"train": [], "val": [], "test": []}
    for digit in digits:
        parts[assignment[digit.writer]].append(digit)
    return parts
