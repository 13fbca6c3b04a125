#!/usr/bin/env bash
# On a GPU machine: the CUDA tests, then the throughput table at 224 px, batch 256, with
# 16 DataLoader workers for the per-image pipeline. Under 5 minutes on one H200-class GPU.
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { make install >/dev/null; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests
"$PY" benchmarks/throughput.py --device cuda --batch 256 --sizes 224 --workers 16 --steps 20 --pngs 256
