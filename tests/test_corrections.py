"""Corrections: the SQLite store (lenet.corrections), POST /feedback of lenet-serve --collect, and the
lenet-corrections command. Fast tier: a model trained briefly on synthetic digits, no MNIST."""

from __future__ import annotations

import base64
import csv
import io
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from lenet.corrections import (
    NOT_A_DIGIT, PREPARED_BYTES, Correction, CorrectionsBusy, CorrectionsError, CorrectionsFull, CorrectionStore, main,
)  # fmt: skip
from lenet.serve import create_app
from lenet.serve.cli import main as serve_main

MAX_UPLOAD = 100_000  # a small limit, so the over-size case stays cheap


def pad_png(strokes=((75, 55), (205, 55), (115, 235)), side: int = 280) -> bytes:
    """A 7 drawn as the page draws it: a black round pen on a white 280x280 pad."""
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line(list(strokes), fill=0, width=24, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def correction(label: int = 3, writer: str | None = None, seed: int = 0) -> Correction:
    prepared = np.random.default_rng(seed).integers(0, 256, PREPARED_BYTES, dtype=np.uint8).tobytes()
    return Correction(label, prepared, predicted=5, confidence=0.75, model="test-model", writer=writer, upload=b"png")


@pytest.fixture(scope="module")
def collecting(synthetic_run, tmp_path_factory):
    """A client of an app with collection on, and its database's path."""
    database = tmp_path_factory.mktemp("collect") / "corrections.db"
    with TestClient(create_app(synthetic_run, max_upload_bytes=MAX_UPLOAD, collect=database)) as client:
        yield client, database


def rows(database) -> list:
    return CorrectionStore(database, create=False).rows()


# ----------------------------------------------------------------------------- POST /feedback


def test_feedback_multipart_json_and_by_id_are_stored(collecting):
    client, database = collecting
    before = len(rows(database))
    png = pad_png()
    health = client.get("/healthz").json()
    assert health["collecting"] is True
    predicted = client.post("/predict?preview=true", files={"file": ("digit.png", png, "image/png")}).json()
    assert len(predicted["id"]) == 32

    sent = [
        client.post("/feedback", files={"file": ("digit.png", png, "image/png")}, data={"label": "1", "writer": "ada"}),
        client.post("/feedback", json={"image": base64.b64encode(png).decode(), "label": "not_a_digit"}),
        client.post("/feedback", json={"prediction_id": predicted["id"], "label": 4, "writer": " ada "}),
        client.post("/feedback", files={"prediction_id": (None, predicted["id"]), "label": (None, "9")}),
    ]
    answers = [response.json() for response in sent]
    assert [response.status_code for response in sent] == [200] * 4, answers
    assert [answer["label"] for answer in answers] == [1, "not_a_digit", 4, 9]
    assert [answer["upload_kept"] for answer in answers] == [True, True, False, False]

    stored = rows(database)[before:]
    assert [row.id for row in stored] == [answer["id"] for answer in answers]
    assert [row.label for row in stored] == [1, NOT_A_DIGIT, 4, 9]
    assert [row.writer for row in stored] == ["ada", None, "ada", None]
    assert stored[0].upload == png and stored[1].upload == png and stored[2].upload is None
    # Each row holds the image the model read, its answer and the model's id as /healthz names it.
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(predicted["preprocessed_png"]))))
    for row in stored:
        assert np.array_equal(np.frombuffer(row.prepared, np.uint8).reshape(28, 28), seen)
        assert (row.predicted, row.model) == (predicted["digit"], health["checkpoint"])
        assert row.confidence == pytest.approx(predicted["confidence"], abs=1e-6)


@pytest.mark.parametrize(
    ("request_args", "status", "words"),
    [
        ({"json": {"image": "PNG", "label": 11}}, 400, "label 11 is not a digit"),
        ({"json": {"image": "PNG", "label": "seven"}}, 400, "send 0 to 9"),
        ({"json": {"image": "PNG", "label": True}}, 400, '"label": 0-9 or "not_a_digit"'),  # not taken as 1
        ({"json": {"image": "PNG"}}, 400, "label: Field required"),
        ({"json": {"label": 3}}, 400, "no image and no prediction_id"),
        ({"files": {"label": (None, "3")}}, 400, "no image and no prediction_id"),
        ({"json": {"image": "PNG", "prediction_id": "abc", "label": 3}}, 400, "both an image and a prediction_id"),
        ({"json": {"prediction_id": "0" * 32, "label": 3}}, 404, "send the image itself"),
        ({"json": {"image": "PNG", "label": 3, "writer": "x" * 65}}, 400, "over the limit of 64"),
        ({"json": {"image": "PNG", "label": 3, "writer": "a\nb"}}, 400, "control character"),
        ({"json": {"image": base64.b64encode(b"not an image").decode(), "label": 3}}, 400, "not an image file"),
        ({"json": {"image": "@@@", "label": 3}}, 400, "not valid base64"),
        ({"files": {"file": ("big.png", bytes(MAX_UPLOAD + 1), "image/png"), "label": (None, "3")}}, 413, "over the server's limit"),
        ({"content": b"label=3", "headers": {"content-type": "text/plain"}}, 415, '"label"'),
    ],
)
def test_bad_feedback_is_a_clear_4xx_and_keeps_nothing(collecting, request_args, status, words):
    client, database = collecting
    before = len(rows(database))
    if request_args.get("json", {}).get("image") == "PNG":
        request_args = {"json": {**request_args["json"], "image": base64.b64encode(pad_png()).decode()}}
    response = client.post("/feedback", **request_args)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert len(rows(database)) == before


