"""The GPU path (`trainer=gpu`): end to end on real MNIST with the data on the device, and DDP where
there are several GPUs. Skipped without CUDA; `bash benchmarks/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import compose_config
from lenet.experiment import run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bash benchmarks/gpu_check.sh)"),
]


def test_gpu_training_end_to_end(tmp_path, mnist_dir):
    metrics = run(compose_config(tmp_path, ["trainer=gpu", "experiment=fast", "trainer.max_epochs=1"], mnist_dir))
    assert metrics["test/acc"] > 0.97
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == pytest.approx(metrics["test/acc"])


def test_batches_live_on_the_gpu(tmp_path, synthetic_dir):
    from hydra.utils import instantiate

    cfg = compose_config(tmp_path, ["trainer=gpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"], synthetic_dir)
    datamodule = instantiate(cfg.data, _recursive_=False)
    model = instantiate(cfg.model, _recursive_=False)
    seen = []
    model.on_train_batch_start = lambda batch, index: seen.append(batch[0].device.type)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    assert seen == ["cuda", "cuda"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP needs two GPUs")
def test_ddp_on_two_gpus(tmp_path, mnist_dir):
    metrics = run(compose_config(tmp_path, ["trainer=ddp", "trainer.devices=2", "experiment=fast", "trainer.max_epochs=1"], mnist_dir))
    assert metrics["world_size"] == 2 and metrics["test/acc"] > 0.97


def test_gpu_warm_up_leaves_the_run_as_seeded(tmp_path, synthetic_dir):
    """prepare_training pays CUDA's set-up with a throwaway copy: the run's own network is the seeded one, still on the CPU."""
    from lenet.experiment import prepare_training

    _, warmed, _ = prepare_training(compose_config(tmp_path / "gpu", ["experiment=fast_gpu"], synthetic_dir))
    assert torch.cuda.is_initialized()
    _, cold, _ = prepare_training(compose_config(tmp_path / "cpu", ["experiment=fast_gpu", "trainer.accelerator=cpu"], synthetic_dir))
    for a, b in zip(warmed.net.parameters(), cold.net.parameters(), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b)
