"""Train LeNet-5 on MNIST: `python train.py [overrides]`, sweeps with `python train.py -m ...`.

Evaluate a checkpoint without training: `python train.py train=false ckpt_path=RUN_DIR_OR_CKPT`.
"""

import os

import hydra
from omegaconf import DictConfig, OmegaConf

# Run folders are named by time and process id, so two runs started in the same second differ.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from lenet.experiment import run

    metrics = run(cfg)
    return metrics.get("test/acc", float("nan"))  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
