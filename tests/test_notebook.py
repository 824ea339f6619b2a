"""notebooks/lenet5_tutorial.ipynb: stored without outputs, and executed end to end on real MNIST
with nbclient, in a kernel running this interpreter (the project's venv)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO

NOTEBOOK = REPO / "notebooks" / "lenet5_tutorial.ipynb"


def read_notebook():
    import nbformat

    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_stored_without_outputs():
    notebook = read_notebook()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} has outputs: clear them before committing"


def test_notebook_uses_the_product_api_instead_of_reimplementing_it():
    source = "\n".join(cell.source for cell in read_notebook().cells if cell.cell_type == "code")
    for call in ("load_config(", "run(cfg)", "load_model(", "confusion_matrix(", "prepare_image(", "explain.saliency("):
        assert call in source
    for homemade in ("nn.Module", "Trainer(", "cross_entropy", "autograd", "TSNE("):
        assert homemade not in source, f"the notebook re-implements {homemade!r}: call lenet instead"


@pytest.fixture
def python_kernel(tmp_path, monkeypatch) -> str:
    """A `python3` kernelspec that starts this interpreter, found before any other on the machine."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path / "jupyter-prefix"
    install(prefix=str(prefix), kernel_name="python3")
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    return "python3"


@pytest.mark.slow
def test_tutorial_notebook_runs_on_real_mnist(python_kernel, mnist_dir, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    run_dir = tmp_path / "tutorial_run"
    monkeypatch.setenv("LENET_DATA_DIR", str(mnist_dir))
    monkeypatch.setenv("LENET_TUTORIAL_RUN_DIR", str(run_dir))
    notebook = read_notebook()
    client = NotebookClient(
        notebook, kernel_name=python_kernel, timeout=600, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
    print(f"tutorial notebook executed in {time.perf_counter() - started:.1f} s")

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    # confusion matrix, per-class, learning curves, filters, feature maps, saliency, embedding,
    # confused pairs, the drawing, its saliency
    assert len(pictures) >= 10
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "predicted: 4" in text, "the drawn 4 should be read as a 4"
    assert "test image #0: label 7, predicted 7" in text

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.96 and metrics["epochs"] == 3
    assert sorted(p.name for p in (run_dir / "explain").glob("*.png")) == sorted(
        ["confused_pairs.png", "embedding.png", "feature_maps.png", "filters.png", "saliency.png"]
    )
    assert not Path(NOTEBOOK.parent / "outputs").exists(), "the notebook wrote outside LENET_TUTORIAL_RUN_DIR"
