#!/usr/bin/env bash
# Issue 17's GPU check, for a machine with NVIDIA GPUs (run from the repo root after `make setup`
# and `dvc repro train_generator`; under 8 minutes on one GPU). Writes under $OUT (default
# bench/out/gpu). Not yet run: no GPU machine has been lent to this project (docs/scaling.md).
#   1. the GPUs;
#   2. generation throughput of the pipeline's diffusion model on cuda, streaming into shards,
#      and the peak-memory benchmark;
#   3. with 2+ GPUs: hierarchical k-means and generation on 2 NCCL ranks against 1 (same tree,
#      same bytes) and the Lloyd-iteration benchmark. One GPU cannot host two NCCL ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpus.csv"
NGPU=$(nvidia-smi -L | wc -l)

"$PY" - "$OUT" <<'EOF'
import json, sys, tempfile, time
import torch
from selectbench.core import layout
from selectbench.models import embedder, generator, sampling

assert torch.cuda.is_available(), "no CUDA device visible"
model = generator.load_generator(layout.GENERATOR)
enc = embedder.load(layout.EMBEDDER)
res = {}
for n in (1000, 4000):
    with tempfile.TemporaryDirectory() as d:
        torch.cuda.synchronize(); t0 = time.perf_counter()
        out = sampling.txt2img(model, enc.text_hidden, ["a photo of a coat"] * n, seed=0, steps=10,
                               batch_size=500, progress=False, resume_dir=d, device="cuda")
        torch.cuda.synchronize()
        res[n] = {"images_per_s": n / (time.perf_counter() - t0), "images": len(out),
                  "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20}
print(json.dumps(res, indent=2))
json.dump(res, open(f"{sys.argv[1]}/generation.json", "w"), indent=2)
EOF
"$PY" -m bench.gen_memory | tee "$OUT/gen_memory.txt"

if [ "$NGPU" -ge 2 ]; then
  timeout 300 "$PY" -m pytest -q tests/test_hkm_distributed.py | tee "$OUT/hkm_nccl_tests.txt"
  timeout 240 "$PY" -m bench.hkm_distributed --n 1000000 --dim 512 --k 4096 --reps 5 | tee "$OUT/hkm_distributed.txt"
  cp bench/out/hkm_distributed.json "$OUT/"
else
  echo "one GPU: no NCCL rank pair possible; the 2-rank checks ran on CPU (gloo) in the test suite" | tee "$OUT/nccl.txt"
fi
