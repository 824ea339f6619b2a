"""Lines of code in lenet/ at a git revision: non-blank Python lines that are not comments.

    python benchmarks/loc.py 98deba4 HEAD     # one line per revision (default: HEAD)

Docstrings count as code; `# ...` lines and blank lines do not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def count(revision: str, folder: str = "lenet") -> tuple[int, int]:
    """(code lines, files) of the .py files under `folder` at `revision`."""
    files = [path for path in git("ls-tree", "-r", "--name-only", revision, folder).split() if path.endswith(".py")]
    lines = sum(
        1
        for path in files
        for line in git("show", f"{revision}:{path}").splitlines()
        if line.strip() and not line.strip().startswith("#")
    )
    return lines, len(files)


if __name__ == "__main__":
    for revision in sys.argv[1:] or ["HEAD"]:
        lines, files = count(revision)
        print(f"{revision}: {lines} lines of code in {files} files under lenet/")
