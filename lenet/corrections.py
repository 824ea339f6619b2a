"""Corrections kept in SQLite: digits the model misread, with the label their writer gave. lenet-serve
--collect FILE writes them (POST /feedback); the `lenet-corrections` command reads and prunes them:

    lenet-corrections list corrections.db [--newest 10]
    lenet-corrections export corrections.db FOLDER [--writer TAG]   # FOLDER/000001.png ..., FOLDER/labels.csv
    lenet-corrections delete corrections.db --writer TAG | --older-than 30d

A row holds the prepared 28x28 image (784 uint8 bytes: what the model read), the original upload when
it is at most `max_upload_bytes`, the label (0-9, or NOT_A_DIGIT), the model's answer and confidence,
the model's id (/healthz's `checkpoint`), the writer's tag if one was given, and the time.

Standard library only (Pillow for export; NumPy and torch to read rows as tensors). The database is
in WAL mode, so readers never wait for the writer. Each thread of each process opens its own
connection; a write is one short BEGIN IMMEDIATE transaction, and a writer that finds another one
busy waits for it (SQLite's busy handler retries) up to `busy_timeout_s`, then gets CorrectionsBusy.
The row and byte limits are checked inside that transaction, so several server processes together
cannot go past them. Every failure is a CorrectionsError whose message names the file and what to do.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

SIDE = 28
PREPARED_BYTES = SIDE * SIDE  # one prepared image, uint8, row by row
NOT_A_DIGIT = 10  # the label of a drawing that is no digit at all
NOT_A_DIGIT_NAME = "not_a_digit"  # how the API and labels.csv spell it
MAX_ROWS = 100_000  # per database
MAX_BYTES = 500_000_000  # per database: images, uploads, tags and model ids, as stored
MAX_UPLOAD_BYTES = 256_000  # a larger upload (a photo) keeps only its prepared image
MAX_WRITER_CHARS = 64
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another process's write before CorrectionsBusy
SCHEMA_VERSION = 1  # PRAGMA user_version of a corrections database

SCHEMA = (  # statements run one by one: executescript would commit the transaction they are made in
    f"""CREATE TABLE corrections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: an exported file name means one correction
        created REAL NOT NULL,                  -- seconds since 1970, UTC
        label INTEGER NOT NULL CHECK (label BETWEEN 0 AND {NOT_A_DIGIT}),
        prepared BLOB NOT NULL CHECK (length(prepared) = {PREPARED_BYTES}),
        upload BLOB,                            -- NULL: over the size kept, or sent by prediction id
        predicted INTEGER NOT NULL,
        confidence REAL NOT NULL,
        model TEXT NOT NULL,
        writer TEXT,
        size INTEGER NOT NULL                   -- the bytes this row counts against the byte limit
    )""",
    "CREATE INDEX corrections_writer ON corrections (writer)",
    "CREATE INDEX corrections_created ON corrections (created)",
    # The totals the limits are checked against, kept by triggers: counting at every insert would read the table.
    "CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 1), rows INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    "INSERT INTO totals VALUES (1, 0, 0)",
    "CREATE TRIGGER count_insert AFTER INSERT ON corrections BEGIN UPDATE totals SET rows = rows + 1, bytes = bytes + NEW.size; END",
    "CREATE TRIGGER count_delete AFTER DELETE ON corrections BEGIN UPDATE totals SET rows = rows - 1, bytes = bytes - OLD.size; END",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class CorrectionsError(Exception):
    """A corrections database that cannot be used: the message names the file and the fix."""


class CorrectionsBusy(CorrectionsError):
    """Another writer held the database for longer than the busy timeout: retry in a moment."""


class CorrectionsFull(CorrectionsError):
    """The database is at its row or byte limit, or its disk is full."""


@dataclass(frozen=True)
class Correction:
    """One correction to keep; `prepared` is the 28x28 image the model read, uint8, row by row."""

    label: int
    prepared: bytes
    predicted: int
    confidence: float
    model: str
    writer: str | None = None
    upload: bytes | None = None


@dataclass(frozen=True)
class Row(Correction):
    """A stored correction: its id and time (seconds since 1970, UTC) as well."""

    id: int = 0
    created: float = 0.0


FIELDS = ", ".join(field.name for field in fields(Correction))  # the columns a Correction fills, in its order
ROW_FIELDS = ", ".join(field.name for field in fields(Row))

# ----------------------------------------------------------------------------- checking values


def parse_label(value: int | str) -> int:
    """0-9 (a number or its digit as text), or "not_a_digit" -> NOT_A_DIGIT."""
    if isinstance(value, str) and value.strip().lower() == NOT_A_DIGIT_NAME:
        return NOT_A_DIGIT
    if isinstance(value, str) and value.strip() in tuple("0123456789"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return value
    raise ValueError(f'label {value!r} is not a digit: send 0 to 9, or "{NOT_A_DIGIT_NAME}" for a drawing that is none.')


def label_name(label: int) -> str:
    return NOT_A_DIGIT_NAME if label == NOT_A_DIGIT else str(label)


def check_writer(tag: str | None) -> str | None:
    """A writer's tag, stripped, or None when empty; refused when long or not plain text."""
    tag = (tag or "").strip()
    if len(tag) > MAX_WRITER_CHARS:
        raise ValueError(f"the writer tag is {len(tag)} characters, over the limit of {MAX_WRITER_CHARS}: choose a shorter one.")
    if not tag.isprintable():
        raise ValueError("the writer tag holds a line break, tab or other control character: use plain text.")
    return tag or None


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s' or a number of seconds -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise ValueError(f"age {text!r} is not a duration: write a number and s, m, h or d (30d, 12h, 90m).")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


