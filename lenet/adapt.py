"""Adapt a served model to one writer: fine-tune it on the digits it misread, with the labels their
writer gave (lenet.corrections), rehearsing MNIST and UNIPEN training digits all along so that it
forgets nothing else. Seconds on the CPU; the result is safetensors weights and a card (lenet.served)
that `lenet-serve --ckpt` and `lenet-predict --ckpt` read.

    lenet-adapt corrections.db --writer anna --out anna.safetensors          # the shipped model, adapted
    lenet-adapt exported/ --ckpt outputs/<run> --out anna.safetensors        # a lenet-corrections export
    lenet-serve --ckpt anna.safetensors

    adapted = adapt(model, images, labels, load_replay(data_dir))           # in Python: the same step

Each step reads every correction once, each redrawn with a small random affine map (a writer's next
digit is never the same drawing), beside a batch of MNIST training digits and one of UNIPEN training
writers' renders (the page's drawing). The loss is the cross-entropy of the corrections plus, on the
rehearsed digits, the divergence from what the model answered before adapting (distillation),
weighted by `keep_weight`. Chosen on UNIPEN's validation writers (never the test writers that
benchmarks/adapt_writers.py reads), k = 1 and 3 corrections per misread class: MNIST test 0.06
points down on average, 0.22 for the worst writer; with cross-entropy on the rehearsed digits'
labels instead, 0.12 on average (it pulls the model off the recipe that trained it); with
lr 0.003 and keep_weight 10, 1.6 points for the worst (a writer whose 0s look like MNIST's 1s).
Redrawing the corrections with thinner and thicker strokes or elastic warps, a higher rate,
twice the steps or the dense layers alone moved the validation writers' errors by no more than
one seed's noise, so none is an option. For the served ensemble of 5, replay batches of 128
rather than 64 keep the worst of 5 validation writers' MNIST within 0.08 points instead of 0.12,
at 33 rather than 31 errors left of 60 (benchmarks/results/adapt_val/). An ensemble adapts each
member (seed + i), members side by side on the cores, each on one thread (a batch this small
gains nothing from a second, and loses much on shared cores). Everything random comes from
generators seeded by `seed`: the same inputs give the same weights.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lenet.augment import RandomAffine
from lenet.corrections import NOT_A_DIGIT, NOT_A_DIGIT_NAME, CorrectionsError, read_corrections
from lenet.datasets import NUM_CLASSES, normalize, unit_floats
from lenet.inference import LOAD_ERRORS, SERVED_WEIGHTS, Ensemble, LoadedModel, load_ensemble, load_problem

REPLAY_SOURCES = ("mnist", "unipen")
MAX_CORRECTIONS = 10_000  # more than a writer gives; beyond it, train a model (python train.py)


class AdaptError(ValueError):
    """Corrections, a model or settings adaptation cannot use: the message names the problem and the fix."""


@dataclass(frozen=True)
class AdaptSettings:
    """How long and how hard to fine-tune; the defaults adapt in a few seconds (benchmarks/adapt_writers.py)."""

    steps: int = 300
    lr: float = 0.001  # SGD with momentum; 0.01 broke digits the model read right before
    momentum: float = 0.9
    replay_batch: int = 128  # digits of each replay source per step; 64 let the worst writer take 0.12 points off MNIST
    keep_weight: float = 30.0  # the rehearsed digits' divergence from the model before, against the corrections' loss
    jitter: bool = True  # redraw each correction with a small random affine map every step
    seed: int = 0

    def check(self) -> None:
        if self.steps < 1 or self.replay_batch < 0 or not self.lr > 0 or not 0 <= self.momentum < 1 or self.keep_weight < 0:
            raise AdaptError(
                f"settings {self}: steps must be 1 or more, replay_batch and keep_weight 0 or more, lr above 0 and momentum in [0, 1)"
            )


@dataclass
class Replay:
    """Training digits rehearsed while adapting: source name -> uint8 images (N, 1, 28, 28). No labels:
    the model is held to its own answers on them."""

    sources: dict[str, Tensor]

    def describe(self) -> str:
        return " + ".join(f"{name} ({len(images):,})" for name, images in self.sources.items()) or "none"


def load_replay(data_dir: str | Path, sources: Sequence[str] = REPLAY_SOURCES) -> Replay:
    """MNIST's training digits and UNIPEN's training writers (drawn once, as the page draws) from `data_dir`.
    Raises lenet.datafiles.DataError (UnipenError) naming what is missing."""
    unknown = sorted(set(sources) - set(REPLAY_SOURCES))
    if unknown:
        raise AdaptError(f"unknown replay source(s) {unknown}: choose from {', '.join(REPLAY_SOURCES)}, or none.")
    loaded = {}
    if "mnist" in sources:
        from lenet.datafiles import load_split

        loaded["mnist"] = load_split(data_dir, "mnist", "train")[0]
    if "unipen" in sources:
        from lenet.unipen_images import load_renders

        part = load_renders(data_dir, "train", 1)
        loaded["unipen"] = part.images[:, 0]
    return Replay(loaded)


# ----------------------------------------------------------------------------- checking corrections


def usable_corrections(images: Tensor, labels: Tensor | Sequence[int], log: Callable[[str], None] | None = None) -> tuple[Tensor, Tensor]:
    """The corrections as (N, 1, 28, 28) float images in 0..1 and int64 labels 0-9. "Not a digit" ones
    (label NOT_A_DIGIT) are skipped with a note: a ten-digit model has no answer to learn for them.
    Anything else wrong is an AdaptError."""
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if len(images) == 0 or len(labels) == 0:
        raise AdaptError("no corrections given: collect some with lenet-serve --collect FILE, or pick a writer who has some.")
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, 28, 28): one channel
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise AdaptError(
            f"corrections must be prepared 28x28 images, (N, 1, 28, 28); got shape {tuple(images.shape)}: "
            "prepare them with lenet.preprocess.prepare_image (lenet-corrections export writes them so)."
        )
    if labels.dim() != 1 or len(labels) != len(images) or labels.is_floating_point():
        raise AdaptError(f"the corrections need one whole-number label per image: {len(images)} images, labels of shape {tuple(labels.shape)} and type {labels.dtype}.")
    out_of_range = sorted({int(v) for v in labels if not 0 <= int(v) <= NOT_A_DIGIT})
    if out_of_range:
        raise AdaptError(f"labels {out_of_range[:5]} are not digits: a correction's label is 0 to 9 (or {NOT_A_DIGIT_NAME}, skipped).")
    if images.is_floating_point() and len(images) and not (0 <= float(images.min()) and float(images.max()) <= 1):
        raise AdaptError("float corrections must lie in 0..1 (or pass uint8 images 0..255), as lenet.preprocess prepares them.")
    digits = labels != NOT_A_DIGIT
    skipped = int((~digits).sum())
    if skipped and log:
        log(f"skipped {skipped} correction(s) labelled {NOT_A_DIGIT_NAME}: a ten-digit model has no answer to learn for them")
    if not digits.any():
        raise AdaptError(
            f"no digit corrections to adapt to ({len(labels)} given, {skipped} of them {NOT_A_DIGIT_NAME}): "
            "collect some with lenet-serve --collect FILE, or pick a writer who has some."
        )
    if int(digits.sum()) > MAX_CORRECTIONS:
        raise AdaptError(f"{int(digits.sum()):,} corrections: over {MAX_CORRECTIONS:,}, that is a training set: train with python train.py.")
    return unit_floats(images[digits]), labels[digits].to(torch.int64)


# ----------------------------------------------------------------------------- adapting


def adapt(
    model: LoadedModel | Ensemble, images: Tensor, labels: Tensor | Sequence[int], replay: Replay | None = None,
    settings: AdaptSettings = AdaptSettings(), log: Callable[[str], None] | None = None, workers: int | None = None,
) -> LoadedModel | Ensemble:  # fmt: skip
    """`model` fine-tuned on the corrections (`images` uint8 0..255 or float 0..1, (N, 1, 28, 28); `labels`
    0-9, NOT_A_DIGIT skipped), rehearsing `replay`; a new model, `model` is left as it was. An ensemble
    adapts each member. PyTorch models only (not ONNX files or the C kernel: adapt their checkpoint)."""
    settings.check()
    corrections, targets = usable_corrections(images, labels, log)
    members = model.members if isinstance(model, Ensemble) else [model]
    if not all(isinstance(member, LoadedModel) for member in members):
        raise AdaptError("only PyTorch models adapt (a checkpoint or .safetensors weights), not an exported .onnx file: adapt its checkpoint.")
    jobs = [(member, corrections, targets, replay, replace(settings, seed=settings.seed + i)) for i, member in enumerate(members)]
    with single_thread(), ThreadPoolExecutor(max_workers=min(len(jobs), workers or os.cpu_count() or 1)) as pool:
        adapted = list(pool.map(lambda job: adapt_member(*job), jobs))
    return Ensemble(adapted) if isinstance(model, Ensemble) else adapted[0]


def adapt_member(member: LoadedModel, images: Tensor, labels: Tensor, replay: Replay | None, settings: AdaptSettings) -> LoadedModel:
    """One network fine-tuned (a copy, on the CPU, on the calling thread: adapt() runs members side by
    side); images float 0..1, labels 0-9, both checked."""
    generator = torch.Generator().manual_seed(settings.seed)
    jitter = RandomAffine(degrees=10, translate=0.06, scale=(0.9, 1.1), shear=8, generator=generator)
    before = copy.deepcopy(member.net).to("cpu").eval()  # the answers the rehearsed digits keep
    net = copy.deepcopy(before).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=settings.momentum)
    rehearsed = [] if replay is None or not settings.replay_batch else list(replay.sources.values())
    for _ in range(settings.steps):
        shown = jitter(images) if settings.jitter else images
        loss = F.cross_entropy(net(normalize(shown, member.mean, member.std)), labels)
        for replay_images in rehearsed:
            chosen = torch.randint(len(replay_images), (settings.replay_batch,), generator=generator)
            x = normalize(replay_images[chosen], member.mean, member.std)
            with torch.no_grad():
                kept = before(x).log_softmax(dim=1)
            drift = F.kl_div(net(x).log_softmax(dim=1), kept, log_target=True, reduction="batchmean")
            loss = loss + settings.keep_weight * drift
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    device = next(member.net.parameters()).device
    return replace(member, net=net.eval().to(device, memory_format=torch.channels_last))


@contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- writing the result


def save_adapted(adapted: LoadedModel | Ensemble, out: str | Path, adapted_from: Sequence[str], corrections: int,
                 replay: Replay | None, settings: AdaptSettings) -> Path:  # fmt: skip
    """The adapted weights as `out` (.safetensors) with their card, which says what was adapted from what."""
    from lenet.served import ship

    members = adapted.members if isinstance(adapted, Ensemble) else [adapted]
    recipe = {
        "adapted": {
            "from": [str(path) for path in adapted_from],
            "corrections": corrections,
            "replay": replay.describe() if replay else "none",
            "settings": asdict(settings),
            "by": "lenet.adapt",
        }
    }
    return ship(members, out, recipe=recipe)


# ----------------------------------------------------------------------------- the command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from lenet.evaluation import default_data_dir

    defaults = AdaptSettings()
    parser = argparse.ArgumentParser(
        prog="lenet-adapt",
        description="Fine-tune a served model on a writer's corrections (rehearsing MNIST and UNIPEN), into new weights lenet-serve --ckpt reads.",
    )
    parser.add_argument("corrections", help="a corrections database (lenet-serve --collect FILE) or a folder from lenet-corrections export")
    parser.add_argument("--out", required=True, type=Path, help="the adapted weights, a new .safetensors file (its card is written beside it)")
    parser.add_argument("--ckpt", action="append", help=f"the model to adapt: run directory, .ckpt or .safetensors; repeat for an ensemble (default: the shipped model, {SERVED_WEIGHTS.name})")
    parser.add_argument("--writer", help="only this writer tag's corrections")
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding MNIST/ and UNIPEN/ for the replay (default: $LENET_DATA_DIR or ./data)")
    parser.add_argument("--replay", default=",".join(REPLAY_SOURCES), help="training digits to rehearse, comma-separated: mnist, unipen, or none (default: mnist,unipen)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help=f"fine-tuning steps (default: {defaults.steps})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"SGD learning rate (default: {defaults.lr})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the jitter and the replay batches (default: 0)")
    args = parser.parse_args(argv)
    args.replay = [] if args.replay.strip().lower() == "none" else [name.strip() for name in args.replay.split(",") if name.strip()]
    if args.out.suffix != ".safetensors":
        parser.error(f"--out {args.out} must end in .safetensors: lenet-serve picks the loader by the suffix")
    models = [Path(path) for path in (args.ckpt or [SERVED_WEIGHTS])]
    if any(args.out.resolve() == path.resolve() for path in models):
        parser.error(f"--out {args.out} is the model being adapted: write the adapted weights to a new file")
    return args


def main(argv: list[str] | None = None) -> int:
    from lenet.datafiles import DataError

    args = parse_args(argv)
    settings = AdaptSettings(steps=args.steps, lr=args.lr, seed=args.seed)
    models = args.ckpt or [str(SERVED_WEIGHTS)]
    started = time.perf_counter()
    try:
        images, labels = read_corrections(args.corrections, args.writer)
        model = load_ensemble(models)
        replay = load_replay(args.data_dir, args.replay)
        adapted = adapt(model, images, labels, replay, settings, log=lambda note: print(f"lenet-adapt: {note}", file=sys.stderr))
        used = int((labels != NOT_A_DIGIT).sum())
        path = save_adapted(adapted, args.out, models, used, replay, settings)
    except (AdaptError, CorrectionsError, DataError) as error:
        print(f"lenet-adapt: {error}", file=sys.stderr)
        return 2
    except LOAD_ERRORS as error:
        print(f"lenet-adapt: {load_problem(error, models)}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(f"adapted {', '.join(models)} to {used} corrections (replay: {replay.describe()}) in {seconds:.1f} s: "
          f"wrote {path} and {path.with_suffix('.json').name}; serve it with lenet-serve --ckpt {path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
