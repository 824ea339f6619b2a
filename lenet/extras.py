"""The optional parts of lenet (the extras of pyproject.toml) and the one line a command prints when
the part it needs is not installed:

    lenet-serve needs the serve extra: pip install "lenet[serve]" (fastapi is not installed)

The core install trains, evaluates, plots, explains and predicts; each extra below adds a command or
a runtime. Only whether a module is installed is checked (nothing is imported), so a command asks
before its first import of the part and fails in one line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

# extra -> the modules it installs that lenet imports (import names, not distribution names)
EXTRAS = {
    "serve": ("fastapi", "uvicorn", "python_multipart", "swagger_ui_bundle"),  # lenet-serve
    "export": ("onnx", "onnxscript", "onnxruntime"),  # lenet-export, and .onnx files in lenet-predict / lenet-serve
    "search": (  # hparams_search=optuna; hydra/launcher=joblib, slurm, submitit_local
        "optuna", "hydra_plugins.hydra_optuna_sweeper", "hydra_plugins.hydra_joblib_launcher",
        "hydra_plugins.hydra_submitit_launcher",
    ),
    "bench": ("skimage",),  # the pen-drawn sets of the real-digits benchmark (lenet.realdigits)
    "ray": ("hydra_plugins.hydra_ray_launcher",),  # hydra/launcher=ray_cluster
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a parent package is imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package; a module left without a spec
        return False


def missing_extra(extra: str, needed_by: str) -> str | None:
    """The one line naming `extra` and how to install it when one of its modules is missing, else None."""
    missing = [module for module in EXTRAS[extra] if not installed(module)]
    if not missing:
        return None
    return f'{needed_by} needs the {extra} extra: pip install "lenet[{extra}]" ({missing[0]} is not installed)'


def require_extra(extra: str, command: str) -> None:
    """Exit with status 2 and that one line on stderr when `command`'s extra is not installed."""
    problem = missing_extra(extra, command)
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
