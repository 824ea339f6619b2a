"""Sweeps on this machine, through the real `python train.py -m ...` commands, in one run:

(a) a grid of 4 one-epoch jobs, wall time of the whole command with the default sequential launcher
    (one job at a time, torch's default threads) and with `hydra/launcher=joblib threads=1` (2 jobs
    side by side, 1 thread each), and sequentially with 1 thread, alternated `--repeats` times;
(b) an Optuna study (`hparams_search=optuna`) of `--trials` short trials (a quarter of one epoch:
    13,500 training images) run by joblib two at a time, against the default configuration trained
    on the same budget: best validation accuracy (the objective), the chosen configuration's test
    accuracy, and fit times.

    python benchmarks/sweep_launchers.py                    # about 15 minutes on 2 idle cores
    python benchmarks/sweep_launchers.py --trials 4 --repeats 1 --results-dir /tmp/try \
        --overrides trainer.limit_train_batches=10 +trainer.limit_val_batches=2     # a smoke run

Writes sweep_launchers.json, sweep_launchers.md and sweep_study_summary.md (the study's own
summary) into benchmarks/results/ (or --results-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet.sweep import collect  # noqa: E402
from results_file import add_results_dir_option, text_block, write_results  # noqa: E402

DATA_DIR = os.environ.get("LENET_DATA_DIR", str(REPO.parent / "shared" / "data"))
QUIET = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
GRID = ["model.optimizer.lr=0.02,0.05,0.1,0.2"]
STUDY_BUDGET = ["trainer.limit_train_batches=0.25"]  # per trial, on top of QUIET's one epoch
SWEEP_PACKAGES = ["hydra-core", "hydra-joblib-launcher", "hydra-optuna-sweeper", "joblib", "optuna"]  # versions recorded
LAUNCHERS = {  # the first two are compared; the third tells the launcher apart from the thread count
    "basic (sequential)": [],
    "joblib (2 jobs x 1 thread)": ["hydra/launcher=joblib", "threads=1"],
    "basic, threads=1": ["threads=1"],
}


def train(args: list[str], log: Path) -> float:
    """Run `python train.py ARGS`; its wall time in seconds (output kept in `log`)."""
    env = {**os.environ, "LENET_DATA_DIR": DATA_DIR, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"train.py {' '.join(args)} failed; see {log}")
    return seconds


def torch_threads() -> int:
    """The threads a job gets by default (the basic launcher's jobs run with them)."""
    import torch

    return torch.get_num_threads()


def grid(work: Path, repeats: int) -> dict:
    runs = {name: [] for name in LAUNCHERS}
    for repeat in range(repeats):
        for name, launcher in LAUNCHERS.items():  # alternated, so drifting load hits both alike
            sweep_dir = work / f"grid_{repeat}_{list(LAUNCHERS).index(name)}"
            load = os.getloadavg()[0]
            wall = train(["-m", *launcher, *QUIET, *GRID, f"hydra.sweep.dir={sweep_dir}"], work / f"{sweep_dir.name}.log")
            rows = collect(sweep_dir)
            assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), f"grid failed in {sweep_dir}"
            runs[name].append({"wall_s": round(wall, 1), "fit_s": [r["fit_seconds"] for r in rows], "load_before": load})
            print(f"(a) {name}: {wall:.1f} s", flush=True)
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    sequential, parallel = (medians[name] for name in list(LAUNCHERS)[:2])
    return {"overrides": QUIET + GRID, "runs": runs, "median_wall_s": medians, "speedup": round(sequential / parallel, 2)}


