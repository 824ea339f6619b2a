"""Run time of notebooks/lenet5_tutorial.ipynb as CI runs it (nbclient, real MNIST), cell by cell.

    LENET_DATA_DIR=/path/with/MNIST python benchmarks/tutorial_notebook.py [--save executed.ipynb]

Prints the wall time of each code cell and of the whole execution (kernel start included), and the
CPU time the kernel used: on a busy machine wall time grows, CPU time barely does. Writes
benchmarks/results/tutorial_notebook.json and .md (or --results-dir). The run goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from datetime import datetime
from pathlib import Path

from results_file import add_results_dir_option, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "lenet5_tutorial.ipynb"


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    started, finished = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (started and finished):
        return float("nan")
    parse = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # noqa: E731
    return (parse(finished) - parse(started)).total_seconds()


def main() -> None:
    import nbformat
    from nbclient import NotebookClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also write the executed notebook, outputs included, here")
    add_results_dir_option(parser)
    args = parser.parse_args()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LENET_TUTORIAL_RUN_DIR"] = str(Path(tmp) / "run")
        client = NotebookClient(
            notebook, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        started = time.perf_counter()
        client.execute()
        wall = time.perf_counter() - started
    # The kernel was this process's child: its CPU time is in RUSAGE_CHILDREN once it has exited.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cells = [
        {"cell": cell.id, "first_line": cell.source.splitlines()[0][:60], "seconds": round(cell_seconds(cell), 2)}
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    for row in cells:
        print(f"{row['seconds']:8.1f} s  {row['cell']}  {row['first_line']}")
    result = {"wall_seconds": round(wall, 1), "kernel_cpu_seconds": round(children.ru_utime + children.ru_stime, 1), "cells": cells}
    summary = (f"Whole notebook: {result['wall_seconds']} s wall, {result['kernel_cpu_seconds']} s CPU in the kernel "
               f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end).")  # fmt: skip
    print(summary)
    if args.save:
        nbformat.write(notebook, args.save)
    table = markdown_table(["seconds", "cell", "first line"], [[f"{r['seconds']:.1f}", r["cell"], f"`{r['first_line']}`"] for r in cells])
    paths = write_results("tutorial_notebook", result, f"{summary}\n\n{table}", results_dir=args.results_dir,
                          title=f"Run time of {NOTEBOOK.relative_to(REPO)}", packages=["nbclient", "nbformat", "ipykernel"])  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
