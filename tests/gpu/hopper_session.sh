#!/usr/bin/env bash
# One GPU session for the Hopper family alone: build the standalone checker, check both load paths (TMA and the
# cp.async gather), time each kernel, profile the unet_64 kernels with ncu. Writes under $OUT.
cd "$(dirname "$0")/../.."
nvcc -std=c++17 -O2 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Icuda tests/gpu/hopper_check.cu \
  cuda/hopper/*.cu cuda/hopper/hopper_rules.cc -o /tmp/hc || exit 1
timeout 200 /tmp/hc > $OUT/check.txt 2>&1; echo "check (tma) rc=$?"; grep -v "^ok" $OUT/check.txt | head -20
JAXCONV3D_HOPPER_NO_TMA=1 timeout 200 /tmp/hc > $OUT/check_gather.txt 2>&1; echo "check (gather) rc=$?"; tail -2 $OUT/check_gather.txt
echo "== tma"; /tmp/hc --bench | tee $OUT/bench.txt
[ -n "$GATHER_BENCH" ] && JAXCONV3D_HOPPER_NO_TMA=1 /tmp/hc --bench | tee $OUT/bench_gather.txt
[ -n "$NCU" ] && timeout 100 ncu --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_tensor_op_hmma.sum -k regex:conv_ --launch-skip 3 --launch-count 1 /tmp/hc --bench unet_64 > $OUT/ncu_fwd.txt 2>&1
[ -n "$NCU" ] && grep -E "Throughput|Duration|Issued|SM Freq|tensor|Pipe" $OUT/ncu_fwd.txt | head
