#!/usr/bin/env bash
# Builds the standalone CUDA kernel checker: build_kernel_check.sh OUTPUT [extra nvcc flags...]
# Every family but Hopper (cuda/*.cu, cuda/sm80/*.cu, cuda/stencil/*.cu) for sm_90, the host dispatch sources
# (cuda/dispatch.cc, cuda/sm80/plan.cc, cuda/hopper/hopper_rules.cc, cuda/stencil/plan.cc), and the Hopper family (cuda/hopper/*.cu) compiled separately for sm_90a only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$1"; shift
NVCC="${NVCC:-nvcc}"
objs="$(mktemp -d)"
trap 'rm -rf "$objs"' EXIT
flags=(-std=c++17 -O2 --expt-relaxed-constexpr -I "$ROOT/cuda" "$@")
shopt -s nullglob
for f in "$ROOT"/cuda/hopper/*.cu; do
  "$NVCC" "${flags[@]}" -gencode=arch=compute_90a,code=sm_90a -c "$f" -o "$objs/hopper_$(basename "$f").o"
done
for f in "$ROOT/cuda/dispatch.cc" "$ROOT/cuda/sm80/plan.cc" "$ROOT/cuda/hopper/hopper_rules.cc" "$ROOT/cuda/stencil/plan.cc"; do
  "$NVCC" "${flags[@]}" -c "$f" -o "$objs/host_$(basename "$(dirname "$f")")_$(basename "$f").o"  # two plan.cc
done
"$NVCC" "${flags[@]}" -arch=sm_90 "$ROOT/tests/gpu/kernel_check.cu" "$ROOT"/cuda/*.cu "$ROOT"/cuda/sm80/*.cu "$ROOT"/cuda/stencil/*.cu \
  "$objs"/*.o -o "$OUT"
