#!/usr/bin/env bash
# Train the augmentation ablation behind `experiment=robust` (issue 10): each family of
# conf/augment/robust.yaml switched off in turn, plus plain and affine-only, same budget each.
# Runs land in outputs/robustness/<name>_e<epochs>_s<seed>/ (skipped when already finished); score them with
#   python benchmarks/real_digits.py outputs/robustness/*_s1
# Usage: [VARIANTS="robust plain ..."] bash benchmarks/robustness_study.sh [EPOCHS] [SEED ...]
# (defaults: every variant, 10 epochs, seed 1)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-10}; shift || true
seeds=${*:-1}
# One thread per run: on a shared 2-core machine two threads mostly wait for each other.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

declare -A variants=(
  [robust]=""
  [plain]="augment=none"
  [affine_only]="data.augment.transforms.0.p=0 data.augment.transforms.1.p=0 data.augment.transforms.2.p=0"
  [no_stroke]="data.augment.transforms.0.p=0"
  [no_fill_box]="data.augment.transforms.1.p=0"
  [no_lowres]="data.augment.transforms.2.p=0"
  [fill_affine]="data.augment.transforms.0.p=0 data.augment.transforms.2.p=0"
  [styles]="augment=robust_styles data.augment.transforms.0.flag=0.5"
  [styles_flag25]="augment=robust_styles"
  [styles_short]="augment=robust_styles data.augment.transforms.0.flag=0.5 +data.augment.transforms.0.flag_length=[0.15,0.3]"
)
for seed in $seeds; do
  for name in ${VARIANTS:-robust plain affine_only no_stroke no_fill_box no_lowres fill_affine}; do
    dir="outputs/robustness/${name}_e${epochs}_s${seed}"
    [ -f "$dir/metrics.json" ] && continue
    echo "== $(date +%T) $name seed $seed"
    # shellcheck disable=SC2086
    python train.py experiment=robust trainer.max_epochs="$epochs" seed="$seed" trainer.enable_progress_bar=false \
      ${variants[$name]} hydra.run.dir="$dir" > "/tmp/robustness_${name}_s${seed}.log" 2>&1 \
      || { echo "failed: see /tmp/robustness_${name}_s${seed}.log"; continue; }
    python -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"   test acc {m['test/acc']:.4f}  fit {m['fit_seconds']:.0f} s\")" "$dir/metrics.json"
  done
done
