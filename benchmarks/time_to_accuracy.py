"""Time to 99% test accuracy for LeNet-5 on this machine, as ratios to one bare PyTorch epoch.

Per seed, each method runs in a process of its own (Lightning leaves process-wide settings such as
deterministic mode behind, which would slow a bare loop run after it in the same process):

  reference      one epoch of a bare single-process PyTorch loop: the network as defined, default
                 threads and memory format, SGD one-cycle peak 0.1, label smoothing 0.1, batch 64,
                 the schedule over that one epoch. Fit time = training steps only.
  fast, bare     experiment=fast's recipe (conf/experiment/fast.yaml) as a bare PyTorch loop,
                 validating when the Lightning path does (after the last epoch).
  fast, train.py `python train.py experiment=fast seed=S`, timed from outside: whole-process wall
                 time, split into start-up (launch to the start of fit), fit, test and the rest
                 (report, TensorBoard, exit), from the run's own metrics.json.

    python benchmarks/time_to_accuracy.py                 # 5 seeds, about 3 minutes on 2 cores
    python benchmarks/time_to_accuracy.py --seeds 1 2     # quicker

Prints a table and writes benchmarks/results/time_to_accuracy.json and .md (or --results-dir). The
accuracies are on the official 10,000-image MNIST test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import add_results_dir_option, text_block, write_results

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.99
REFERENCE = ["model.optimizer.lr=0.1", "trainer.max_epochs=1"]  # the default recipe at peak 0.1, one epoch


def bare_loop(overrides: list[str], seed: int, validate: bool, device: str = "cpu") -> dict:
    """The composed recipe in plain PyTorch: same data split and order, optimiser and schedule as train.py."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO))
    from lenet.config import load_config, to_plain
    from lenet.data import BatchIndices, MNISTDataModule
    from lenet.datasets import normalize
    from lenet.evaluation import default_data_dir
    from lenet.module import build_optimization
    from lenet.registry import build

    cfg = load_config([f"data.data_dir={default_data_dir()}", f"seed={seed}", *overrides], run_dir="unused")
    torch.manual_seed(seed)
    data, model = to_plain(cfg.data), to_plain(cfg.model)
    datamodule = MNISTDataModule(**{k: v for k, v in data.items() if k != "_target_"})
    datamodule.setup()
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        tuple(t.to(device) for t in datamodule.splits[s]) for s in ("train", "val", "test"))
    net = build(model["net"], "network").to(device)
    sampler = BatchIndices(len(train_y), data["batch_size"], shuffle=True, seed=data["shuffle_seed"], device=device)
    epochs, limit = cfg.trainer.max_epochs, cfg.trainer.limit_train_batches
    validate_every = cfg.trainer.get("check_val_every_n_epoch") or 1
    # Batches per epoch as Lightning counts them under trainer.limit_train_batches (a share or a count).
    per_epoch = len(sampler) if limit is None else min(len(sampler), int(limit if isinstance(limit, int) else len(sampler) * limit))
    optimizer, scheduler = build_optimization(net.parameters(), model["optimizer"], model["scheduler"], epochs * per_epoch)
    smoothing, eval_batch = model["label_smoothing"], data["eval_batch_size"]

    started = time.perf_counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        net.train()
        for _, index in zip(range(per_epoch), sampler):
            loss = F.cross_entropy(net(normalize(train_x[index])), train_y[index], label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        if validate and (epoch + 1) % validate_every == 0:  # as the Lightning path does (trainer.check_val_every_n_epoch)
            net.eval()
            with torch.no_grad():
                for start in range(0, len(val_y), eval_batch):
                    net(normalize(val_x[start : start + eval_batch]))
    if device != "cpu":
        torch.cuda.synchronize()
    fit_seconds = time.perf_counter() - started
    net.eval()
    with torch.no_grad():
        accuracy = (net(normalize(test_x)).argmax(1) == test_y).float().mean().item()
    return {"fit_seconds": fit_seconds, "test_acc": accuracy, "threads": torch.get_num_threads()}


def in_own_process(overrides: list[str], seed: int, validate: bool) -> dict:
    command = [sys.executable, __file__, "--bare", json.dumps(overrides), "--seeds", str(seed)]
    if validate:
        command.append("--validate")
    output = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def train_py(seed: int) -> dict:
    """`python train.py experiment=fast`, whole process timed from here."""
    with tempfile.TemporaryDirectory() as run_dir:
        launched = time.time()
        subprocess.run(
            [sys.executable, "train.py", "experiment=fast", f"seed={seed}", f"hydra.run.dir={run_dir}"],
            cwd=REPO, check=True, capture_output=True,
        )
        wall = time.time() - launched
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    startup = metrics["fit_started_at"] - launched
    rest = wall - startup - metrics["fit_seconds"] - metrics["test_seconds"]
    return {
        "wall_seconds": wall, "startup_seconds": startup, "fit_seconds": metrics["fit_seconds"],
        "test_seconds": metrics["test_seconds"], "report_and_exit_seconds": rest, "test_acc": metrics["test/acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    add_results_dir_option(parser)
    parser.add_argument("--bare", help=argparse.SUPPRESS)  # worker: JSON list of overrides
    parser.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="worker: where the bare loop runs (cpu or cuda)")
    args = parser.parse_args()
    if args.bare is not None:
        print(json.dumps(bare_loop(json.loads(args.bare), args.seeds[0], args.validate, args.device)))
        return

    methods = {
        "reference: one bare epoch, batch 64": lambda seed: in_own_process(REFERENCE, seed, validate=False),
        "experiment=fast, bare PyTorch loop": lambda seed: in_own_process(["experiment=fast"], seed, validate=True),
        "experiment=fast, python train.py": train_py,
    }
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    for seed in args.seeds:  # methods interleaved, so a slower minute of the machine hits all alike
        for name, method in methods.items():
            runs[name].append({"seed": seed, **method(seed)})
            print(f"seed {seed}  {name}: {runs[name][-1]}", file=sys.stderr)

    reference = statistics.median(r["fit_seconds"] for r in runs["reference: one bare epoch, batch 64"])
    results = {}
    for name, per_seed in runs.items():
        keys = [k for k in per_seed[0] if k.endswith("_seconds")]
        summary = {k: statistics.median(r[k] for r in per_seed) for k in keys}
        summary.update(
            {f"{k.removesuffix('_seconds')}_over_reference": summary[k] / reference for k in ("fit_seconds", "wall_seconds") if k in summary}
        )
        accuracies = [r["test_acc"] for r in per_seed]
        summary.update(test_acc_median=statistics.median(accuracies), test_acc_min=min(accuracies),
                       reached_99=f"{sum(a >= TARGET for a in accuracies)}/{len(accuracies)}", seeds=per_seed)
        results[name] = summary

    report = {"seeds": args.seeds, "reference_epoch_seconds": reference, "results": results}
    lines = [f"Time to {TARGET:.0%} test accuracy, medians of seeds {args.seeds}",
             f"{'method':38} {'fit s':>6} {'x ref':>6} {'wall s':>7} {'x ref':>6} {'acc med':>8} {'acc min':>8}  >=99%"]  # fmt: skip
    for name, r in results.items():
        wall = f"{r['wall_seconds']:7.2f} {r['wall_over_reference']:6.2f}" if "wall_seconds" in r else f"{'':7} {'':6}"
        lines.append(f"{name:38} {r['fit_seconds']:6.2f} {r['fit_over_reference']:6.2f} {wall} "
                     f"{r['test_acc_median']:8.4f} {r['test_acc_min']:8.4f}  {r['reached_99']}")  # fmt: skip
    fast = results["experiment=fast, python train.py"]
    lines.append("train.py wall split (medians): " + ", ".join(
        f"{k.removesuffix('_seconds').replace('_', ' ')} {fast[k]:.2f} s"
        for k in ("startup_seconds", "fit_seconds", "test_seconds", "report_and_exit_seconds")))
    print("\n" + "\n".join(lines))
    paths = write_results("time_to_accuracy", report, text_block("\n".join(lines)), results_dir=args.results_dir,
                          title="Time to 99% test accuracy")  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
