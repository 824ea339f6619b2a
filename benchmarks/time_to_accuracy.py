"""Time to 99% test accuracy for LeNet-5 on this machine, three ways, in one run:

(a) the user's original recipe (`experiment=user_original`) and (b) the product's fast preset
(`experiment=fast`), both through the real train.py/Lightning path, and (c) a bare PyTorch loop
running the identical recipe of (b) on the same in-memory tensors. After every epoch the official
10,000-image test set is scored; that scoring is timed apart and left out of every fit time.

    python benchmarks/time_to_accuracy.py            # 3 seeds each, about 3 minutes on 2 cores
    python benchmarks/time_to_accuracy.py --seeds 0  # quicker

Prints a table and writes benchmarks/results/time_to_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet.config import load_config  # noqa: E402
from lenet.data import BatchIndices, MNISTDataModule, normalize  # noqa: E402
from lenet.evaluation import default_data_dir, test_split  # noqa: E402
from lenet.experiment import run  # noqa: E402
from lenet.module import RUN_LENGTH_ARGUMENTS  # noqa: E402

TARGET = 0.99
DATA_DIR = default_data_dir()


def compose(overrides: list[str], run_dir: Path):
    return load_config([f"data.data_dir={DATA_DIR}", *overrides], run_dir=run_dir)


class TestSetProbe:
    """Scores the test set after each epoch; the time it takes is kept apart from fit time."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.probe_seconds = 0.0
        self.epochs: list[tuple[float, float]] = []  # (fit seconds so far, test accuracy)
        images, self.labels = test_split("mnist", DATA_DIR)
        self.inputs = normalize(images)

    @torch.no_grad()
    def __call__(self, net: torch.nn.Module) -> None:
        begun = time.perf_counter()
        was_training = net.training
        net.eval()
        accuracy = (net(self.inputs).argmax(1) == self.labels).float().mean().item()
        net.train(was_training)
        self.epochs.append((begun - self.started - self.probe_seconds, accuracy))
        self.probe_seconds += time.perf_counter() - begun

    def seconds_to(self, target: float) -> float | None:
        return next((seconds for seconds, accuracy in self.epochs if accuracy >= target), None)


ACTIVE_PROBE: TestSetProbe | None = None  # the probe of the run in progress


