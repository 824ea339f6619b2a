"""The ONNX export gives the trained model's probabilities; lenet-export's errors are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenet.export import main
from lenet.inference import load_model, onnx_session


@pytest.fixture(scope="module")
def exported(synthetic_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    assert main([str(synthetic_run), "--onnx", str(folder / "m.onnx")]) == 0
    return folder


def test_onnx_matches_the_checkpoint(synthetic_run, exported, synthetic_test):
    images = synthetic_test[0][:512].float() / 255
    expected = load_model(synthetic_run).predict_probs(images)
    probs = torch.from_numpy(onnx_session(exported / "m.onnx").run(None, {"images": images.numpy()})[0])
    assert probs.shape == (512, 10)
    assert (probs - expected).abs().max().item() < 1e-5
    assert torch.equal(probs.argmax(1), expected.argmax(1))
    # Dynamic batch: one image works too.
    single = onnx_session(exported / "m.onnx").run(None, {"images": images[:1].numpy()})[0]
    np.testing.assert_allclose(single, expected[:1].numpy(), atol=1e-5)


def test_export_cli_reports_bad_checkpoints_and_paths(tmp_path, capsys):
    assert main([str(tmp_path / "missing.ckpt"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path)])  # no output named
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--onnx", str(tmp_path / "no" / "such" / "m.onnx")])
    assert "does not exist; create it" in capsys.readouterr().err


def test_onnx_runtime_model_matches_pytorch(synthetic_run, exported, synthetic_test):
    """lenet.inference's ONNX Runtime model against the checkpoint's PyTorch model on 2,000 test
    digits, at 1 thread and at one per core, alone and side by side in an ensemble."""
    from lenet.inference import load_ensemble, load_onnx

    images = synthetic_test[0][:2000]
    expected = load_model(synthetic_run).predict_probs(images)
    for threads in (1, 0):
        probs = load_onnx(exported / "m.onnx", threads).predict_probs(images)
        assert (probs - expected).abs().max().item() < 1e-5
    ensemble = load_ensemble([synthetic_run, exported / "m.onnx"])  # the two runtimes side by side
    assert (ensemble.predict_probs(images) - expected).abs().max().item() < 1e-5
