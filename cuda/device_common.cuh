// Device helpers any CUDA family may use (sm80, stencil): element conversions and cp.async with zero fill.
// Everything is inline or templated.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

namespace jaxconv3d {

// S -> D through float for the 16-bit types; to a 16-bit type: rounded to nearest even.
template <typename D, typename S>
__device__ __forceinline__ D cvt(S v) {
  if constexpr (std::is_same<D, S>::value) {
    return v;
  } else if constexpr (std::is_same<S, __nv_bfloat16>::value) {
    return static_cast<D>(__bfloat162float(v));
  } else if constexpr (std::is_same<S, __half>::value) {
    return static_cast<D>(__half2float(v));
  } else if constexpr (std::is_same<D, __nv_bfloat16>::value) {
    return __float2bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_same<D, __half>::value) {
    return __float2half(static_cast<float>(v));
  } else {
    return static_cast<D>(v);
  }
}

template <typename T> __device__ __forceinline__ T zero_of() { return cvt<T>(0.0f); }

// BYTES-byte cp.async (sm_80+; 4, 8 or 16) from global gsrc to the shared-space address sa; where !ok nothing is read
// and BYTES zero bytes are written (gsrc must still be a valid address). Kernels that compute each lane's shared
// addresses once call this form; cp_async takes a generic pointer.
template <int BYTES>
__device__ __forceinline__ void cp_async_shared(unsigned sa, const void* gsrc, bool ok) {
  const int n = ok ? BYTES : 0;
  if constexpr (BYTES == 16)  // .cg: L2 only (16-byte copies may bypass L1)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gsrc), "r"(n) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(sa), "l"(gsrc), "n"(BYTES), "r"(n)
                 : "memory");
}
template <int BYTES>
__device__ __forceinline__ void cp_async(void* sdst, const void* gsrc, bool ok) {
  cp_async_shared<BYTES>(static_cast<unsigned>(__cvta_generic_to_shared(sdst)), gsrc, ok);
}
// 4-byte cp.async with zero fill: copies `bytes` (4 or 0) bytes from gsrc and zero-fills the rest.
__device__ __forceinline__ void cp_async4(void* sdst, const void* gsrc, int bytes) {
  cp_async<4>(sdst, gsrc, bytes != 0);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Programmatic dependent launch (launch_dependent in launch_common.cuh; compute capability 9.0 and up, no-ops below
// and in a kernel launched the ordinary way). pdl_wait(): returns once the kernels before this one on the stream
// have completed and their writes are visible; a kernel launched by launch_dependent calls it before its first
// global-memory access (read or write). pdl_release(): this block's share of the work is done, so the next kernel on
// the stream may be scheduled (it still waits for this one to complete before touching memory).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace jaxconv3d
