"""Which memory format trains faster on this machine: channels_last or contiguous (model.memory_format).

    python benchmarks/memory_format.py                        # experiment=fast's network and batch
    python benchmarks/memory_format.py data.batch_size=64     # any train.py overrides

Times training steps (forward, backward, optimiser step) of the composed network on random batches
of the composed batch size, both formats alternating, and prints microseconds per image (medians of
5 rounds) and the setting to use. Both formats give the same numbers up to float rounding; which is
faster depends on the CPU and the batch size (AMD Zen 4 at batch 64: contiguous 8% faster; Intel
Xeon at batch 256: channels_last). Choose it once per machine, not per run, so that a seed keeps
giving the same metrics. Writes benchmarks/results/memory_format.json and .md (or --results-dir).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet.config import load_config, to_plain  # noqa: E402
from lenet.module import MEMORY_FORMATS  # noqa: E402
from lenet.registry import build  # noqa: E402
from results_file import add_results_dir_option, markdown_table, write_results  # noqa: E402


def microseconds_per_image(net_spec: dict, optimizer_spec: dict, batch: int, memory_format, steps: int = 30) -> float:
    torch.manual_seed(0)
    net = build(net_spec, "network").to(memory_format=memory_format)
    optimizer = build({**optimizer_spec, "_partial_": True}, "optimizer")(net.parameters())
    images = torch.randn(batch, 1, 28, 28).to(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch,))
    for step in range(steps + 5):  # 5 warm-up steps
        if step == 5:
            started = time.perf_counter()
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps / batch * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["experiment=fast"], help="train.py overrides (default: experiment=fast)")
    add_results_dir_option(parser)
    args = parser.parse_args()
    cfg = load_config(args.overrides, run_dir="unused")
    model, batch = to_plain(cfg.model), cfg.data.batch_size
    rounds: dict[str, list[float]] = {name: [] for name in MEMORY_FORMATS}
    for _ in range(5):
        for name, memory_format in MEMORY_FORMATS.items():
            rounds[name].append(microseconds_per_image(model["net"], model["optimizer"], batch, memory_format))
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    for name, value in medians.items():
        print(f"{name:14} {value:7.1f} µs per image (batch {batch}, {torch.get_num_threads()} threads)")
    best = min(medians, key=medians.get)
    ratio = max(medians.values()) / medians[best]
    print(f"faster here: model.memory_format={best} ({ratio:.2f}x)")
    result = {"overrides": args.overrides, "batch_size": batch, "threads": torch.get_num_threads(),
              "us_per_image_median": medians, "us_per_image_rounds": rounds, "faster": best, "speedup": ratio}  # fmt: skip
    body = (f"Training steps of the network that `{' '.join(args.overrides)}` composes, batch {batch}, {torch.get_num_threads()} threads, "
            f"medians of 5 rounds.\n\n" + markdown_table(["memory format", "µs per image"], [[n, f"{v:.1f}"] for n, v in medians.items()])
            + f"\n\nFaster here: `model.memory_format={best}` ({ratio:.2f}x).")  # fmt: skip
    paths = write_results("memory_format", result, body, results_dir=args.results_dir, title="channels_last or contiguous")
    print(f"Written: {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
