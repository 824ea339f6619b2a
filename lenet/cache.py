"""Where the project keeps what it can always make again (prepared real-digit sets, the compiled C
kernel): $LENET_CACHE_DIR/<name>, else ~/.cache/lenet/<name>, XDG_CACHE_HOME respected."""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder(name: str) -> Path:
    root = os.environ.get("LENET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet"
    return Path(root) / name
