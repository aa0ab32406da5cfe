#!/usr/bin/env bash
# The GPU machine's runs in one command each (run there, in the project root, after ../shared/gpu/stage.sh's parts
# and, for transformers, tests/gpu/stage_transformers.sh's wheels, carried with .gpu-stage/upstream: the upstream
# test files, materialised as docs/testing.md says). Summaries and logs go to $OUT.
#   bash tests/gpu/battery.sh correct   # every correctness run at once (none is timed): tests/gpu, the GPU fuzz,
#                                       # sgl-kernel's two files and FlashMLA's sparse file with the torch provider
#   bash tests/gpu/battery.sh perf      # timed, alone: the bench side by side (the vendor directly, the facade over
#                                       # sgl-kernel, the torch provider; eager and CUDA-graph replays), each row's
#                                       # kernel and host profile, host time bound against Triton's runner, then a
#                                       # transformers model's tokens/s per backend
#   bash tests/gpu/battery.sh ncu       # Nsight Compute's sections for the kernel-bound rows' kernels, vendor and
#                                       # torch provider (ROWS: the rows' names, comma-separated)
# Knobs: T (seconds a run, 540), FUZZ / SEED (the fuzz's seeds, 8 from 100), EVERY (the sparse file's every Nth, 4).
set -u
# the staged providers (sgl-kernel: the bench's vendor column, tests/gpu's real-provider tests); without them the
# torch provider's runs go on and those parts skip
[ -f /tmp/gpu-site/env.sh ] && source /tmp/gpu-site/env.sh
if [ -d .gpu-stage/transformers ] && [ ! -d /tmp/tf-site ]; then
  pip install -q --no-index --no-deps --target /tmp/tf-site .gpu-stage/transformers/*.whl > /tmp/tf-install.log 2>&1
fi
export PYTHONPATH=/tmp/tf-site:$PWD:$PWD/.gpu-stage/upstream/pylib:${PYTHONPATH:-}
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/logs "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
UP=$PWD/.gpu-stage/upstream
T=${T:-540}
PT="python -m pytest -p accelbridge.testing.plugin -p no:cacheprovider -q -rfs"  # failures and skips, by reason
pinned() { ACCELBRIDGE_PROVIDERS=fa3=torch,flashmla=torch timeout "$T" "$@"; }
case "${1:-correct}" in
correct)
  (timeout "$T" $PT tests/gpu --ignore=tests/gpu/test_fuzz_gpu.py > /tmp/logs/gpu.log 2>&1; echo "rc $?" >> /tmp/logs/gpu.log) &
  (timeout "$T" $PT tests/gpu/test_fuzz_gpu.py --fuzz-cases "${FUZZ:-8}" --fuzz-seed "${SEED:-100}" > /tmp/logs/fuzz.log 2>&1
   echo "rc $?" >> /tmp/logs/fuzz.log) &
  (pinned python tests/gpu/upstream_files.py sgl "$UP/sgl-kernel/test_flashmla.py" > /tmp/logs/sgl_mla.log 2>&1
   echo "rc $?" >> /tmp/logs/sgl_mla.log) &
  (pinned python tests/gpu/upstream_files.py sgl "$UP/sgl-kernel/test_flash_attention.py" > /tmp/logs/sgl_fa.log 2>&1
   echo "rc $?" >> /tmp/logs/sgl_fa.log) &
  for k in 0 1; do
    (pinned python tests/gpu/upstream_files.py flashmla-sparse "$UP/flashmla" --every "${EVERY:-4}" --shard "$k/2" \
       > "/tmp/logs/sparse$k.log" 2>&1; echo "rc $?" >> "/tmp/logs/sparse$k.log") &
  done
  wait
  for f in /tmp/logs/*.log; do echo "=== $f"; grep -v Warning "$f" | grep -E "passed|failed|FAILED|SKIPPED|rc |\"cases\"" | tail -24; done \
    > "$OUT/summary.txt"
  tar czf "$OUT/logs.tgz" -C /tmp logs
  cat "$OUT/summary.txt"
  ;;
perf)
  timeout "$T" python -m accelbridge bench throughput --provider sgl-kernel --provider torch --graphs \
    > "$OUT/bench.txt" 2>&1; echo "bench rc $?"
  cat "$OUT/bench.txt"
  timeout "$T" python tests/gpu/profile_rows.py --provider sgl-kernel --provider torch --host 20 \
    --json "$OUT/profile.json" > "$OUT/profile.txt" 2>&1; echo "profile rc $?"
  grep launches "$OUT/profile.txt"
  timeout "$T" python tests/gpu/bound_host.py > "$OUT/bound_host.txt" 2>&1; echo "bound_host rc $?"
  grep "host us" "$OUT/bound_host.txt"
  timeout "$T" python tests/gpu/transformers_throughput.py > "$OUT/throughput.txt" 2>&1; echo "throughput rc $?"
  grep "|" "$OUT/throughput.txt"
  ;;
ncu)
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  sections=()
  for s in SpeedOfLight Occupancy LaunchStats WarpStateStats SchedulerStats MemoryWorkloadAnalysis ComputeWorkloadAnalysis
  do sections+=(--section "$s"); done
  IFS=',' read -ra rows <<< "${ROWS:-decode batch 64 128,sparse decode,sparse prefill,ragged prefill}"
  greps=(); for r in "${rows[@]}"; do greps+=("--grep=$r"); done
  timeout "$T" "$NCU" --profile-from-start off --clock-control none "${sections[@]}" --csv --page details \
    --log-file "$OUT/ncu.csv" python tests/gpu/ncu_rows.py "${greps[@]}" > "$OUT/ncu_runs.txt" 2>&1
  echo "ncu rc $?"
  cat "$OUT/ncu_runs.txt" | grep -v Warning | tail -20
  python tests/gpu/ncu_summary.py "$OUT/ncu.csv" | tee "$OUT/ncu_summary.txt"
  ;;
*) echo "usage: bash tests/gpu/battery.sh correct|perf|ncu" >&2; exit 2 ;;
esac
