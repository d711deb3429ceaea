#!/usr/bin/env bash
# The whole GPU check in one command of <= 7 minutes on the H200 machine, from a bare checkout:
#   bash benchmarks/run_device.sh            # on the GPU machine, from the repository root
#   bash benchmarks/run_device.sh --dry-run  # on any CPU machine: every step that needs no GPU (< 2 min)
# Steps, in order, each under a time cap and a global deadline (DEADLINE_S, default 410 s):
#   1. the build (background, EFFRANK_FAST_REQUIRE_CUDA=1) while the Triton GPU tests run;
#   2. every CUDA kernel registered (tests/test_gpu_build.py): a failed build FAILS here, loudly;
#   3. smoke (60 s): the cooperative multi-block Jacobi kernel at n = 40, 288, 300 and the CUDA
#      inertia count against the CPU kernel's;
#   4. the other GPU-marked tests (xdist, pytest-timeout, no -x; the CPU suites are deselected);
#   5. headline benchmarks in priority order: Gram vs cuBLAS at (65536, 4096) + the bias at two N;
#      inertia vs eigvalsh fp32/fp64 and Cholesky at d = 4096, 8192; tracker update at 4096/k=256;
#      bench_e2e at d = 4096;
#   6. extras while time remains (the last: bench_monitor's GPT-2-like model on CUDA).
# Logs and JSON go to a work folder; after every step it is packed into $OUT/results.tgz and the
# step lines into $OUT/summary.txt (the only two files written to $OUT), printed last.
# Exit code: 0 when every step passed, 1 otherwise (the build's failure is reported first).
set -u -o pipefail
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-/tmp/effrank_out}
WORK=${WORK:-$(mktemp -d /tmp/effrank_device.XXXXXX)}
DEADLINE_S=${DEADLINE_S:-410}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a} MAX_JOBS=${MAX_JOBS:-8}
export EFFRANK_FAST_GPU_TESTS_ONLY=1  # conftest: only GPU-marked tests (no CPU contract suite on CUDA)
T0=$(date +%s)
FAILED=0
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

elapsed() { echo $(( $(date +%s) - T0 )); }
note() { echo "$*" | tee -a "$SUMMARY"; }
pack() { tar -czf "$WORK.tgz" -C "$WORK" . 2>/dev/null && mv -f "$WORK.tgz" "$OUT/results.tgz"; }  # $OUT: 2 files

# step NAME CAP_S MIN_S GPU|CPU CMD...: run CMD under min(CAP_S, time left) with its log in $WORK/NAME.log;
# skipped when less than MIN_S is left, or in a dry run when it needs the GPU.
step() {
  local name=$1 cap=$2 min=$3 needs=$4; shift 4
  local left=$(( DEADLINE_S - $(elapsed) ))
  if [ $DRY = 1 ] && [ "$needs" = GPU ]; then note "$name: skipped (dry run: needs the GPU)"; return 0; fi
  if [ $left -lt "$min" ]; then note "$name: SKIPPED, ${left} s left of the ${DEADLINE_S} s deadline"; pack; return 0; fi
  [ $left -lt "$cap" ] && cap=$left
  local t=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  local how=ok
  [ $rc -ne 0 ] && how="FAILED rc=$rc" && FAILED=1
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && how="TIMED OUT at ${cap} s (rc=$rc)"
  note "$name: $how ($(( $(date +%s) - t )) s, at $(elapsed) s)"
  tail -n 3 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  pack
  return $rc
}

