"""Accuracy of checkpoints and ensembles on digits that are not MNIST's, read through the product's preprocessing.

    python benchmarks/real_digits.py [LABEL=]MODEL[,MODEL...] [...] [--sets usps,unipen_test,...] [--limit N]
        [--seed 0] [--unsure-below 0.5] [--name real_digits] [--results-dir benchmarks/results] [--cache-dir DIR]
        [--no-samples] [--misread SET]

Each positional argument is one model: a run directory, .ckpt or .safetensors file (`served`: the model
shipped in the package), or several joined by commas
(an ensemble averaging their probabilities), named in the table by an optional `LABEL=` prefix.
The sets are lenet.realdigits's (default: all this machine can make); their prepared images are
cached, so another model costs seconds. Prints one row per model (accuracy per set, and on the
official MNIST test set for reference), then per set the macro F1, refusals, "unsure" answers and
top confusions, and unipen_test's accuracy per contributing institution; writes NAME.json and NAME.md
(lenet's results files: date, commit, CPU, versions) and a sheet of sample images
(_samples.png, unless --no-samples). --misread SET adds a sheet of every image of SET that the last
model reads wrongly, as the model saw it (_misread_SET.png).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # also when a test loads this file by its path

from lenet import realdigits  # noqa: E402
from lenet.cache import cache_folder  # noqa: E402
from lenet.evaluation import default_data_dir  # noqa: E402
from lenet.inference import UNSURE_BELOW, Ensemble, Model, load_ensemble  # noqa: E402
from lenet.inference import SERVED_WEIGHTS  # noqa: E402
from lenet.preprocess import ImageError, prepare_image  # noqa: E402
from results_file import add_results_dir_option, write_results  # noqa: E402

MAX_UNSURE_USPS = 0.02  # issue 10: "unsure" on at most 2% of USPS digits


def measure(spec: str, sets: dict, unsure_below: float, data_dir: str) -> tuple[dict, Model]:
    """One model ([LABEL=]comma-joined checkpoints: an ensemble) on every set: its row (scores, threshold
    sweep, per-group accuracy, timing) and the loaded model."""
    label, _, paths = spec.rpartition("=")
    names = [str(SERVED_WEIGHTS) if path == "served" else path for path in paths.split(",")]
    started = time.perf_counter()
    loaded = load_ensemble(names)
    model = realdigits.benchmark(loaded, sets, unsure_below)
    row = {
        "model": label or paths,
        "checkpoints": names,
        "networks": len(loaded.members) if isinstance(loaded, Ensemble) else 1,  # a shipped file may hold several
        "sets": {name: score.as_dict() for name, score in model.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    groups = {name: realdigits.set_groups(name, data_dir) for name in model}
    row["groups"] = {name: realdigits.group_accuracy(model[name], found) for name, found in groups.items() if found}
    if "usps" in model:
        row["threshold_for_max_unsure_usps"] = {
            "max_unsure": MAX_UNSURE_USPS,
            "threshold": realdigits.choose_threshold(model, "usps", MAX_UNSURE_USPS),
        }
    row["threshold_sweep"] = realdigits.sweep_thresholds(model, [round(t, 2) for t in np.arange(0.3, 1.0, 0.05)])
    return row, loaded


def table(rows: list[dict], names: list[str]) -> list[str]:
    """Markdown table: one row per model, accuracy (%) per set."""
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in rows:
        cells = [f"{100 * row['sets'][name]['accuracy']:.2f}" for name in names]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    singles = [row for row in rows if row.get("networks", len(row["checkpoints"])) == 1]
    if len(singles) >= 3:  # seeds of a recipe: their median is the recipe's figure
        cells = [f"{100 * float(np.median([row['sets'][name]['accuracy'] for row in singles])):.2f}" for name in names]
        lines.append(f"| median of the {len(singles)} single models | " + " | ".join(cells) + " |")
    return lines


def details(row: dict) -> list[str]:
    lines = [f"{row['model']}  ({row['seconds']} s)"]
    for name, result in row["sets"].items():
        confusions = ", ".join(f"{pair}: {n}" for pair, n in result["top_confusions"].items()) or "none"
        lines.append(
            f"  {name:<12} acc {100 * result['accuracy']:6.2f}%  F1 {100 * result['macro_f1']:6.2f}%  "
            f"refused {100 * result['refused_rate']:4.1f}%  unsure(<{result['unsure_below']}) "
            f"{100 * result['unsure_rate']:4.1f}%  answered acc {100 * result['answered_accuracy']:6.2f}%  [{confusions}]"
        )
    for name, groups in row.get("groups", {}).items():
        lines.append(f"  {name} by group: " + ", ".join(f"{group} {100 * g['accuracy']:.1f}% of {g['count']}" for group, g in groups.items()))
    choice = row.get("threshold_for_max_unsure_usps")
    if choice:
        lines.append(f"  largest unsure threshold leaving <= {100 * choice['max_unsure']:.0f}% of USPS unsure: {choice['threshold']}")
    return lines


def sample_sheet(names: list[str], seed: int, data_dir: str, path: Path, per_set: int = 10) -> None:
    """Per set, a row of user-like images and below it what prepare_image makes of them."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2 * len(names), per_set, figsize=(1.3 * per_set, 2.7 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        digit_set = realdigits.make_set(name, limit=per_set, seed=seed, data_dir=data_dir)
        for column, (image, label) in enumerate(zip(digit_set.images, digit_set.labels)):
            picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
            try:
                prepared = prepare_image(picture)[0].numpy()
            except ImageError:
                prepared = np.zeros((28, 28))
            top, bottom = axes[2 * row, column], axes[2 * row + 1, column]
            top.imshow(picture, cmap="gray", vmin=0, vmax=255)
            top.set_title(f"{name} {label}\n{picture.width}x{picture.height}" if column == 0 else f"{label}\n{picture.width}x{picture.height}", fontsize=7)
            bottom.imshow(prepared, cmap="gray", vmin=0, vmax=1)
            for axis in (top, bottom):
                axis.set_xticks([])
                axis.set_yticks([])
        axes[2 * row + 1, 0].set_ylabel("prepared", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def misread_sheet(model: Model, prepared: realdigits.PreparedSet, path: Path, columns: int = 10) -> int:
    """Every image of `prepared` that `model` reads wrongly, as prepared: label→answer, confidence."""
    import matplotlib.pyplot as plt

    probs = model.predict_probs(prepared.images)
    confidence, answers = probs.max(dim=1)
    wrong = ((answers != prepared.labels) | prepared.refused).nonzero().flatten().tolist()
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, wrong):
        axis.imshow(prepared.images[i, 0], cmap="gray", vmin=0, vmax=1)
        answer = "refused" if prepared.refused[i] else f"{int(answers[i])} {float(confidence[i]):.2f}"
        axis.set_title(f"{int(prepared.labels[i])}→{answer}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return len(wrong)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="[LABEL=]run directory or .ckpt; comma-joined paths form an ensemble")
    parser.add_argument("--sets", help=f"comma-separated, from {','.join(realdigits.SET_NAMES)} (default: all available)")
    parser.add_argument("--limit", type=int, help="first N images of each set (default: whole sets)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of the synthetic sets")
    parser.add_argument("--unsure-below", type=float, default=UNSURE_BELOW, help="top probability under which an answer is unsure")
    parser.add_argument("--name", default="real_digits", help="results files' name: NAME.json, NAME.md (default: real_digits)")
    add_results_dir_option(parser)
    parser.add_argument("--cache-dir", type=Path, help=f"prepared sets (default: {cache_folder('realdigits')})")
    parser.add_argument("--no-samples", action="store_true", help="skip the sheet of sample images (saves a few seconds)")
    parser.add_argument("--data-dir", default=default_data_dir(), help="MNIST and USPS folder (default: $LENET_DATA_DIR)")
    parser.add_argument("--misread", metavar="SET", help="also draw every image of SET that the last model reads wrongly")
    args = parser.parse_args(argv)

    data_dir = args.data_dir
    if args.sets:
        names = args.sets.split(",")
    else:
        names = []
        for name in realdigits.SET_NAMES:
            reason = realdigits.unavailable(name, data_dir)
            if reason:
                print(f"skipping {name}: {reason}", file=sys.stderr)
            else:
                names.append(name)
    started = time.perf_counter()
    try:
        sets = realdigits.load_sets(names, args.limit, args.seed, data_dir, args.cache_dir, log=lambda line: print(line, file=sys.stderr))
    except (realdigits.SetUnavailable, ValueError) as error:
        parser.error(str(error))
    print(f"sets ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    rows, models = zip(*(measure(spec, sets, args.unsure_below, data_dir) for spec in args.models))
    rows = list(rows)
    columns = [*names, realdigits.REFERENCE]
    lines = table(rows, columns)
    print("\naccuracy (%), through prepare_image; mnist = the official test set, unmodified\n")
    print("\n".join(lines))
    print()
    for row in rows:
        print("\n".join(details(row)))

    command = shlex.join(["python", "benchmarks/real_digits.py", *(argv if argv is not None else sys.argv[1:])])
    report = {
        "seed": args.seed,
        "limit": args.limit,
        "unsure_below": args.unsure_below,
        "sets": {
            name: {"count": len(prepared), "refused": int(prepared.refused.sum()), "params": realdigits.SET_PARAMS.get(name)}
            for name, prepared in sets.items()
        },
        "models": rows,
    }
    if "photo_font" in sets:  # the set depends on the fonts this machine has
        report["sets"]["photo_font"]["fonts_used"] = [path.name for path in realdigits.handwriting_fonts()]
    markdown = [
        "Accuracy (%) through `prepare_image`; mnist is the official test set, unmodified.",
        "",
        *lines,
        "",
        *(f"    {line}" for row in rows for line in details(row)),
    ]
    written = list(write_results(args.name, report, "\n".join(markdown), results_dir=args.results_dir,
                                 title="Real-digits benchmark", packages=["pillow", "scipy", "scikit-image"], command=command))  # fmt: skip
    folder = written[0].parent
    if not args.no_samples:
        written.append(folder / f"{args.name}_samples.png")
        sample_sheet(names, args.seed, data_dir, written[-1])
    if args.misread:
        if args.misread not in sets:
            parser.error(f"--misread {args.misread}: not among the sets measured ({', '.join(sets)})")
        written.append(folder / f"{args.name}_misread_{args.misread}.png")
        misread_sheet(models[-1], sets[args.misread], written[-1])
    print(f"\nwritten: {', '.join(map(str, written))}")
    return rows


if __name__ == "__main__":
    main()
