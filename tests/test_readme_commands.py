"""The commands README.md and docs/*.md show still work: every `python train.py ...` composes with
Hydra's compose API and passes the allow-list, every console script they name answers `--help`,
every relative link points at a file, and the README's test command is the one CI runs."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import lenet.sweep  # noqa: F401  registers ${sweep_job:}, which the sweep folders' names use
from helpers import CONFIG_DIR, REPO
from lenet.registry import check_config_targets

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shell_lines(markdown: str) -> list[str]:
    """The lines of the bash/sh code blocks in some Markdown, comments cut off."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, flags=re.S)
    return [re.split(r"\s+#", line)[0].strip() for block in blocks for line in block.splitlines()]


LINES = {page.relative_to(REPO).as_posix(): shell_lines(page.read_text()) for page in PAGES}
TRAIN_COMMANDS = sorted({(name, line) for name, lines in LINES.items() for line in lines if line.startswith("python train.py") and "<" not in line})
SCRIPTS = sorted({line.split()[0] for lines in LINES.values() for line in lines if line.startswith("lenet-")})

# Overrides that need a Hydra plugin: the commands naming them compose only where the plugin is installed.
PLUGINS = {
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=ray_cluster": "hydra_plugins.hydra_ray_launcher",
}


def overrides(command: str) -> list[str]:
    """A command's Hydra overrides, a sweep's lists cut to their first value (its first job)."""
    args = [arg for arg in shlex.split(command)[2:] if not arg.startswith("-") and arg != "job"]  # -m, --cfg job
    return [arg.split(",")[0] if "=" in arg and "," in arg and "[" not in arg else arg for arg in args]


def test_pages_show_commands():
    assert len(PAGES) >= 8, "README.md and the docs/ pages"
    assert len(TRAIN_COMMANDS) >= 30 and {"lenet-predict", "lenet-serve", "lenet-export", "lenet-explain", "lenet-compare"} <= set(SCRIPTS)
    assert sum(name == "README.md" for name, _ in TRAIN_COMMANDS) >= 8


@pytest.mark.parametrize(("page", "command"), TRAIN_COMMANDS, ids=[f"{page}: {command}" for page, command in TRAIN_COMMANDS])
def test_train_command_composes(page, command):
    args = overrides(command)
    for override, plugin in PLUGINS.items():
        if override in args and importlib.util.find_spec(plugin) is None:
            pytest.skip(f"{override} needs {plugin.split('.')[-1]}, which is not installed")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=args, return_hydra_config=True)
    with open_dict(cfg):
        cfg.pop("hydra")
        cfg.run_dir = "outputs/test"  # ${hydra:runtime.output_dir} only exists under @hydra.main
    job = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    check_config_targets(job)  # and nothing is built that the allow-list does not name


@pytest.mark.slow  # a process per command
@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_answers_help(script):
    import tomllib

    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert script in entry_points, f"{script} is named in the docs but is not a console script in pyproject.toml"
    module = entry_points[script].split(":")[0]  # e.g. lenet.predict (python -m runs its main)
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]


def test_relative_links_point_at_files():
    broken = []
    for page in PAGES:
        targets = re.findall(r"\]\(([^)\s]+)\)", page.read_text()) + re.findall(r'<img src="([^"]+)"', page.read_text())
        for target in targets:
            path = target.split("#")[0]
            if path and "://" not in path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    command = [line.strip() for line in ci.splitlines() if line.strip().startswith("python -m pytest")][-1]
    tests_section = (REPO / "README.md").read_text().split("## Tests", 1)[1].split("\n## ", 1)[0]
    assert command in shell_lines(tests_section), f"README's Tests section should show {command!r}, as .ci/run runs it"
    assert "LENET_DATA_DIR" in ci and "LENET_DATA_DIR" in tests_section

