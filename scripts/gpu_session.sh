#!/usr/bin/env bash
# One batched session on a lent GPU machine (the `device` tool): build from a clean tree with the README's set-up,
# then the stages named on the command line, each writing its log under $OUT (default ./out).
#   stages: tests  tests1  tests2  seeds  sanitizer  sanitizer_first_layer  check  bench  overhead  hopper
# (seeds: the suite $SEEDS times (default 20) with fresh seeds, spread over the visible GPUs: scripts/fresh_seeds.sh,
# by default each pass in 3 shards, 15 processes a GPU at once, 2 threads each: 20 passes took ~400 s on 4x H200)
# (tests1 / tests2: the test files in two alphabetical halves, each inside one 10-minute device call; the whole
# suite took over 520 s on an H100 in v7.)
# The suite ships with the package (jaxconv3d/data/suite.json); JAXCONV3D_SUITE, if set, names another file.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(pwd)/out}"
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export CMAKE_ARGS="${CMAKE_ARGS:--DCMAKE_CUDA_ARCHITECTURES=90}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
t0=$(date +%s)
scripts/setup.sh > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
echo "setup: $(( $(date +%s) - t0 )) s"; tail -1 "$OUT/setup.log"
status=0
for stage in "$@"; do
  t0=$(date +%s)
  case "$stage" in
    tests) scripts/py -m pytest -q -rs --durations=15 tests -p no:cacheprovider > "$OUT/tests.log" 2>&1 ;;
    tests1|tests2)
      files=(tests/test_*.py)
      half=$(( ${#files[@]} / 2 ))
      if [ "$stage" = tests1 ]; then part=("${files[@]:0:$half}"); else part=("${files[@]:$half}"); fi
      scripts/py -m pytest -q -rs --durations=15 "${part[@]}" -p no:cacheprovider > "$OUT/$stage.log" 2>&1 ;;
    sanitizer_first_layer)
      for tool in memcheck racecheck synccheck; do
        compute-sanitizer --tool "$tool" --kernel-regex kns='smallc|conv_tma|fold|stencil3|dw3' --error-exitcode 3 \
          scripts/py tests/gpu/first_layer_sanitize.py || exit_tool=1
      done > "$OUT/$stage.log" 2>&1
      [ -z "${exit_tool:-}" ] ;;
    seeds) OUT="$OUT" SHARDS="${SHARDS:-3}" JOBS_PER_GPU="${JOBS_PER_GPU:-15}" THREADS="${THREADS:-2}" \
             scripts/fresh_seeds.sh "${SEEDS:-20}" tests > "$OUT/seeds.log" 2>&1 ;;
    sanitizer) bash tests/gpu/run_sanitizer.sh > "$OUT/sanitizer.log" 2>&1 ;;
    check) scripts/py -m jaxconv3d check --suite --precision all --json "$OUT/check.json" > "$OUT/check.log" 2>&1 ;;
    bench) scripts/py -m jaxconv3d bench --suite --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1 ;;
    overhead) scripts/py -m jaxconv3d.overhead > "$OUT/overhead.log" 2>&1 ;;
    hopper) bash tests/gpu/run_hopper_check.sh > "$OUT/hopper.log" 2>&1 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  rc=$?
  [ $rc -ne 0 ] && status=1
  echo "== $stage: rc=$rc, $(( $(date +%s) - t0 )) s"
  tail -25 "$OUT/$stage.log"
done
exit $status