# ---------------------------------------------------------------- 0. the machine
{
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv,noheader
  else echo "no nvidia-smi"; fi
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'gpu', torch.cuda.is_available())"
  echo "nvcc: $(command -v nvcc || echo none) $(nvcc --version 2>/dev/null | tail -1)"
  echo "cores $(nproc), $(date -u), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), dry_run=$DRY"
} > "$WORK/env.txt" 2>&1
note "== effrank_fast device run: $(head -2 "$WORK/env.txt" | tr '\n' ' ')"
if [ $DRY = 0 ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  note "no CUDA device visible: run with --dry-run on a CPU machine"; FAILED=1
fi

# ---------------------------------------------------------------- 1. build || Triton GPU tests
TRITON_TESTS="tests/test_gram_triton_gpu.py tests/test_linear_act_gram.py tests/test_monitor_fused.py"
BUILD_PID=
if [ $DRY = 0 ]; then
  ( EFFRANK_FAST_REQUIRE_CUDA=1 timeout 300 $PY setup.py build_ext --inplace > "$WORK/build.log" 2>&1
    echo $? > "$WORK/build.rc" ) &
  BUILD_PID=$!
else
  # the CPU build takes minutes here: the dry run checks the build configuration only
  $PY -c "
import importlib.util, torch
spec = importlib.util.spec_from_file_location('s', 'setup.py'); s = importlib.util.module_from_spec(spec); spec.loader.exec_module(s)
print('C++ standard', s.torch_cxx_std(torch), '; CUDA skip reason:', s._cuda_skip_reason(torch))" > "$WORK/build.log" 2>&1
  echo $? > "$WORK/build.rc"
fi
step tests_triton_gpu 120 30 GPU $PY -m pytest -v -p no:cacheprovider -m gpu -n 4 --timeout 100 $TRITON_TESTS
if [ -n "$BUILD_PID" ]; then wait "$BUILD_PID"; fi
BUILD_RC=$(cat "$WORK/build.rc" 2>/dev/null || echo 99)
grep '\[effrank_fast setup\]' "$WORK/build.log" | sed 's/^/    /' >> "$SUMMARY"
if [ "$BUILD_RC" != 0 ]; then
  FAILED=1
  note "!!!!!!!! BUILD FAILED (rc=$BUILD_RC): the CUDA kernels are missing; last lines of build.log:"
  grep -E "error|Error|fatal" "$WORK/build.log" | head -n 8 | sed 's/^/    /' | tee -a "$SUMMARY"
  tail -n 5 "$WORK/build.log" | sed 's/^/    /' | tee -a "$SUMMARY"
else
  note "build: ok (at $(elapsed) s)"
fi
pack
[ $DRY = 0 ] && { $PY -m effrank_fast.info > "$WORK/info.txt" 2>&1 & }  # packed with the next step's results

# ---------------------------------------------------------------- 2. kernels registered
step kernels_registered 90 10 CPU env EFFRANK_FAST_GPU_TESTS_ONLY=0 $PY -m pytest -q -p no:cacheprovider tests/test_gpu_build.py

# ---------------------------------------------------------------- 3. smoke: multi-block Jacobi, CUDA inertia
SMOKE_DEV=cuda
[ $DRY = 1 ] && SMOKE_DEV=cpu
# a failed smoke: the tracker benchmark still measures, with torch's eigh instead of the Jacobi kernel
step smoke 45 15 CPU $PY - "$SMOKE_DEV" <<'PY' || { export TRACKER_EIGENSOLVER=eigh; note "smoke failed: bench_tracker uses eigh"; }
import sys
import torch
from effrank_fast.ops.inertia import inertia_count
from effrank_fast.ops.jacobi_eigh import jacobi_eigh

dev = sys.argv[1]
bad = 0
sizes = [(40, torch.float64), (288, torch.float64), (288, torch.float32), (300, torch.float64)]
for n, dt in sizes if dev == "cuda" else sizes[:1]:  # the dry run checks the plumbing only
    a = torch.randn(n, n, dtype=torch.float64)
    a = a + a.T
    r = jacobi_eigh(a.to(dev, dt), backend="native")
    a_in = a.to(dt).double()
    ref = torch.linalg.eigvalsh(a_in)
    err = float((r.eigenvalues.double().cpu() - ref).abs().max())
    # Weyl: |λ̂ - λ| <= off·‖A‖_F, plus the rounding of the last rotations (n·u·‖A‖_F)
    bound = (float(r.off) + n * torch.finfo(dt).eps) * float(a_in.norm())
    ok = err <= bound and int(r.sweeps) < 30
    bad += not ok
    print(f"jacobi n={n} {dt}: max err {err:.2e} <= {bound:.2e}, sweeps {int(r.sweeps)}: {'ok' if ok else 'WRONG'}")
for d in (64, 1000, 2049) if dev == "cuda" else (64,):
    x = torch.randn(2 * d, d, dtype=torch.float64) * torch.logspace(0, -6, d, dtype=torch.float64)
    m = x.T @ x / (2 * d)
    lam = torch.linalg.eigvalsh(m)
    tau = torch.stack([(lam[i] + lam[i + 1]) / 2 for i in (d // 10, d // 2, d - 2)])
    cpu = inertia_count(m, tau, fallback=False).counts
    got = inertia_count(m.to(dev), tau.to(dev), fallback=False).counts.cpu()
    exact = (lam.unsqueeze(0) > tau.unsqueeze(1)).sum(1)
    ok = torch.equal(got, cpu) and torch.equal(got, exact)
    bad += not ok
    print(f"inertia d={d}: {dev} {got.tolist()} cpu {cpu.tolist()} eigvalsh {exact.tolist()} {'ok' if ok else 'WRONG'}")
sys.exit(1 if bad else 0)
PY

# ---------------------------------------------------------------- 4. the other GPU-marked tests
IGNORES=""
for f in $TRITON_TESTS tests/test_gpu_build.py; do IGNORES="$IGNORES --ignore=$f"; done
step tests_gpu 90 30 GPU $PY -m pytest -v -p no:cacheprovider -m gpu -n 8 --timeout 80 -rfE tests $IGNORES
# dry run: that the GPU-only selection keeps the GPU-marked tests and deselects the rest (two files)
[ $DRY = 1 ] && step tests_gpu_selection 60 10 CPU $PY -m pytest -q -p no:cacheprovider -m gpu --collect-only \
  tests/test_monitor_sync.py tests/test_monitor.py

# ---------------------------------------------------------------- 5. headline benchmarks
step bench_gram 40 20 GPU $PY benchmarks/bench_gram.py --quick --budget-s 15 --json "$WORK/bench_gram.json"
step bench_inertia 55 30 GPU $PY benchmarks/bench_inertia.py --sizes 4096,8192 --svd-max 4096 --json "$WORK/bench_inertia.json"
step bench_tracker 40 20 GPU $PY benchmarks/bench_tracker.py --json "$WORK/bench_tracker.json"
E2E_ARGS="--widths 4096 --variant-budget-s 3 --warmup 3 --steps-slow 10 --time-budget-s 45"
[ $DRY = 1 ] && E2E_ARGS="--smoke --variants none,exact,warm --layers last_hidden"
step bench_e2e 60 25 CPU $PY -W ignore benchmarks/bench_e2e.py $E2E_ARGS --json "$WORK/bench_e2e.json"

# ---------------------------------------------------------------- 6. extras, while time remains
step bench_jacobi_eigh 40 25 GPU $PY benchmarks/bench_jacobi_eigh.py --json "$WORK/bench_jacobi_eigh.json"
step bench_e2e_widths 90 40 GPU $PY -W ignore benchmarks/bench_e2e.py --widths 1024,8192 --variants none,exact,warm,warm_fused \
  --variant-budget-s 3 --warmup 3 --steps-slow 10 --time-budget-s 60 --json "$WORK/bench_e2e_widths.json"
step bench_linear_act_gram 40 25 GPU $PY benchmarks/bench_linear_act_gram.py --json "$WORK/bench_linear_act_gram.json"
# issue 19's GPT-2-like model (d = 2048 activation, default last hidden) beside the svdvals and Gram + eigvalsh hooks
MON_ARGS="--device cuda --scenarios gpt2 --rounds 4 --warmup 2 --steps 5"
[ $DRY = 1 ] && MON_ARGS="--smoke"
if $PY -c "import transformers" 2> /dev/null; then
  step bench_monitor_gpt2 60 30 CPU $PY -W ignore benchmarks/bench_monitor.py $MON_ARGS --json "$WORK/bench_monitor_gpt2.json"
else note "bench_monitor_gpt2: skipped (transformers is not installed here; pip install transformers)"; fi

if [ "$BUILD_RC" != 0 ]; then note "!!!!!!!! BUILD FAILED (rc=$BUILD_RC): see build.log in results.tgz"; fi
note "== total $(elapsed) s; $([ $FAILED = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED')"
pack
echo
echo "================================ summary ($SUMMARY; logs and JSON in $OUT/results.tgz)"
cat "$SUMMARY"
exit $FAILED
