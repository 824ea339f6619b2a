"""Sweep summary: after `python train.py -m ...`, one table of every job's overrides and results.

Registered as a Hydra callback (conf/hydra/default.yaml); also usable on an existing sweep folder:
`python -m lenet.sweep multirun/2026-11-26/10-00-00_1234`.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

COLUMNS = ("test/acc", "test/precision", "test/recall", "test/f1", "fit_seconds", "epochs")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder: its overrides and its metrics.json (status 'failed' if it has none)."""
    import yaml

    rows = []
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: (len(p.name), p.name))
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        row: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides or [])}
        metrics_file = job / "metrics.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
            row.update({key: metrics.get(key) for key in COLUMNS})
            row["status"] = "ok"
        else:
            row["status"] = "failed or unfinished"
        rows.append(row)
    return rows


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write summary.csv and summary.md at the sweep root; the best test accuracy is marked."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    finished = [r for r in rows if r["status"] == "ok"]
    best = max(finished, key=lambda r: r["test/acc"]) if finished else None
    for row in rows:
        row["best"] = "yes" if row is best else ""
    fields = ["job", "overrides", *COLUMNS, "status", "best"]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(finished)} of {len(rows)} jobs finished. Metrics on the official MNIST test set; ★ marks the best accuracy.",
        "",
        "| job | overrides | test acc | precision | recall | F1 | fit s | epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = " ★" if row["best"] else ""
        if row["status"] != "ok":
            lines.append(f"| {row['job']} | `{row['overrides']}` | {row['status']} | | | | | |")
            continue
        values = " | ".join(f"{row[k]:.4f}" for k in COLUMNS[:4])
        lines.append(f"| {row['job']}{mark} | `{row['overrides']}` | {values} | {row['fit_seconds']:.1f} | {row['epochs']} |")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


class SweepSummary(Callback):
    """Hydra callback: writes the summary when a multirun ends."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write_summary(sweep_dir)
            print(f"Sweep summary: {sweep_dir / 'summary.md'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lenet.sweep SWEEP_DIR")
    for row in write_summary(sys.argv[1]):
        print(row)