# ----------------------------------------------------------------------------- the store


class CorrectionStore:
    """The corrections database at `path`, created when missing (unless create=False). Safe to share
    between threads: each thread uses its own connection."""

    def __init__(
        self,
        path: str | Path,
        max_rows: int = MAX_ROWS,
        max_bytes: int = MAX_BYTES,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.max_rows, self.max_bytes, self.max_upload_bytes = max_rows, max_bytes, max_upload_bytes
        self.busy_timeout_s = busy_timeout_s
        if not create and not self.path.is_file():
            raise CorrectionsError(f"{self.path} does not exist: pass the file lenet-serve --collect wrote.")
        self.local = threading.local()
        self.connection()  # a damaged or foreign file is refused now, not at the first correction

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked process opens its own)."""
        if getattr(self.local, "pid", None) != os.getpid():
            self.local.connection = self.connect()
            self.local.pid = os.getpid()
        return self.local.connection

    def connect(self) -> sqlite3.Connection:
        with sqlite_errors(self.path):
            # isolation_level=None: no implicit transactions; each write says BEGIN IMMEDIATE itself.
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: a crash of the process loses nothing
            with transaction(connection):  # two processes starting at once: one makes the tables
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                if version == 0 and not tables:
                    for statement in SCHEMA:
                        connection.execute(statement)
        if version == 0 and not tables or version == SCHEMA_VERSION and "corrections" in tables:
            return connection
        connection.close()
        raise CorrectionsError(
            f"{self.path} is an SQLite database of something else (version {version}, tables: "
            f"{', '.join(tables) or 'none'}): give lenet-serve --collect a new file name."
        )

    def add(self, correction: Correction) -> Row:
        """Keep one correction; CorrectionsFull when the database is at a limit."""
        if len(correction.prepared) != PREPARED_BYTES:
            raise ValueError(f"a prepared image is {PREPARED_BYTES} bytes (28x28 uint8), got {len(correction.prepared)}")
        if correction.label not in range(NOT_A_DIGIT + 1):
            raise ValueError(f"label {correction.label!r}: 0 to 9, or NOT_A_DIGIT ({NOT_A_DIGIT})")
        writer = check_writer(correction.writer)
        upload = correction.upload if correction.upload and len(correction.upload) <= self.max_upload_bytes else None
        kept = replace(correction, writer=writer, upload=upload)
        size = PREPARED_BYTES + len(upload or b"") + len(kept.model.encode()) + len((writer or "").encode())
        created = time.time()
        with self.writing() as db:
            rows, stored = db.execute("SELECT rows, bytes FROM totals").fetchone()
            if rows + 1 > self.max_rows or stored + size > self.max_bytes:
                limit = f"{self.max_rows:,} rows" if rows + 1 > self.max_rows else f"{self.max_bytes:,} bytes"
                raise CorrectionsFull(
                    f"the corrections database {self.path} is full ({rows:,} rows, {stored:,} bytes; limit {limit}): "
                    f"export and delete rows (lenet-corrections delete {self.path} --older-than 30d), or raise the limit."
                )
            values = [*vars(kept).values(), created, size]
            placeholders = ", ".join("?" * len(values))
            row_id = db.execute(f"INSERT INTO corrections ({FIELDS}, created, size) VALUES ({placeholders})", values).lastrowid
        return Row(**vars(kept), id=row_id, created=created)

    def rows(self, writer: str | None = None, newest: int | None = None) -> list[Row]:
        """The stored corrections, oldest first, or the `newest` few, newest first; only `writer`'s if given."""
        query, values = f"SELECT {ROW_FIELDS} FROM corrections", []
        if writer is not None:
            query, values = query + " WHERE writer = ?", [writer]
        if newest is None:
            query += " ORDER BY id"
        else:
            query, values = query + " ORDER BY id DESC LIMIT ?", [*values, newest]
        with sqlite_errors(self.path):
            found = self.connection().execute(query, values).fetchall()
        return [Row(*values) for values in found]

    def totals(self) -> tuple[int, int]:
        """(rows, bytes) stored, as the limits count them."""
        with sqlite_errors(self.path):
            return self.connection().execute("SELECT rows, bytes FROM totals").fetchone()

    def counts(self, column: str) -> dict[int | str | None, int]:
        """Rows by label or by writer."""
        if column not in ("label", "writer"):
            raise ValueError(f"counts by label or writer, not {column!r}")
        with sqlite_errors(self.path):
            return dict(self.connection().execute(f"SELECT {column}, count(*) FROM corrections GROUP BY {column} ORDER BY {column}"))

    def delete(self, writer: str | None = None, older_than_s: float | None = None) -> int:
        """Delete the rows of `writer`, or older than `older_than_s`, or both (both must match): how many."""
        if writer is None and older_than_s is None:
            raise ValueError("delete needs a writer tag, an age, or both")
        conditions, values = [], []
        if writer is not None:
            conditions.append("writer = ?")
            values.append(writer)
        if older_than_s is not None:
            conditions.append("created < ?")
            values.append(time.time() - older_than_s)
        with self.writing() as db:
            return db.execute(f"DELETE FROM corrections WHERE {' AND '.join(conditions)}", values).rowcount

    def export(self, folder: str | Path, writer: str | None = None) -> int:
        """The prepared images as FOLDER/<id>.png (28x28 greyscale) and FOLDER/labels.csv: how many."""
        from PIL import Image

        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise CorrectionsError(f"{folder} is not empty: export into a new or empty folder.")
        folder.mkdir(parents=True, exist_ok=True)
        rows = self.rows(writer)
        with open(folder / "labels.csv", "w", newline="") as labels:
            table = csv.writer(labels)
            table.writerow(["file", "label", "writer", "predicted", "confidence", "model", "created"])
            for row in rows:
                name = f"{row.id:06d}.png"
                Image.frombytes("L", (SIDE, SIDE), row.prepared).save(folder / name)
                created = datetime.fromtimestamp(row.created, timezone.utc).isoformat(timespec="seconds")
                confidence = f"{row.confidence:.4f}"
                table.writerow([name, label_name(row.label), row.writer or "", row.predicted, confidence, row.model, created])
        return len(rows)

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), so it never has to upgrade a read lock."""
        connection = self.connection()
        with sqlite_errors(self.path), transaction(connection):
            yield connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.rollback()
        raise
    connection.execute("COMMIT")


@contextmanager
def sqlite_errors(path: Path) -> Iterator[None]:
    """SQLite's errors as CorrectionsErrors naming the file and the fix."""
    try:
        yield
    except sqlite3.Error as error:
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        reason = str(error)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise CorrectionsBusy(f"the corrections database {path} is busy ({reason}): retry in a moment.") from error
        if code == sqlite3.SQLITE_FULL:
            raise CorrectionsFull(f"the disk holding the corrections database {path} is full: free space, or move it.") from error
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise CorrectionsError(
                f"the corrections database {path} is damaged ({reason}): move it aside (sqlite3 {path} .recover "
                "may save its rows) and start a new file."
            ) from error
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR):
            raise CorrectionsError(
                f"the corrections database {path} cannot be opened or written ({reason}): check that its folder exists "
                "and that this user may write to it and to the file."
            ) from error
        raise CorrectionsError(f"the corrections database {path} failed ({reason}): check the file, or start a new one.") from error


