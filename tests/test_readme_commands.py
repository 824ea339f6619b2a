"""Every `python train.py ...` command README shows composes (as `--cfg job`), so the README never
shows an override Hydra refuses; the console scripts it names all answer `--help`."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from helpers import REPO

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(?:bash|sh)\n(.*?)```", README, flags=re.S)
LINES = [re.split(r"\s+#", line)[0].strip() for block in BLOCKS for line in block.splitlines()]
TRAIN_COMMANDS = sorted({line for line in LINES if line.startswith("python train.py") and "<" not in line})
SCRIPTS = sorted({line.split()[0] for line in LINES if line.startswith("lenet-")})


def test_readme_shows_commands():
    assert len(TRAIN_COMMANDS) >= 8 and {"lenet-predict", "lenet-serve"} <= set(SCRIPTS)


@pytest.mark.parametrize("command", TRAIN_COMMANDS)
def test_train_command_composes(command):
    args = [arg for arg in shlex.split(command)[2:] if arg not in ("-m", "--multirun")]
    args = [arg.split(",")[0] if "=" in arg and "," in arg and "[" not in arg else arg for arg in args]  # a sweep's first job
    if "--cfg" not in args:
        args += ["--cfg", "job"]
    result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_answers_help(script):
    module = {"lenet-predict": "predict", "lenet-serve": "serve", "lenet-explain": "explain", "lenet-ensemble": "ensemble",
              "lenet-compare": "compare", "lenet-export": "export"}[script]
    result = subprocess.run([sys.executable, "-m", f"lenet.{module}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