class ProbeCallback(L.Callback):
    """Added to the composed config by name, like any callback; scores with the active probe."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        ACTIVE_PROBE(pl_module.net)


def lightning_run(preset: str, seed: int) -> dict:
    global ACTIVE_PROBE
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose([f"experiment={preset}", f"seed={seed}", "trainer.enable_progress_bar=false"], Path(run_dir))
        with open_dict(cfg):
            cfg.callbacks["test_set_probe"] = {"_target_": f"{__name__}.ProbeCallback"}
        ACTIVE_PROBE = probe = TestSetProbe(0.0)
        probe.started = time.perf_counter()  # test data is loaded before the clock starts
        metrics = run(cfg)
        return summarise(probe, metrics["fit_seconds"] - probe.probe_seconds, metrics["test/acc"], metrics["epochs"], cfg)


def bare_loop(seed: int) -> dict:
    """The fast preset's exact recipe in plain PyTorch: same data, split, order, optimiser and schedule."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose(["experiment=fast", f"seed={seed}"], Path(run_dir))
    L.seed_everything(seed, workers=True)
    probe = TestSetProbe(0.0)
    started = probe.started = time.perf_counter()
    dm = MNISTDataModule(**{k: v for k, v in OmegaConf.to_container(cfg.data).items() if k != "_target_"})
    dm.setup()
    (train_x, train_y), (val_x, val_y) = dm.splits["train"], dm.splits["val"]
    net = instantiate(cfg.model.net).to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.model.optimizer, _partial_=True)(net.parameters())
    sampler = BatchIndices(len(train_y), cfg.data.batch_size, shuffle=True, seed=cfg.data.shuffle_seed)
    epochs = cfg.trainer.max_epochs
    scheduler = None
    if cfg.model.scheduler:
        spec = OmegaConf.to_container(cfg.model.scheduler, resolve=True)
        for key in RUN_LENGTH_ARGUMENTS:
            if key in spec and spec[key] is None:
                spec[key] = epochs * len(sampler)
        scheduler = instantiate(spec, _partial_=True)(optimizer)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        net.train()
        for index in sampler:
            logits = net(normalize(train_x[index]))
            loss = F.cross_entropy(logits, train_y[index], label_smoothing=cfg.model.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        net.eval()
        with torch.no_grad():  # validation, as the Lightning path does every epoch
            for start in range(0, len(val_y), cfg.data.eval_batch_size):
                net(normalize(val_x[start : start + cfg.data.eval_batch_size]))
        probe(net)
    fit_seconds = time.perf_counter() - started - probe.probe_seconds
    return summarise(probe, fit_seconds, probe.epochs[-1][1], epochs, cfg)


def forward_flops(net: torch.nn.Module) -> int:
    """Multiply-add FLOPs (×2) of convolutions and linear layers for one 28×28 image."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return total


def peak_flops() -> tuple[float, str]:
    """FP32 peak of this machine's cores: AVX2 with two FMA units = 32 FLOP per cycle per core."""
    mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz"))
    cores = os.cpu_count() or 1
    return cores * mhz * 1e6 * 32, f"{cores} cores x {mhz:.0f} MHz x 32 FLOP/cycle (AVX2, 2 FMA)"


def summarise(probe: TestSetProbe, fit_seconds: float, final_accuracy: float, epochs: int, cfg) -> dict:
    train_images = 60_000 - cfg.data.val_size
    flops = forward_flops(instantiate(cfg.model.net))
    work = epochs * (3 * flops * train_images + flops * cfg.data.val_size)  # forward+backward ≈ 3 forwards
    peak, _ = peak_flops()
    return {
        "seconds_to_99": probe.seconds_to(TARGET),
        "fit_seconds": fit_seconds,
        "final_test_acc": final_accuracy,
        "epochs": epochs,
        "per_epoch_test_acc": [round(a, 4) for _, a in probe.epochs],
        "train_images_per_second": epochs * train_images / fit_seconds,
        "fraction_of_peak_flops": work / fit_seconds / peak,
    }


def startup_seconds() -> float:
    """Launch of `python train.py experiment=fast` to its first training step, in a fresh process."""
    with tempfile.TemporaryDirectory() as run_dir:
        subprocess.run(
            [sys.executable, "train.py", "experiment=fast", "trainer.max_epochs=1", "trainer.limit_train_batches=5",
             "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", f"data.data_dir={DATA_DIR}"],
            cwd=REPO, check=True, capture_output=True,
        )
        return json.loads((Path(run_dir) / "metrics.json").read_text())["startup_seconds"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "time_to_accuracy.json")
    args = parser.parse_args()

    methods = {
        "user_original (Lightning)": lambda seed: lightning_run("user_original", seed),
        "fast preset (Lightning)": lambda seed: lightning_run("fast", seed),
        "fast recipe (bare PyTorch)": bare_loop,
    }
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    for seed in args.seeds:  # methods interleaved, so a slower minute of the machine hits all alike
        for name, fn in methods.items():
            runs[name].append(fn(seed))
    results = {}
    for name, per_seed in runs.items():
        results[name] = {
            key: median([r[key] for r in per_seed])
            for key in ("seconds_to_99", "fit_seconds", "final_test_acc", "train_images_per_second", "fraction_of_peak_flops")
        }
        results[name]["reached_99_in"] = f"{sum(r['seconds_to_99'] is not None for r in per_seed)}/{len(per_seed)} seeds"
        results[name]["seeds"] = per_seed
    lightning, bare = results["fast preset (Lightning)"], results["fast recipe (bare PyTorch)"]
    ratio = lightning["fit_seconds"] / bare["fit_seconds"]
    _, peak_text = peak_flops()
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "peak_flops_assumed": peak_text,
        "seeds": args.seeds,
        "lightning_over_bare_fit_time": ratio,
        "startup_seconds_to_first_step": startup_seconds(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nTime to {TARGET:.1%} test accuracy, median of seeds {args.seeds} ({report['machine']})")
    print(f"{'method':30} {'s to 99%':>9} {'fit s':>7} {'test acc':>9} {'img/s':>8} {'% peak':>7}  reached")
    for name, r in results.items():
        to99 = f"{r['seconds_to_99']:.1f}" if r["seconds_to_99"] is not None else "never"
        print(f"{name:30} {to99:>9} {r['fit_seconds']:7.1f} {r['final_test_acc']:9.4f} "
              f"{r['train_images_per_second']:8.0f} {100 * r['fraction_of_peak_flops']:6.1f}%  {r['reached_99_in']}")
    print(f"Lightning / bare loop fit time, same recipe: {ratio:.3f}x")
    print(f"Start-up, launch to first training step: {report['startup_seconds_to_first_step']:.2f} s")
    print(f"Written: {args.out}")


if __name__ == "__main__":
    main()
