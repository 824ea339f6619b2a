#!/usr/bin/env bash
# GPU check (issue 13), at most ~8 minutes on a machine with a CUDA GPU: runs the GPU-marked tests
# (trainer=gpu end to end, batches on the device, DDP when there are 2+ GPUs), times the fast recipes to
# 99% on the GPU (5 seeds each), splits a fit into its phases and runs the same recipes as a bare PyTorch
# loop on the GPU. Results in $OUT (or benchmarks/results/gpu/): the pieces as .txt, all of them in
# gpu_check.md and .json (with the date, commit, CPU and versions), fit_phases.md/.json; about 6
# minutes on one H100.
#
#   bash benchmarks/gpu_check.sh            # installs the project first when its packages are missing
#   EXPERIMENTS=fast_gpu bash benchmarks/gpu_check.sh   # time only the GPU preset (about 4 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}; mkdir -p "$out"
python=${PYTHON:-python3}
if ! $python -c "import hydra, lightning, torchmetrics" 2>/dev/null; then
  $python -m pip install -q -e ".[dev]" 2>&1 | tail -2
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LENET_DATA_DIR=${LENET_DATA_DIR:-$(pwd)/../shared/data}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $python -c "import torch, lightning; print('torch', torch.__version__, '| lightning', lightning.__version__)"
  grep -m1 "model name" /proc/cpuinfo; nproc
} | tee "$out/gpu.txt"
timeout 300 $python -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -5 | tee "$out/tests.txt"

# Time to 99% on the GPU: the CPU preset (batch 256) and the GPU preset (fewer, larger steps).
for experiment in ${EXPERIMENTS:-fast_gpu fast}; do
  for seed in 1 2 3 4 5; do
    run_dir="$out/runs/${experiment}_s$seed"
    timeout 120 $python train.py trainer=gpu experiment=$experiment seed=$seed hydra.run.dir="$run_dir" >> "$out/train_logs.txt" 2>&1
    $python - "$run_dir/metrics.json" "$experiment" "$seed" <<'EOF' | tee -a "$out/time_to_99.txt"
import json, sys
try:
    m = json.load(open(sys.argv[1]))
    print(f"experiment={sys.argv[2]} seed {sys.argv[3]}: test acc {m['test/acc']:.4f}, fit {m['fit_seconds']:.2f} s, "
          f"{m['global_step']} steps, test {m['test_seconds']:.2f} s")
except OSError as error:
    print(f"experiment={sys.argv[2]} seed {sys.argv[3]}: no metrics ({error}); see its log")
EOF
  done
done
rm -rf "$out/runs"  # checkpoints and event files: the table above is the result

# Where Lightning's fit time goes (the first fit in a process pays CUDA's set-up), and the same recipes
# as a bare PyTorch loop on the GPU: the first loop is cold, the later ones warm.
timeout 120 $python benchmarks/fit_phases.py experiment=fast_gpu --results-dir "$out" 2>&1 | grep "fit\]" | tee "$out/phases.txt"
timeout 120 $python - <<'EOF' 2>&1 | grep -v Warning | tee "$out/bare_gpu.txt"
import json, sys
sys.argv = ["x"]; sys.path.insert(0, "benchmarks")
from time_to_accuracy import bare_loop
for recipe, seeds in (("fast_gpu", (1, 1, 2, 3, 4, 5)), ("fast", (1, 2))):
    for seed in seeds:
        print(f"bare loop, cuda, experiment={recipe} recipe, seed {seed}", json.dumps(bare_loop([f"experiment={recipe}"], seed, True, "cuda")))
EOF
printed=$(mktemp)
for piece in gpu tests time_to_99 phases bare_gpu; do
  [ -f "$out/$piece.txt" ] && { echo "== $piece"; cat "$out/$piece.txt"; }
done > "$printed"
$python benchmarks/results_file.py gpu_check --body-file "$printed" --title "GPU check" \
  --command "bash benchmarks/gpu_check.sh" --results-dir "$out"
rm -f "$printed"
