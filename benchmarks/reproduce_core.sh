#!/usr/bin/env bash
# The core figures of the README, in one go (about 10 minutes on 2 cores):
#   default recipe, 5 epochs, the same config twice (reproducibility), time to 99%, inference speed.
# Run from the repository root: bash benchmarks/reproduce_core.sh
# Writes core_runs, time_to_accuracy and inference (.md and .json each) into benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
mkdir -p "$results"

run() {  # run NAME OVERRIDES...: one training run into outputs/benchmarks/NAME, then print its headline
  local name=$1; shift
  rm -rf "outputs/benchmarks/$name"
  local launched; launched=$(date +%s.%N)
  python train.py "$@" trainer.enable_progress_bar=false "hydra.run.dir=outputs/benchmarks/$name" >/dev/null 2>&1
  python - "$name" "$launched" <<'PY'
import json, sys
m = json.load(open(f"outputs/benchmarks/{sys.argv[1]}/metrics.json"))
startup = m["fit_started_at"] - float(sys.argv[2])  # launch to the start of fit, measured from outside
print(f"{sys.argv[1]:16} test acc {m['test/acc']:.4f}  P {m['test/precision']:.4f}  R {m['test/recall']:.4f}  "
      f"F1 {m['test/f1']:.4f}  epochs {m['epochs']}  fit {m['fit_seconds']:.1f} s  start-up {startup:.2f} s")
PY
}

printed=$(mktemp)
{
  run default
  run five_epochs trainer.max_epochs=5
  run fast_a experiment=fast
  run fast_b experiment=fast
  python - <<'PY'
import json
a, b = (json.load(open(f"outputs/benchmarks/{n}/metrics.json")) for n in ("fast_a", "fast_b"))
same = all(a[k] == b[k] for k in a if k.startswith("test/"))
print(f"same seed and config twice: identical test metrics = {same}")
PY
} | tee "$printed"
python benchmarks/results_file.py core_runs --body-file "$printed" --title "Core training runs" \
  --command "bash benchmarks/reproduce_core.sh" --results-dir "$results"
rm -f "$printed"

python benchmarks/time_to_accuracy.py --results-dir "$results"
python benchmarks/inference.py outputs/benchmarks/default --results-dir "$results"