def test_collection_off_answers_404(synthetic_run):
    with TestClient(create_app(synthetic_run)) as client:
        assert client.get("/healthz").json()["collecting"] is False
        assert "id" not in client.post("/predict", files={"file": ("d.png", pad_png(), "image/png")}).json()
        for request_args in ({"json": {"label": 3}}, {"files": {"file": ("d.png", pad_png(), "image/png")}}, {"content": b"x"}):
            response = client.post("/feedback", **request_args)
            assert response.status_code == 404
            assert "collection is off" in response.json()["detail"] and "--collect" in response.json()["detail"]


@contextmanager
def serving(client, store: CorrectionStore):
    """The app writes to `store` inside the block (pytest's monkeypatch cannot restore Starlette's State)."""
    state = client.app.state
    original, state.corrections = state.corrections, store
    try:
        yield
    finally:
        state.corrections = original


def test_full_locked_and_damaged_databases_are_clear_answers(collecting, tmp_path):
    client, _ = collecting
    upload = {"files": {"file": ("digit.png", pad_png(), "image/png")}, "data": {"label": "2"}}

    with serving(client, CorrectionStore(tmp_path / "full.db", max_rows=1)):
        assert client.post("/feedback", **upload).status_code == 200
        response = client.post("/feedback", **upload)
    assert response.status_code == 507 and response.json()["error"] == "corrections_full"
    assert "full.db is full" in response.json()["detail"] and "lenet-corrections delete" in response.json()["detail"]

    locked = CorrectionStore(tmp_path / "locked.db", busy_timeout_s=0.2)
    holder = sqlite3.connect(locked.path, isolation_level=None)
    with serving(client, locked):
        holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
        response = client.post("/feedback", **upload)
        holder.execute("ROLLBACK")
        assert client.post("/feedback", **upload).status_code == 200  # kept once the other writer is done
    holder.close()
    assert response.status_code == 503 and response.json()["error"] == "busy" and response.headers["retry-after"] == "1"
    assert "locked.db is busy" in response.json()["detail"] and "retry" in response.json()["detail"]

    damaged = CorrectionStore(tmp_path / "damaged.db")
    damaged.connection().close()  # this thread's: the server's own thread opens the file at its first write
    with open(damaged.path, "r+b") as file:  # overwritten while the server runs
        file.write(b"not a database!!" * 8)
    with serving(client, damaged):
        response = client.post("/feedback", **upload)
    assert response.status_code == 503 and response.json()["error"] == "corrections_unavailable"
    assert "damaged.db is damaged" in response.json()["detail"] and "start a new file" in response.json()["detail"]


def test_lenet_serve_refuses_a_damaged_database_in_one_line(synthetic_run, tmp_path, capsys):
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"these are not the corrections you are looking for" * 100)
    assert serve_main(["--ckpt", str(synthetic_run), "--collect", str(damaged)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "damaged.db is damaged" in error and "start a new file" in error


# ----------------------------------------------------------------------------- the store


def test_limits_are_enforced_at_insert(tmp_path):
    store = CorrectionStore(tmp_path / "rows.db", max_rows=3)
    for seed in range(3):
        store.add(correction(seed=seed))
    with pytest.raises(CorrectionsFull, match=r"rows\.db is full \(3 rows, .* limit 3 rows\)"):
        store.add(correction())
    assert store.totals()[0] == 3
    store.delete(older_than_s=0)  # every row: room again
    assert store.totals() == (0, 0) and store.add(correction()).id == 4

    row_bytes = PREPARED_BYTES + len(b"png") + len("test-model")
    store = CorrectionStore(tmp_path / "bytes.db", max_bytes=2 * row_bytes + 10)
    store.add(correction())
    assert store.totals() == (1, row_bytes)
    store.add(correction())
    with pytest.raises(CorrectionsFull, match=f"limit {2 * row_bytes + 10:,} bytes"):
        store.add(correction())

    small = CorrectionStore(tmp_path / "uploads.db", max_upload_bytes=2)
    assert small.add(correction()).upload is None  # a large upload keeps only its prepared image
    with pytest.raises(ValueError, match="label 11"):
        small.add(Correction(11, bytes(PREPARED_BYTES), 1, 0.5, "m"))
    with pytest.raises(ValueError, match="784 bytes"):
        small.add(Correction(1, bytes(10), 1, 0.5, "m"))


def test_foreign_and_missing_files_are_refused(tmp_path):
    other = tmp_path / "optuna.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE trials (x)")
    with pytest.raises(CorrectionsError, match="optuna.db is an SQLite database of something else .*tables: trials"):
        CorrectionStore(other)
    with pytest.raises(CorrectionsError, match="missing.db does not exist"):
        CorrectionStore(tmp_path / "missing.db", create=False)
    with pytest.raises(CorrectionsError, match="cannot be opened or written .* check that its folder exists"):
        CorrectionStore(tmp_path / "no" / "folder.db")


WRITER_PROCESS = """
import sys
from lenet.corrections import Correction, CorrectionStore
store = CorrectionStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.add(Correction(i % 10, bytes([i % 256]) * 784, 0, 0.5, "process", sys.argv[2]))
"""


def test_concurrent_writers_lose_no_row(tmp_path):
    """Four threads and two processes write at once: every row is there, once."""
    database = tmp_path / "concurrent.db"
    store = CorrectionStore(database)
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, str(database), writer, "150"], stderr=subprocess.PIPE, text=True)
        for writer in ("process0", "process1")
    ]
    errors: list[Exception] = []

    def write(thread: int) -> None:
        try:
            for i in range(100):
                store.add(correction(label=i % 10, writer=f"thread{thread}", seed=i))
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    assert errors == []
    assert store.counts("writer") == {"process0": 150, "process1": 150, **{f"thread{n}": 100 for n in range(4)}}
    stored = store.rows()
    assert len({row.id for row in stored}) == len(stored) == 700 == store.totals()[0]


