"""One results file per benchmark: `benchmarks/results/NAME.json` and `NAME.md`, each run overwriting
the last, with the facts that make a number readable (date, command, commit, CPU, library versions).

In a benchmark script:

    from results_file import add_results_dir_option, markdown_table, write_results

    parser = argparse.ArgumentParser(...)
    add_results_dir_option(parser)                    # --results-dir, default benchmarks/results
    ...
    write_results("inference", report, markdown_table(["runtime", "img/s"], rows),
                  results_dir=args.results_dir, packages=["onnxruntime"])

- `write_results(name, results, markdown_body, *, results_dir=None, title=None, packages=())` writes
  NAME.json (`{"facts": machine_facts(...), **results}`, or `"rows": [...]` when `results` is a list)
  and NAME.md (a title, the facts as a short list, then `markdown_body`); returns both paths.
- `machine_facts(packages=(), command=None)`: date and time (UTC), command line, git commit and whether
  tracked files had changes, CPU model, cores, the ISA flags that decide speed (AVX2, AVX-512,
  VNNI...), the load average, the GPU when torch is loaded and sees one, and the versions of python,
  torch, torchvision, lightning, numpy and the `packages` named.
- `markdown_table(headers, rows)` and `text_block(text)`: Markdown bodies from rows or printed text.
- From a shell script: `python benchmarks/results_file.py NAME --body-file out.txt [--results-dir D]
  [--command "bash benchmarks/x.sh"]` writes NAME.md/json around text the script printed.

Scripts in benchmarks/ import it as `from results_file import ...` (Python puts a script's own folder
first on sys.path; a test that loads a script by its path puts benchmarks/ there itself). A new run replaces the files: git keeps the history, the date is inside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
BASE_PACKAGES = ("torch", "torchvision", "lightning", "numpy")
# The instruction sets that change which kernels run (and so the timings and int8 arithmetic).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "asimd", "sve")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def add_results_dir_option(parser: argparse.ArgumentParser) -> None:
    """--results-dir, where write_results puts NAME.json and NAME.md (default benchmarks/results)."""
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR,
        help=f"folder for the results files (default: {RESULTS_DIR.relative_to(REPO)}; "
        "point a trial run elsewhere, e.g. /tmp/results, to keep the recorded ones)",
    )  # fmt: skip


def cpu_facts() -> dict:
    """Model name, cores and the ISA_FLAGS present, from /proc/cpuinfo (lscpu or platform elsewhere)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())  # the first CPU's lines
    except OSError:
        pass
    model = info.get("model name") or lscpu_model() or platform.processor() or platform.machine()
    flags = set((info.get("flags") or info.get("features") or "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": os.cpu_count(), "usable_cores": usable,
            "isa_flags": [flag for flag in ISA_FLAGS if flag in flags]}  # fmt: skip


def lscpu_model() -> str | None:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return next((line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name")), None)


def git_facts() -> dict:
    """The commit checked out and whether tracked files differ from it (untracked files are ignored:
    results and scratch files would make every tree look dirty)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions(packages=()) -> dict:
    """Installed versions of python, BASE_PACKAGES and `packages` (None for one that is not installed)."""
    found = {"python": platform.python_version()}
    for package in dict.fromkeys([*BASE_PACKAGES, *packages]):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def gpu_names() -> list[str]:
    """CUDA devices, only where the script already imported torch (importing it here would cost seconds)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def command_line() -> str:
    """`python SCRIPT ARGS`, the script named from the repository root when it lives there."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else sys.argv[0]
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def machine_facts(packages=(), command: str | None = None) -> dict:
    """What a reader needs to place a measurement: when, how it was run, on which code and machine."""
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or command_line(),
        "git": git_facts(),
        "cpu": cpu_facts(),
        "load_average": [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "versions": versions(packages),
    }


def facts_markdown(facts: dict) -> str:
    git, cpu = facts["git"], facts["cpu"]
    commit = "unknown" if git["commit"] is None else git["commit"][:10] + (" (tracked files changed)" if git["dirty"] else "")
    cores = f"{cpu['cores']} cores" + (f", {cpu['usable_cores']} usable" if cpu["usable_cores"] != cpu["cores"] else "")
    lines = [
        f"- date: {facts['date_utc']}",
        f"- command: `{facts['command']}`",
        f"- commit: {commit}",
        f"- CPU: {cpu['model']}, {cores}; {' '.join(cpu['isa_flags']) or 'none of ' + ' '.join(ISA_FLAGS)}",
    ]
    if facts["load_average"] is not None:
        lines.append(f"- load average at the end: {' / '.join(f'{load:.2f}' for load in facts['load_average'])} (1, 5, 15 min)")
    if facts["gpus"]:
        lines.append(f"- GPU: {', '.join(facts['gpus'])}")
    lines.append("- versions: " + ", ".join(f"{name} {version or 'not installed'}" for name, version in facts["versions"].items()))
    return "\n".join(lines)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; cells are written with str() (format numbers before passing them), "|" escaped."""
    def line(cells) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(row) for row in rows)])


def text_block(text: str) -> str:
    """Printed output, kept as it was printed."""
    return "```text\n" + text.rstrip("\n") + "\n```"


def write_results(name: str, results, markdown_body: str, *, results_dir: Path | None = None, title: str | None = None,
                  packages=(), command: str | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write results_dir/NAME.json and NAME.md (replacing the last run's) and return their paths.

    `results` is a dict (its keys go next to "facts") or a list of rows (kept under "rows"); it must
    be JSON-serialisable. `markdown_body` follows the title and the facts in NAME.md."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"results name {name!r}: use letters, digits, '_', '-' or '.' (it becomes NAME.json and NAME.md)")
    if not isinstance(results, (dict, list)):
        raise TypeError(f"results for {name}: give a dict or a list of rows, not {type(results).__name__}")
    if isinstance(results, dict) and "facts" in results:
        raise ValueError(f"results for {name}: the key 'facts' is written by write_results; rename yours")
    facts = machine_facts(packages, command)
    folder = Path(results_dir or RESULTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    payload = {"facts": facts, **results} if isinstance(results, dict) else {"facts": facts, "rows": results}
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(f"# {title or name}\n\n{facts_markdown(facts)}\n\n{markdown_body.strip()}\n")
    return json_path, md_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write NAME.json and NAME.md around text a shell script printed.")
    parser.add_argument("name", help="results name: NAME.json and NAME.md")
    parser.add_argument("--body-file", type=Path, required=True, help="the printed text to keep (a file)")
    parser.add_argument("--title", help="first line of NAME.md (default: NAME)")
    parser.add_argument("--command", help="the command that produced it (default: this one)")
    parser.add_argument("--packages", nargs="*", default=[], help="more packages whose versions to record")
    add_results_dir_option(parser)
    args = parser.parse_args(argv)
    try:
        text = args.body_file.read_text()
    except OSError as error:
        parser.error(f"--body-file {args.body_file}: {error.strerror or error}")
    paths = write_results(args.name, {"text": text}, text_block(text), results_dir=args.results_dir, title=args.title,
                          packages=args.packages, command=args.command)  # fmt: skip
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
