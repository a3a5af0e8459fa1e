#!/usr/bin/env bash
# The Hopper family on its own (sm_90 GPU): tests/gpu/hopper_check.cu against float64 on fresh random data with
# NaN-poisoned outputs (every dtype, both load paths), then compute-sanitizer memcheck and racecheck over the bf16, tf32
# and float32 (3xTF32, which writes shared memory from the consumers) configurations, then per-kernel times.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin="${TMPDIR:-/tmp}/jaxconv3d_hopper_check"
nvcc -std=c++17 -O2 -lineinfo --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Icuda \
  tests/gpu/hopper_check.cu cuda/hopper/*.cu cuda/hopper/hopper_rules.cc -o "$bin" || exit 1
status=0
"$bin" | tail -3 || status=1
JAXCONV3D_HOPPER_NO_TMA=1 "$bin" | tail -1 || status=1
for only in bf16 f32 tf32; do
  HOPPER_ONLY=$only timeout 300 compute-sanitizer --tool memcheck "$bin" 2>&1 | tail -2 || status=1
  HOPPER_ONLY=$only timeout 300 compute-sanitizer --tool racecheck "$bin" 2>&1 | tail -2 || status=1
done
"$bin" --bench
exit $status
