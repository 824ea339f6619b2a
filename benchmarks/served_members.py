"""How many members the served ensemble earns, judged on UNIPEN's validation writers (never its test writers).

    python benchmarks/served_members.py MODEL [MODEL ...] [--data-dir DIR] [--name served_members]

MODELs are checkpoints or run directories of one recipe (experiment=served), or shipped .safetensors
weights, whose members count one by one, in the order given. For each n from 1 to the number of
members, the ensemble of the first n reads UNIPEN's validation writers (drawn once, as the page draws)
and MNIST's validation digits (the 6,000 the training runs held out): accuracy and mistakes for each
n, and the milliseconds one prepared drawing takes (one thread, batch of 1, median of 200). The
test sets (MNIST's official test set, the held-out UNIPEN writers, USPS) are read by
benchmarks/real_digits.py once the number is chosen. Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from lenet.data import mnist_validation  # noqa: E402
from lenet.evaluation import default_data_dir  # noqa: E402
from lenet.inference import Ensemble, load_ensemble  # noqa: E402
from lenet.unipen_images import load_renders  # noqa: E402
from ensemble_latency import median_ms  # noqa: E402
from results_file import add_results_dir_option, markdown_table, write_results  # noqa: E402
from val_styles import scores  # noqa: E402


def one_drawing_ms(model, image: torch.Tensor) -> float:
    """Median ms of one prepared drawing on one thread, as a server worker runs it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return median_ms(lambda: model.predict_probs(image), repeats=200)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints, run directories or .safetensors weights of one recipe")
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--name", default="served_members", help="results file name (default: served_members)")
    add_results_dir_option(parser)
    args = parser.parse_args(argv)

    model = load_ensemble(args.models)
    members = model.members if isinstance(model, Ensemble) else [model]
    unipen = load_renders(args.data_dir, "val", 1)
    mnist_images, mnist_labels = mnist_validation(args.data_dir)
    rows, results = [], []
    for n in range(1, len(members) + 1):
        ensemble = members[0] if n == 1 else Ensemble(members[:n])
        on_unipen = scores(ensemble, unipen.images[:, 0], unipen.labels)
        on_mnist = scores(ensemble, mnist_images, mnist_labels)
        unipen_acc, unipen_wrong, mnist_acc, mnist_wrong = on_unipen["accuracy"], on_unipen["wrong"], on_mnist["accuracy"], on_mnist["wrong"]
        ms = one_drawing_ms(ensemble, unipen.images[:1, 0])
        results.append({"members": n, "val_unipen": unipen_acc, "val_unipen_wrong": unipen_wrong,
                        "val_mnist": mnist_acc, "val_mnist_wrong": mnist_wrong, "ms_per_drawing": round(ms, 3)})  # fmt: skip
        rows.append([n, f"{100 * unipen_acc:.2f}% ({unipen_wrong})", f"{100 * mnist_acc:.2f}% ({mnist_wrong})", f"{ms:.2f}"])
        print(f"{n} member(s): val_unipen {unipen_acc:.2%} ({unipen_wrong} wrong), MNIST val {mnist_acc:.2%} ({mnist_wrong} wrong), {ms:.2f} ms")
    body = markdown_table(["members", f"UNIPEN validation writers ({len(unipen.labels):,})", f"MNIST validation ({len(mnist_labels):,})",
                           "ms a drawing (1 thread)"], rows)  # fmt: skip
    intro = f"Members, in order: {', '.join(args.models)} ({len(members)} networks). Accuracy (mistakes).\n\n"
    write_results(args.name, {"models": args.models, "members": results}, intro + body + "\n", results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