# ----------------------------------------------------------------------------- reading them as a dataset


def read_corrections(source: str | Path, writer: str | None = None) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 1, 28, 28) and labels (0-9, NOT_A_DIGIT) from a corrections database (lenet-serve
    --collect) or a folder exported by `lenet-corrections export` (labels.csv and PNGs); only `writer`'s if given.
    The tensors are how training (data.sources=[...,corrections]) and lenet.adapt read corrections."""
    import numpy as np
    import torch

    source = Path(source)
    if source.is_dir():
        return read_export(source, writer)
    rows = CorrectionStore(source, create=False).rows(writer)
    if not rows:
        raise CorrectionsError(f"{source} holds no corrections{f' by writer {writer!r}' if writer else ''}: list them with lenet-corrections list {source}.")
    images = torch.from_numpy(np.stack([np.frombuffer(row.prepared, np.uint8).reshape(1, 28, 28) for row in rows]))
    return images, torch.tensor([row.label for row in rows])


def read_export(folder: Path, writer: str | None = None) -> tuple[Tensor, Tensor]:
    """An export folder: labels.csv (file, label, writer, ...) and its 28x28 greyscale PNGs."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    table = folder / "labels.csv"
    if not table.is_file():
        raise CorrectionsError(f"{folder} has no labels.csv: pass a folder written by lenet-corrections export, or the database itself.")
    with open(table, newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if writer is None or row.get("writer") == writer]
    if not rows:
        raise CorrectionsError(f"{table} lists no corrections{f' by writer {writer!r}' if writer else ''}: export some with lenet-corrections export.")
    images, labels = [], []
    for row in rows:
        path = folder / Path(row.get("file") or "").name  # a name inside the folder, never a path elsewhere
        try:
            labels.append(parse_label(row.get("label") or ""))
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L") if image.mode != "L" else image)
        except ValueError as error:
            raise CorrectionsError(f"{table}, {row.get('file')}: {error}") from error
        except (OSError, UnidentifiedImageError) as error:
            raise CorrectionsError(f"{path} cannot be read as an image ({error}): export the corrections again.") from error
        if pixels.shape != (28, 28):
            raise CorrectionsError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not a prepared 28x28 image: export the corrections again.")
        images.append(pixels[None])
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