def study(work: Path, trials: int, out: Path) -> dict:
    sweep_dir = work / "study"
    load = os.getloadavg()[0]
    args = ["hparams_search=optuna", "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "threads=1",
            f"hydra.sweeper.n_trials={trials}", *STUDY_BUDGET, *QUIET, f"hydra.sweep.dir={sweep_dir}"]
    wall = train(args, work / "study.log")
    rows = [r for r in collect(sweep_dir) if r["status"] == "ok"]
    fixed = {arg.split("=")[0] for arg in args}  # what the study searched is the rest of a job's overrides
    best = max(rows, key=lambda r: r["objective"])
    shutil.copy(sweep_dir / "summary.md", out / "sweep_study_summary.md")

    # The default configuration with the same budget and one thread, on its own.
    default_dir = work / "default"
    train([*STUDY_BUDGET, *QUIET, "threads=1", f"hydra.run.dir={default_dir}"], work / "default.log")
    default = json.loads((default_dir / "metrics.json").read_text())
    return {
        "command": "python train.py " + " ".join(args[:-1]),
        "trials": len(rows),
        "wall_s": round(wall, 1),
        "load_before": load,
        "best": {"job": best["job"], "overrides": " ".join(o for o in best["overrides"].split() if o.split("=")[0] not in fixed),
                 "val_acc": best["objective"], "test_acc": best["test/acc"], "fit_s": best["fit_seconds"]},
        "default": {"val_acc": default["best_val_acc"], "test_acc": default["test/acc"], "fit_s": default["fit_seconds"]},
        "trial_fit_s": [r["fit_seconds"] for r in rows],
    }


def report(results: dict) -> str:
    a, b = results["grid"], results["study"]
    lines = [
        f"Sweeps with torch's default of {results['torch_threads']} threads a job on a machine shared with other work: "
        "timings are noisy, compare within this run only.",
        "",
        f"(a) Grid of 4 one-epoch jobs ({' '.join(GRID)}), wall time of the whole `python train.py -m` command:",
    ]
    for name, runs in a["runs"].items():
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in runs)
        fits = statistics.median(f for r in runs for f in r["fit_s"])
        lines.append(f"    {name:28s} median {a['median_wall_s'][name]:6.1f} s  (runs: {walls}; median job fit {fits:.1f} s)")
    lines += [
        f"    joblib / sequential speed-up: {a['speedup']:.2f}x",
        "",
        f"(b) Optuna study, {b['trials']} trials of a quarter epoch each ({' '.join(STUDY_BUDGET)}), TPE seed 42,",
        f"    joblib 2 jobs x 1 thread: {b['wall_s']:.0f} s wall; the default config on the same budget, 1 thread, alone:",
        f"    {'':28s} {'best val acc':>12s} {'test acc':>9s} {'fit s':>6s}",
        f"    {'default config':28s} {b['default']['val_acc']:12.4f} {b['default']['test_acc']:9.4f} {b['default']['fit_s']:6.1f}",
        f"    {'study best (job ' + b['best']['job'] + ')':28s} {b['best']['val_acc']:12.4f} {b['best']['test_acc']:9.4f} {b['best']['fit_s']:6.1f}",
        f"    chosen by validation accuracy: {b['best']['overrides']}",
        f"    trial fit times: median {statistics.median(b['trial_fit_s']):.1f} s, range {min(b['trial_fit_s']):.1f}-{max(b['trial_fit_s']):.1f} s",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs of each launcher for (a)")
    add_results_dir_option(parser)
    parser.add_argument("--overrides", nargs="*", default=[], help="added to every train.py command")
    args = parser.parse_args()
    QUIET.extend(args.overrides)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sweep_launchers_") as tmp:
        work = Path(tmp)
        results = {"torch_threads": torch_threads(), "grid": grid(work, args.repeats), "study": study(work, args.trials, args.results_dir)}
    text = report(results)
    print(text)
    paths = write_results("sweep_launchers", results, text_block(text), results_dir=args.results_dir,
                          title="Sweeps through train.py -m", packages=SWEEP_PACKAGES)
    print(f"Written: {paths[0]}, {paths[1]} and {args.results_dir / 'sweep_study_summary.md'}")


if __name__ == "__main__":
    main()
