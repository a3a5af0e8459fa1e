#!/usr/bin/env bash
# The test suite N times in a row with fresh seeds (issue 10's flakiness check), the passes spread over the visible
# GPUs (one pytest process a GPU at a time, CUDA_VISIBLE_DEVICES set; on a machine without a GPU, one process):
#   scripts/fresh_seeds.sh N [pytest arguments, default: tests]
# Pass i runs with JAXCONV3D_TEST_SEED = FRESH_SEED_BASE + i (default base: random, from /dev/urandom; printed), its log
# in $OUT/seeds/pass_<i>.log (OUT defaults to ./out). Prints one line a pass and `fresh seeds: passed/N`; the exit
# status is 0 only if every pass passed. Needs the project set up (scripts/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
N="${1:?usage: scripts/fresh_seeds.sh N [pytest arguments]}"
shift
[ "$#" -gt 0 ] || set -- tests
OUT="${OUT:-$(pwd)/out}"
mkdir -p "$OUT/seeds"
base="${FRESH_SEED_BASE:-$(od -An -N3 -tu4 /dev/urandom | tr -d " ")}"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
workers=$(( gpus > 0 ? gpus : 1 ))
echo "fresh seeds: $N passes from seed $base on $workers worker(s) ($gpus GPU(s)): pytest $*"

run_worker() {  # worker k runs passes k, k + workers, ...
  local k=$1 i
  shift
  for (( i = k; i < N; i += workers )); do
    local seed=$(( base + i )) log="$OUT/seeds/pass_$i.log" t0=$SECONDS rc
    if [ "$gpus" -gt 0 ]; then
      CUDA_VISIBLE_DEVICES=$k JAXCONV3D_TEST_SEED=$seed scripts/py -m pytest -q -p no:cacheprovider "$@" > "$log" 2>&1
    else
      JAXCONV3D_TEST_SEED=$seed scripts/py -m pytest -q -p no:cacheprovider "$@" > "$log" 2>&1
    fi
    rc=$?
    echo "pass $i seed $seed: rc=$rc, $(( SECONDS - t0 )) s, $(tail -1 "$log")"
  done
}

for (( k = 0; k < workers; k++ )); do run_worker "$k" "$@" & done
wait
passed=0
for (( i = 0; i < N; i++ )); do
  last=$(tail -1 "$OUT/seeds/pass_$i.log")
  [[ "$last" == *" passed"* && "$last" != *failed* && "$last" != *error* ]] && passed=$(( passed + 1 ))
done
echo "fresh seeds: $passed/$N"
[ "$passed" -eq "$N" ]
