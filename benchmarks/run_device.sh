#!/usr/bin/env bash
# Every GPU check and benchmark, in two device calls of < 10 minutes each (the device tool's limit):
#   bash benchmarks/run_device.sh tests    # build (~1.5 min), GPU-marked tests, the whole suite
#   bash benchmarks/run_device.sh bench    # every GPU benchmark (builds first if _C is missing)
# (no argument: both, for a machine without a per-call limit). From the repository root on the GPU
# machine; logs and JSON go to $OUT (the device tool's output folder); a short summary is printed last.
set -o pipefail
export TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
t0=$(date +%s)
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -1; date -u; } 2>&1 | tee "$OUT/env.txt"

step() {  # step NAME TIMEOUT CMD...: run, log to $OUT/NAME.txt, remember the exit code
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc ($(( $(date +%s) - t0 )) s)" | tee -a "$OUT/summary.txt"
  tail -4 "$OUT/$name.txt"
}

phase=${1:-all}
if [ "$phase" != bench ] || ! ls effrank_fast/_C*.so > /dev/null 2>&1; then
  step build 240 python3 setup.py build_ext --inplace
fi
python3 -m effrank_fast.info > "$OUT/info.txt" 2>&1
if [ "$phase" != bench ]; then
  # GPU-marked tests of every op, plus the CPU suite on this machine's torch 2.11 / triton 3.6.
  step tests_gpu 200 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests
  step tests_all 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests
fi
if [ "$phase" = tests ]; then cat "$OUT/summary.txt"; exit 0; fi
step bench_gram 150 python3 benchmarks/bench_gram.py --json "$OUT/bench_gram.json" --budget-s 110
step bench_linear_act_gram 60 python3 benchmarks/bench_linear_act_gram.py --json "$OUT/bench_linear_act_gram.json"
step bench_inertia 200 python3 benchmarks/bench_inertia.py --sizes 1024,2048,4096,8192,16384 \
  --variants 4096,8192 --json "$OUT/bench_inertia.json"
step bench_jacobi_eigh 50 python3 benchmarks/bench_jacobi_eigh.py --json "$OUT/bench_jacobi_eigh.json"
step bench_tracker 100 python3 benchmarks/bench_tracker.py --json "$OUT/bench_tracker.json"
cat "$OUT/summary.txt"
