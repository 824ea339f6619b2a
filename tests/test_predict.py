"""lenet-predict: text and JSON output, top-k, directories in batches, unreadable files reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lenet.predict import main


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_directory_json_in_batches(synthetic_run, synthetic_images, capsys):
    folder, labels = synthetic_images
    assert main([str(synthetic_run), str(folder), "--json", "--batch-size", "3"]) == 0
    records = json_lines(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in records] == sorted(labels)  # every file, in order
    for record in records:
        assert set(record) == {"path", "digit", "confidence", "probs", "unsure", "runner_up"}
        assert record["unsure"] == (record["confidence"] < 0.5)
        assert len(record["probs"]) == 10 and sum(record["probs"]) == pytest.approx(1, abs=1e-4)
        assert record["confidence"] == pytest.approx(record["probs"][record["digit"]], abs=1e-5)
    correct = sum(r["digit"] == labels[Path(r["path"]).name] for r in records)
    assert correct >= 9  # one training epoch, user-like files


def test_text_output_with_top_k(synthetic_run, synthetic_images, capsys):
    folder, labels = synthetic_images
    path = folder / "digit00.png"
    assert main([str(synthetic_run), str(path), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: {labels['digit00.png']} (")
    assert line.count("%") == 3
    assert main([str(synthetic_run), str(path), "--json", "--top-k", "2"]) == 0
    record = json_lines(capsys.readouterr().out)[0]
    assert [entry["digit"] for entry in record["top_k"]][0] == record["digit"] and len(record["top_k"]) == 2


def test_unreadable_files_are_reported_and_the_rest_predicted(synthetic_run, synthetic_images, tmp_path, capsys):
    folder, labels = synthetic_images
    broken, blank, missing = tmp_path / "broken.png", tmp_path / "blank.png", tmp_path / "missing.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("L", (50, 50), 255).save(blank)
    good = folder / "digit01.jpg"
    status = main([str(synthetic_run), str(broken), str(good), str(blank), str(missing), "--json"])
    captured = capsys.readouterr()
    assert status == 1
    records = json_lines(captured.out)
    assert [Path(r["path"]).name for r in records] == ["broken.png", "digit01.jpg", "blank.png", "missing.png"]
    assert records[1]["digit"] == labels["digit01.jpg"]
    assert "not an image file" in records[0]["error"] and "no digit found" in records[2]["error"]
    assert "cannot be read" in records[3]["error"]
    assert "3 input(s) could not be predicted" in captured.err


def test_broken_links_empty_directories_and_bad_floats_are_reported_one_line_each(synthetic_run, synthetic_images, tmp_path, capsys):
    folder, labels = synthetic_images
    mixed, empty = tmp_path / "mixed", tmp_path / "empty"
    mixed.mkdir(), empty.mkdir()
    (mixed / "good.png").write_bytes((folder / "digit00.png").read_bytes())
    (mixed / "dangling.png").symlink_to(tmp_path / "gone.png")
    (mixed / "loop_a.png").symlink_to(mixed / "loop_b.png")
    (mixed / "loop_b.png").symlink_to(mixed / "loop_a.png")
    (mixed / "notes.txt").write_text("not an image: ignored, as before")
    nan = np.zeros((64, 64), np.float32)
    nan[10:50, 30:34], nan[0, 0] = 1, np.nan
    Image.fromarray(nan, "F").save(mixed / "nan.tiff")
    status = main([str(synthetic_run), str(mixed), str(empty)])
    captured = capsys.readouterr()
    assert status == 1
    [predicted] = captured.out.splitlines()  # the one good image, predicted despite the rest
    assert predicted.startswith(f"{mixed / 'good.png'}: {labels['digit00.png']} (")
    problems = captured.err.splitlines()
    assert problems[:5] == [
        f"lenet-predict: {mixed / 'dangling.png'}: a symlink to {tmp_path / 'gone.png'}, which does not exist: fix or delete the link.",
        f"lenet-predict: {mixed / 'loop_a.png'}: a symlink loop (it leads back to itself): fix or delete the link.",
        f"lenet-predict: {mixed / 'loop_b.png'}: a symlink loop (it leads back to itself): fix or delete the link.",
        f"lenet-predict: {mixed / 'nan.tiff'}: the image holds NaN or infinite pixel values (a float TIFF?): replace them "
        "with finite values, or save the image as an 8-bit PNG.",
        f"lenet-predict: {empty}: the directory holds no image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp): "
        "nothing to predict there.",
    ]
    assert problems[5:] == ["lenet-predict: 5 input(s) could not be predicted (see above)"]


def test_bad_checkpoint_and_options(tmp_path, synthetic_images, capsys):
    assert main([str(tmp_path), str(synthetic_images[0])]) == 2
    assert "checkpoints/best.ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(synthetic_images[0]), "--top-k", "11"])
    assert "--top-k must be between 1 and 10" in capsys.readouterr().err


def test_console_script(synthetic_run, synthetic_images):
    folder, labels = synthetic_images
    script = Path(sys.executable).with_name("lenet-predict")
    result = subprocess.run([str(script), str(synthetic_run), str(folder / "digit02.bmp")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{folder / 'digit02.bmp'}: {labels['digit02.bmp']} (")


def test_parallel_preparation_keeps_the_order_and_the_answers(synthetic_run, synthetic_images, tmp_path, capsys):
    """Enough files for the worker processes, failures among them, small batches: the same lines, in order."""
    folder, _ = synthetic_images
    names = sorted(p.name for p in folder.iterdir())
    for copy in range(4):
        for name in names:
            (tmp_path / f"{copy}_{name}").write_bytes((folder / name).read_bytes())
    (tmp_path / "2_broken.png").write_bytes(b"not an image")
    Image.new("L", (50, 50), 255).save(tmp_path / "3_blank.png")
    answers = {}
    for jobs in ("1", "2"):
        status = main([str(synthetic_run), str(tmp_path), "--json", "--batch-size", "7", "--jobs", jobs])
        answers[jobs] = (status, capsys.readouterr())
    assert answers["1"][1].out == answers["2"][1].out and answers["1"][1].err == answers["2"][1].err
    records = json_lines(answers["2"][1].out)
    assert len(records) == 4 * len(names) + 2 and answers["2"][0] == 1
    assert [Path(r["path"]).name for r in records] == sorted(p.name for p in tmp_path.iterdir())
    assert "2 input(s) could not be predicted" in answers["2"][1].err


def test_an_exported_onnx_model_gives_the_checkpoints_answers(synthetic_run, synthetic_images, tmp_path, capsys):
    """The same images through ONNX Runtime (an exported .onnx) and PyTorch (the checkpoint): same probabilities."""
    from lenet.export import main as export

    assert export([str(synthetic_run), "--onnx", str(tmp_path / "model.onnx")]) == 0
    capsys.readouterr()
    folder, _ = synthetic_images
    outputs = []
    for model in (synthetic_run, tmp_path / "model.onnx"):
        assert main([str(model), str(folder), "--json"]) == 0
        outputs.append(json_lines(capsys.readouterr().out))
    torch_records, onnx_records = outputs
    assert [r["digit"] for r in torch_records] == [r["digit"] for r in onnx_records]
    assert np.abs(np.array([r["probs"] for r in torch_records]) - [r["probs"] for r in onnx_records]).max() < 1e-5
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert main([str(tmp_path / "junk.onnx"), str(folder)]) == 2
    assert "is not an ONNX model ONNX Runtime can load" in capsys.readouterr().err
