#!/usr/bin/env bash
# The one command for a GPU machine (about 8 minutes on one H200-class GPU; not yet timed on
# one): everything lands in one folder, and a summary to paste into a note is printed last.
#   1. the CUDA tests (pytest -m cuda)
#   2. the throughput table at 64 and 224 px: ours / compute-only / standard per-image pipeline
#   3. the packing table: 1, 2, 4, 8 workers on GPU 0 (benchmarks/gpu_packing.py)
#   4. a 2-trial demo study with --gpus 0, tracked in MLflow: its trial runs must carry GPU
#      system metrics (system/gpu_0_utilization_percentage)
#   5. the scale table on the GPU (benchmarks/scale.py --device cuda, 1k and 16k images):
#      streamed vs on-device images/s where the copy runs beside the step (not measured yet)
#   6. data-parallel scaling: one pretraining on 1, 2, 4, 8 GPUs (those present) under torchrun,
#      global batch 256 x N at 224 px; images/s and efficiency against N x one GPU (not measured yet)
#
#   bash benchmarks/gpu_check.sh                 # or: make gpu-check; OUT=DIR to choose the folder
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || make install >/dev/null
OUT=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
SECONDS_PER_PACKING=${SECONDS_PER_PACKING:-20}
step() { printf '\n== %s\n' "$*"; }

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    | tee "$OUT/device.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

step "1. CUDA tests"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/cuda-tests.txt" | tail -3

step "2. throughput (ours / compute-only / standard)"
"$PY" benchmarks/throughput.py --device cuda --batch 256 --sizes 64 224 --workers 16 --steps 20 --pngs 256 \
    2>&1 | tee "$OUT/throughput.txt" | tail -8

step "3. packing (1, 2, 4, 8 workers on GPU 0, ${SECONDS_PER_PACKING} s each)"
"$PY" benchmarks/gpu_packing.py --seconds "$SECONDS_PER_PACKING" --json "$OUT/packing.json" \
    2>&1 | tee "$OUT/packing.txt" | tail -16

step "4. a 2-trial demo study on --gpus 0, tracked"
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
doc = yaml.safe_load(Path("experiments/demo.yaml").read_text())
doc.update({"budget": {"trials": 2, "epochs": 3}, "confirm": {"top_k": 1, "seeds": 1}, "system_metrics_interval_s": 1})
(out / "demo.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
EOF
"$PY" sweeps/run.py --config "$OUT/demo.yaml" --gpus 0 --tracking-uri "sqlite:///$OUT/mlflow.db" \
    --out "$OUT/demo" --set train.device=cuda > "$OUT/demo.txt" 2>&1
"$PY" - "$OUT" <<'EOF' | tee "$OUT/demo-gpu-metrics.txt"
import sys

from mlflow import MlflowClient

out = sys.argv[1]
client = MlflowClient(f"sqlite:///{out}/mlflow.db")
exp = client.get_experiment_by_name("demo")
runs = client.search_runs([exp.experiment_id], "tags.`vicreg.role` = 'trial'")
keys = [sorted(k for k in r.data.metrics if k.startswith("system/gpu")) for r in runs]
ok = runs and all("system/gpu_0_utilization_percentage" in k for k in keys)
print(f"demo on --gpus 0: {len(runs)} trial runs; GPU system metrics on each: {'yes' if ok else 'NO'} "
      f"({', '.join(keys[0]) if keys and keys[0] else 'none'})")
sys.exit(0 if ok else 1)
EOF

step "5. scale on the GPU (1k and 16k images, streamed vs on-device)"
"$PY" benchmarks/scale.py --device cuda --sizes 1000 16000 --steps 30 --json "$OUT/scale.json" \
    2>&1 | tee "$OUT/scale.txt" | tail -8

step "6. data-parallel scaling (torchrun, 1/2/4/8 GPUs)"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" -m vicreg make-synthetic --out "$OUT/ddp-data" --count 2048 --size 256 --seed 0 >/dev/null
: > "$OUT/scaling.txt"
for N in 1 2 4 8; do
  [ "$N" -le "$NGPU" ] || break
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$N" -m vicreg pretrain \
      --set data.dataset=synthetic --set "data.root=$OUT/ddp-data" --set "data.cache_dir=$OUT/ddp-cache" \
      --set data.image_size=224 --set "data.batch_size=$(( 256 * N ))" --set train.epochs=3 \
      --set data.include_test_in_pretrain=false --set "train.checkpoint_dir=$OUT/ddp-$N" > "$OUT/ddp-$N.txt" 2>&1
  "$PY" - "$OUT" "$N" >> "$OUT/scaling.txt" <<'EOF'
import sys
from pathlib import Path
from vicreg.checkpoint import read_checkpoint
out, n = Path(sys.argv[1]), int(sys.argv[2])
rate = lambda k: read_checkpoint(out / f"ddp-{k}" / "last.pt")["history"][-1]["images_per_s"]  # last epoch: warm
print(f"{n} GPU(s): {rate(n):.0f} images/s, efficiency {rate(n) / (n * rate(1)):.2f} of {n} x one GPU")
EOF
done
cat "$OUT/scaling.txt"

step "summary (paste into the note)"
{
  echo "GPU check, $(cat "$OUT/device.txt"), $(date -u +%Y-%m-%d), folder $OUT"
  echo "CUDA tests: $(tail -1 "$OUT/cuda-tests.txt")"
  echo; echo "Throughput:"; grep -E '^\|' "$OUT/throughput.txt" || true
  echo; echo "Packing:"; grep -E '^\||best packing' "$OUT/packing.txt" || true
  echo; echo "Scale:"; grep -E '^\||^goal' "$OUT/scale.txt" || true
  echo; echo "Data-parallel scaling (global batch 256 x N, 224 px):"; cat "$OUT/scaling.txt"
  echo; cat "$OUT/demo-gpu-metrics.txt"
  grep -E '^  pretraining vs|^quote' "$OUT/demo.txt" || true
} | tee "$OUT/summary.md"
