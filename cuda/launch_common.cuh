// Host helpers shared by the CUDA families' launchers (hopper, stencil, sm80): per-device one-time kernel set-up,
// resident blocks and the SM count (asked of the runtime once per device), dependent launches, and the launch check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "conv_problem.h"

namespace jaxconv3d {

// "" after a good launch; else what failed and the runtime's reason.
inline std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return "";
  return std::string("jaxconv3d cuda: ") + what + " launch failed: " + cudaGetErrorString(e);
}

// Attribute `attr` of the current device, asked of the runtime once per device (`cache`: the caller's, a slot a
// device; only positive answers are kept); `fallback` where the runtime cannot say.
inline int device_attribute(cudaDeviceAttr attr, std::atomic<int> (&cache)[64], int fallback) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return fallback;
  if (dev < 64 && cache[dev].load() > 0) return cache[dev].load();
  int v = 0;
  if (cudaDeviceGetAttribute(&v, attr, dev) != cudaSuccess || v <= 0) return fallback;
  if (dev < 64) cache[dev].store(v);
  return v;
}

// Whether the current device takes programmatic dependent launches (compute capability 9.0 and up; false where the
// runtime cannot say). Asked here, not of cuda_device_cc, so that a family's sources link on their own (the
// standalone checkers).
inline bool dependent_launches() {
  static std::atomic<int> cache[64];
  return device_attribute(cudaDevAttrComputeCapabilityMajor, cache, 0) >= 9;
}

// Launches `kernel` as a programmatic dependent of the kernel before it on `st` (compute capability 9.0 and up): its
// blocks may be scheduled while that kernel drains, so the gap between the two shrinks to the wait. The kernel must
// call pdl_wait() (device_common.cuh) before its first global-memory access. Older devices, and any device while
// JAXCONV3D_NO_PDL is set (read at every launch: a switch for A/B runs and bisection), get an ordinary launch.
template <typename... P, typename... A>
cudaError_t launch_dependent(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cfg.attrs = attr;
  cfg.numAttrs = dependent_launches() && std::getenv("JAXCONV3D_NO_PDL") == nullptr ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

// f(T{}) for t's element type among float32, bfloat16 and float16 (a launcher's dtype switch); `unsupported` for any
// other dtype.
template <typename F>
std::string with_float_dtype(DType t, F&& f, const char* unsupported) {
  switch (t) {
    case DType::kF32: return f(float{});
    case DType::kBF16: return f(__nv_bfloat16{});
    case DType::kF16: return f(__half{});
    default: return unsupported;
  }
}

// Raises `kernel`'s dynamic shared-memory limit to `bytes` once per device (`done`: the caller's per-kernel flags,
// one bit per device), so calls after the first cost no driver round trip.
template <typename K>
cudaError_t allow_smem(K kernel, int bytes, std::atomic<uint64_t>& done) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = 64;
  const uint64_t bit = dev < 64 ? (uint64_t(1) << dev) : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess && bit) done.fetch_or(bit, std::memory_order_acq_rel);
  return e;
}

// Blocks of `kernel` (at `threads` threads and `smem` dynamic bytes) resident on one multiprocessor of the current
// device, asked of the runtime once per device and `slot` (the caller's index of each smem size it launches with),
// so a persistent grid is sized without a runtime query per call; 0 where the runtime cannot say.
template <typename K, size_t SLOTS>
int resident_blocks(K kernel, int threads, int smem, size_t slot, std::atomic<int> (&cache)[64][SLOTS]) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  const bool cached = dev < 64 && slot < SLOTS;
  if (cached && cache[dev][slot].load(std::memory_order_acquire) > 0) return cache[dev][slot].load();
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem) != cudaSuccess) return 0;
  if (cached && blocks > 0) cache[dev][slot].store(blocks, std::memory_order_release);
  return blocks;
}

// Multiprocessors of the current device (cached per device; 132 if it cannot be read): the persistent grids' size.
inline int sm_count() {
  static std::atomic<int> cache[64];
  return device_attribute(cudaDevAttrMultiProcessorCount, cache, 132);
}

}  // namespace jaxconv3d
