"""REST API and drawing page for trained models: `lenet-serve [--ckpt RUN_DIR ...] [--port 8000]` (default: the shipped model).

    POST /predict        one image: multipart form field `file`, or JSON {"image": "<base64>"}
    POST /predict/batch  several: multipart fields `files`, or JSON {"images": ["<base64>", ...]}
                         (both: `?preview=true` adds `preprocessed_png`, the 28x28 image the model saw)
    POST /feedback       the right label for a misread image (`file`/`image`, or `prediction_id`, and `label`),
                         kept in SQLite with `--collect FILE` (lenet.corrections); 404 without it
    GET  /healthz        liveness, the checkpoints served, whether corrections are collected
    GET  /               the drawing page (lenet/static/); GET /docs the OpenAPI docs, served from this machine

Every image goes through `lenet.preprocess.prepare_image`, the one path shared with `lenet-predict`;
several checkpoints are served as their ensemble; `--native` runs LeNet-5 checkpoints in the C
kernel of lenet.native. Bad input gets a JSON 4xx `{"error", "detail"}`,
never a 500, and every request is bounded: its body in size (413) and in time to arrive (408), its
images in number and decoded pixels (413), and the decoding work in flight in each worker process
(beyond it requests queue, and get 503 with Retry-After when the queue is full). Connections whose
request head does not arrive within seconds are closed.

The modules: app (create_app and the routes), limits (the bounds above), schemas (what goes in and
out), errors (the JSON errors), images (images -> answers), feedback (POST /feedback), cli (the command). It needs the serve
extra (pip install "lenet[serve]"). torch, Pillow and the model code are imported when the app is
created, and FastAPI when one of the names below is first used, so `import lenet.serve` is instant
and `lenet-serve` without the extra says so in one line.
"""

from __future__ import annotations

import importlib
from typing import Any

from lenet.extras import require_extra

# Where the names other code imports from lenet.serve live, imported on first use (PEP 562).
HOMES = {
    "create_app": "lenet.serve.app",
    "BodyLimits": "lenet.serve.limits",
    "DecodeBudget": "lenet.serve.limits",
    "HeadTimeoutH11": "lenet.serve.limits",
}
__all__ = ["main", *HOMES]


def main(argv: list[str] | None = None) -> int:
    """The lenet-serve command (lenet.serve.cli), once the serve extra is known to be installed."""
    require_extra("serve", "lenet-serve")
    from lenet.serve.cli import main as serve

    return serve(argv)


def __getattr__(name: str) -> Any:
    if name not in HOMES:
        raise AttributeError(f"module 'lenet.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(HOMES[name]), name)
