#!/usr/bin/env bash
# One device call: build, GPU tests, benchmarks for the tracker and jacobi_eigh. Logs go to $OUT.
# Usage (from the staged copy's root): bash benchmarks/run_tracker_device.sh
set -o pipefail
export TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -1; date -u; } 2>&1 | tee "$OUT/env.txt"
t0=$(date +%s)
python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
# Smoke: the cooperative kernel must not hang; 20 s is plenty.
timeout 60 python3 - <<'PY' 2>&1 | tee "$OUT/smoke.txt"
import torch
from effrank_fast.ops.jacobi_eigh import jacobi_eigh
for n, dt in [(40, torch.float64), (288, torch.float64), (288, torch.float32), (300, torch.float64)]:
    a = torch.randn(n, n, dtype=torch.float64); a = a + a.T
    r = jacobi_eigh(a.cuda().to(dt), backend="native"); torch.cuda.synchronize()
    ref = torch.linalg.eigvalsh(a.to(dt).double())
    print("smoke", n, dt, "err", float((r.eigenvalues.double().cpu() - ref).abs().max() / ref.abs().max()), "sweeps", int(r.sweeps))
PY
smoke=$?
echo "smoke rc=$smoke"
solver=auto
[ $smoke -eq 0 ] || solver=eigh
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_jacobi_eigh.py tests/test_tracker.py -k "cuda or gpu" 2>&1 | tee "$OUT/tests_gpu.txt" | tail -15
timeout 60 python3 benchmarks/bench_jacobi_eigh.py --json "$OUT/bench_jacobi_eigh.json" 2>&1 | tee "$OUT/bench_jacobi_eigh.txt"
TRACKER_EIGENSOLVER=$solver timeout 120 python3 benchmarks/bench_tracker.py --json "$OUT/bench_tracker.json" 2>&1 | tee "$OUT/bench_tracker.txt"
echo "total $(( $(date +%s) - t0 )) s"