# ----------------------------------------------------------------------------- the command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lenet-corrections", description="List, export and delete the corrections lenet-serve --collect kept."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="counts by label and writer, and the newest rows")
    listing.add_argument("database")
    listing.add_argument("--newest", type=int, default=10, help="rows to show (default: 10)")
    export = commands.add_parser("export", help="the prepared images as PNGs and labels.csv, into a new folder")
    export.add_argument("database")
    export.add_argument("folder")
    export.add_argument("--writer", help="only this writer's corrections")
    delete = commands.add_parser("delete", help="delete by writer tag, by age, or both")
    delete.add_argument("database")
    delete.add_argument("--writer", help="the writer tag whose rows to delete")
    delete.add_argument("--older-than", help="delete rows older than this: 30d, 12h, 90m, 45s")
    args = parser.parse_args(argv)
    if args.command == "delete":
        if args.writer is None and args.older_than is None:
            parser.error("delete needs --writer TAG, --older-than AGE, or both")
        try:
            args.older_than = None if args.older_than is None else parse_age(args.older_than)
        except ValueError as error:
            parser.error(str(error))
    if args.command == "list" and args.newest < 0:
        parser.error(f"--newest must be 0 or more, got {args.newest}")
    return args


def describe(store: CorrectionStore, newest: int) -> str:
    rows, stored = store.totals()
    lines = [f"{store.path}: {rows:,} corrections, {stored:,} bytes"]
    by_label = store.counts("label")
    lines.append("by label:  " + ("  ".join(f"{label_name(label)}: {n}" for label, n in by_label.items()) or "none"))
    by_writer = store.counts("writer")
    lines.append("by writer: " + ("  ".join(f"{writer or '(no tag)'}: {n}" for writer, n in by_writer.items()) or "none"))
    if newest and rows:
        lines.append(f"newest {min(newest, rows)}:")
        lines.append(f"  {'id':>7}  {'time (UTC)':19}  {'label':>11}  {'model said':>14}  {'upload':>8}  writer")
        for row in store.rows(newest=newest):
            when = datetime.fromtimestamp(row.created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            said = f"{row.predicted} ({row.confidence:.0%})"
            upload = f"{len(row.upload):,}" if row.upload else "-"
            lines.append(f"  {row.id:>7}  {when}  {label_name(row.label):>11}  {said:>14}  {upload:>8}  {row.writer or ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        store = CorrectionStore(args.database, create=False)
        if args.command == "list":
            print(describe(store, args.newest))
        elif args.command == "export":
            count = store.export(args.folder, args.writer)
            print(f"exported {count} corrections to {args.folder} (PNGs and labels.csv)")
        else:
            count = store.delete(args.writer, args.older_than)
            print(f"deleted {count} corrections from {args.database}; {store.totals()[0]:,} left")
    except CorrectionsError as error:
        print(f"lenet-corrections: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
