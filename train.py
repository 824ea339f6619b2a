"""Train LeNet-5 on MNIST: `python train.py [overrides]`, sweeps with `python train.py -m ...`.

Evaluate a checkpoint without training: `python train.py train=false ckpt_path=RUN_DIR_OR_CKPT`.
"""

import time

STARTED = time.perf_counter()  # start-up time (launch to first step) is reported in metrics.json

import os  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

# Run folders are named by time and process id, so two runs started in the same second differ.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from lenet.experiment import run  # imported here so `--help` and `--cfg` stay instant

    metrics = run(cfg, process_started=STARTED)
    return metrics.get("test/acc", float("nan"))  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
