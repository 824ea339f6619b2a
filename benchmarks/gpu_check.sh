#!/usr/bin/env bash
# GPU check (issue 13), at most ~8 minutes on a machine with a CUDA GPU: installs the project, runs
# the GPU-marked tests (trainer=gpu end to end, batches on the device, DDP when there are 2+ GPUs)
# and times `experiment=fast` to 99% on the GPU. Results in $OUT (or benchmarks/results/gpu/).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}; mkdir -p "$out"
python -m pip install -q -e ".[dev]" 2>&1 | tail -2
export LENET_DATA_DIR=${LENET_DATA_DIR:-$(pwd)/../shared/data}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
timeout 300 python -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -5 | tee "$out/tests.txt"
for seed in 1 2 3; do
  timeout 120 python train.py trainer=gpu experiment=fast seed=$seed hydra.run.dir="$out/fast_s$seed" > "$out/fast_s$seed.log" 2>&1 || true
  python -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"seed {sys.argv[2]}: test acc {m['test/acc']:.4f}, fit {m['fit_seconds']:.2f} s\")" \
    "$out/fast_s$seed/metrics.json" "$seed" | tee -a "$out/fast.txt" || true
done
