"""Train LeNet-5 on MNIST: `python train.py [overrides]`, sweeps with `python train.py -m ...`.

Evaluate a checkpoint without training: `python train.py train=false ckpt_path=RUN_DIR_OR_CKPT`.
"""

import gc
import sys

# Start-up (Hydra, torch, Lightning) runs without the cyclic garbage collector, which would otherwise walk
# the million objects these imports make again and again: main() turns it back on (lenet/startup.py).
gc.disable()

import hydra
from omegaconf import DictConfig

from lenet.startup import end_of_startup

# Registers the resolvers that name run and job folders (conf/hydra/default.yaml): ${pid:}, ${sweep_job:}.
from lenet.sweep import check_objective, objective_value, require_plugin_extras, set_threads


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train (or evaluate) and return the objective a Hydra sweeper optimises: metrics[optimized_metric],
    a validation metric (best_val_acc by default); the test set is never the objective."""
    from lenet.experiment import one_line_errors, run  # imported here so `--help` and `--cfg` stay instant

    end_of_startup()

    with one_line_errors("train.py"):  # a mistake is one line naming the key or file, not a traceback
        check_objective(cfg)  # a test metric as objective is refused before any training
        set_threads(cfg)
        metrics = run(cfg)
        return objective_value(cfg, metrics)


if __name__ == "__main__":
    require_plugin_extras(sys.argv[1:])  # hparams_search=optuna without the search extra: one line, not Hydra's search path
    main()
    # Everything is written and closed. Spare the interpreter's last garbage collections at exit, a
    # walk over every object torch and Lightning created: about 1 s of a 15 s `experiment=fast` run.
    gc.freeze()
