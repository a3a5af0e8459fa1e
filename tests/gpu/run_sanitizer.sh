#!/usr/bin/env bash
# Builds kernel_check and runs compute-sanitizer memcheck and racecheck over `kernel_check --small`.
# Exits non-zero if the build fails, a check fails, or the sanitizer reports any error / hazard.
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${BIN:-/tmp/kernel_check_san}"
NVCC="${NVCC:-nvcc}"
CS="${COMPUTE_SANITIZER:-compute-sanitizer}"
echo "building $BIN"
NVCC="$NVCC" "$ROOT/tests/gpu/build_kernel_check.sh" "$BIN" -lineinfo || { echo "build failed"; exit 1; }
status=0
run_tool() {
  local tool="$1" log="/tmp/sanitizer_$1.log"
  "$CS" --tool "$tool" --error-exitcode 99 "$BIN" --small >"$log" 2>&1
  local rc=$?
  echo "=== $tool (exit $rc) ==="
  grep -E "kernel_check:|ERROR SUMMARY|RACECHECK SUMMARY|hazard|Error|error" "$log" | tail -n 20
  if [ $rc -ne 0 ]; then status=1; fi
  if grep -qE "ERROR SUMMARY: [1-9]|RACECHECK SUMMARY: [1-9]|[1-9][0-9]* hazards? displayed" "$log"; then status=1; fi
}
run_tool memcheck
run_tool racecheck
if [ $status -eq 0 ]; then echo "sanitizer: clean"; else echo "sanitizer: FAILED"; fi
exit $status
