"""Where a Lightning fit's time goes: the set-up before the first step, training steps, validation,
checkpoints and the end, for a composed recipe on this machine's CPU or GPU.

Each variant is fitted twice in one process: the first fit pays one-time costs (CUDA context and
kernel loading, oneDNN/cuDNN set-up), the second shows the steady state.

    python benchmarks/fit_phases.py experiment=fast                       # CPU
    python benchmarks/fit_phases.py experiment=fast_gpu --variant trainer.deterministic=false

Prints one line per fit; the phases are wall time with the device synchronised at each boundary.
Writes benchmarks/results/fit_phases.json and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from results_file import add_results_dir_option, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def phase_timer():
    import lightning as L
    import torch

    class PhaseTimer(L.Callback):
        """Adds wall time between hooks to named phases (device synchronised at each boundary)."""

        def __init__(self) -> None:
            self.seconds: dict[str, float] = defaultdict(float)
            self._validated = False
            self.start()

        def start(self) -> None:
            self._mark = time.perf_counter()

        def _lap(self, phase: str) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.seconds[phase] += now - self._mark
            self._mark = now

        def on_fit_start(self, trainer, module):
            self._lap("before fit_start (set-up)")

        def on_train_start(self, trainer, module):
            self._lap("fit_start to train_start")

        def on_train_epoch_start(self, trainer, module):
            self._lap("between epochs")
            self._validated = False

        def on_validation_start(self, trainer, module):
            self._lap("training steps")
            self._validated = True

        def on_validation_end(self, trainer, module):
            self._lap("validation")

        def on_train_epoch_end(self, trainer, module):
            # An epoch without validation (check_val_every_n_epoch) ends its training steps here.
            self._lap("epoch end (metrics, checkpoints)" if self._validated else "training steps")

        def on_train_end(self, trainer, module):
            self._lap("last epoch end to train_end")

        def on_fit_end(self, trainer, module):
            self._lap("train_end to fit_end")

    return PhaseTimer


def fit_once(overrides: list[str]) -> tuple[float, dict[str, float], int]:
    import torch

    from lenet.config import load_config
    from lenet.evaluation import default_data_dir
    from lenet.experiment import prepare_training

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config([f"data.data_dir={default_data_dir()}", *overrides], run_dir=run_dir)
        timer = phase_timer()()
        datamodule, model, trainer = prepare_training(cfg, extra_callbacks=[timer])  # as train.py builds them
        started = time.perf_counter()
        timer.start()
        trainer.fit(model, datamodule=datamodule)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - started, dict(timer.seconds), trainer.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe, e.g. experiment=fast")
    parser.add_argument("--variant", action="append", default=[],
                        help="an extra override (comma-separated for several) timed as its own variant")
    add_results_dir_option(parser)
    args = parser.parse_args()
    variants = [[]] + [v.split(",") for v in args.variant]
    rows = []
    for variant in variants:
        for attempt in ("first", "second"):
            total, phases, steps = fit_once([*args.overrides, *variant])
            rows.append({
                "variant": " ".join(variant) or "as composed", "fit": attempt, "seconds": round(total, 3), "steps": steps,
                "ms_per_step": round(1000 * phases.get("training steps", 0) / max(steps, 1), 3),
                "phases_seconds": {name: round(seconds, 3) for name, seconds in phases.items()},
            })  # fmt: skip
            row = rows[-1]
            split = ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases.items())
            print(f"{row['variant']} [{attempt} fit]: {total:.2f} s, {steps} steps ({row['ms_per_step']:.2f} ms/step) | {split}", flush=True)
    table = markdown_table(
        ["variant", "fit", "seconds", "steps", "ms/step", "phases (s)"],
        [[r["variant"], r["fit"], f"{r['seconds']:.2f}", r["steps"], f"{r['ms_per_step']:.2f}",
          ", ".join(f"{name} {seconds:.2f}" for name, seconds in r["phases_seconds"].items())] for r in rows],
    )  # fmt: skip
    body = f"Recipe: `{' '.join(args.overrides) or 'the defaults'}`. The first fit in a process pays one-time set-up.\n\n{table}"
    paths = write_results("fit_phases", {"overrides": args.overrides, "fits": rows}, body, results_dir=args.results_dir,
                          title="Where a Lightning fit's time goes")  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