def test_a_busy_database_waits_then_says_so(tmp_path):
    store = CorrectionStore(tmp_path / "busy.db", busy_timeout_s=0.1)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(CorrectionsBusy, match="busy.db is busy"):
        store.add(correction())
    assert [row.id for row in store.rows()] == []  # readers do not wait for the writer (WAL)
    holder.execute("ROLLBACK")
    assert store.add(correction()).id == 1


# ----------------------------------------------------------------------------- lenet-corrections


def test_export_round_trips(tmp_path, capsys):
    database = tmp_path / "corrections.db"
    store = CorrectionStore(database)
    labels_and_writers = [(3, "ada"), (NOT_A_DIGIT, None), (7, "bob")]
    kept = [store.add(correction(label, writer, seed)) for seed, (label, writer) in enumerate(labels_and_writers)]
    assert main(["export", str(database), str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "labels.csv", newline="") as labels:
        table = list(csv.DictReader(labels))
    assert [(line["label"], line["writer"]) for line in table] == [("3", "ada"), ("not_a_digit", ""), ("7", "bob")]
    assert {(line["predicted"], line["confidence"], line["model"]) for line in table} == {("5", "0.7500", "test-model")}
    for line, row in zip(table, kept):
        image = Image.open(tmp_path / "out" / line["file"])
        assert image.size == (28, 28) and image.mode == "L" and image.tobytes() == row.prepared
    assert "exported 3 corrections" in capsys.readouterr().out

    assert main(["export", str(database), str(tmp_path / "ada"), "--writer", "ada"]) == 0
    assert sorted(path.name for path in (tmp_path / "ada").iterdir()) == [f"{kept[0].id:06d}.png", "labels.csv"]
    assert main(["export", str(database), str(tmp_path / "out")]) == 2  # never mixed into an earlier export
    assert "out is not empty" in capsys.readouterr().err


def test_list_and_delete(tmp_path, capsys):
    database = tmp_path / "corrections.db"
    store = CorrectionStore(database)
    for seed, (label, writer) in enumerate([(3, "ada"), (3, "ada"), (NOT_A_DIGIT, None), (7, "bob")]):
        store.add(correction(label, writer, seed))
    assert main(["list", str(database), "--newest", "2"]) == 0
    listed = capsys.readouterr().out
    assert "4 corrections" in listed and "3: 2" in listed and "not_a_digit: 1" in listed and "ada: 2" in listed
    assert "newest 2:" in listed and len(listed.splitlines()) == 3 + 2 + 2

    assert main(["delete", str(database), "--writer", "ada"]) == 0
    assert "deleted 2 corrections" in capsys.readouterr().out
    assert main(["delete", str(database), "--older-than", "1d"]) == 0  # none that old
    assert "deleted 0 corrections" in capsys.readouterr().out and store.totals()[0] == 2
    assert main(["delete", str(database), "--older-than", "0s"]) == 0
    assert store.totals() == (0, 0)


def test_command_errors_are_one_line(tmp_path, capsys):
    assert main(["list", str(tmp_path / "missing.db")]) == 2
    missing = tmp_path / "missing.db"
    assert capsys.readouterr().err.strip() == f"lenet-corrections: {missing} does not exist: pass the file lenet-serve --collect wrote."
    (tmp_path / "damaged.db").write_bytes(b"x" * 4096)
    assert main(["list", str(tmp_path / "damaged.db")]) == 2
    assert "damaged.db is damaged" in capsys.readouterr().err
    for argv, words in [
        (["delete", "x.db"], "needs --writer TAG, --older-than AGE"),
        (["delete", "x.db", "--older-than", "soon"], "not a duration"),
    ]:
        with pytest.raises(SystemExit) as exit_status:
            main(argv)
        assert exit_status.value.code == 2 and words in capsys.readouterr().err
