// Building blocks of the Hopper family's kernels (sm_90a): 128-byte-swizzled shared-memory tiles, shared-memory
// matrix descriptors for `wgmma`, 16-byte asynchronous copies with zero fill, the multi-stage main loop, and a
// fast 32-bit division for index decoding.
//
// Shared-memory tile format (the only one used): rows of 128 bytes, eight rows to a 1024-byte swizzle atom, the
// 16-byte chunk j of row r stored at chunk (j ^ (r % 8)). Read as a K-major operand, a row is one M (or N) index
// and holds 128 bytes of K; read as an MN-major operand, a row is one K index and holds 64 (16-bit) M/N values.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "wgmma_ops.cuh"

namespace jaxconv3d {
namespace hopper {

using i64 = long long;

constexpr int kThreads = 256;  // two consumer warpgroups; every thread also issues loads
constexpr int kRowBytes = 128;

// Byte offset of chunk `j` of row `r` inside a swizzled tile.
__device__ __forceinline__ uint32_t swz(int r, int j) { return uint32_t(r) * 128u + (uint32_t((j ^ (r & 7))) << 4); }

// The kernel's dynamic shared memory, from its first 1024-byte boundary (128-byte swizzle atoms need it; every
// launcher asks for 1024 bytes of slack).
__device__ __forceinline__ uint32_t dynamic_smem_base() {
  extern __shared__ unsigned char smem_raw[];
  return (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
}

// A generic pointer to dynamic shared-memory address `addr` that the compiler knows is shared (loads and stores with
// immediate offsets, ordered by the barriers like any other access).
template <typename E>
__device__ __forceinline__ E* shared_ptr(uint32_t addr) {
  extern __shared__ unsigned char smem_raw[];
  return reinterpret_cast<E*>(smem_raw + (addr - uint32_t(__cvta_generic_to_shared(smem_raw))));
}

// Matrix descriptor: 128-byte swizzle, `lbo`/`sbo` in bytes (K-major: LBO unused (1), SBO = 1024 between 8-row
// groups; MN-major: LBO = stride between 64-wide M/N blocks, SBO = 1024 between 8-row K groups).
// `layout`: the descriptor's swizzle field, 1 = 128-byte rows (the family's default), 2 = 64-byte rows.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo, uint32_t layout = 1) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(layout) << 62);
}

// 16-byte copy into shared memory, zero-filled when !valid (L2 only: caching the gather in L1 measured no gain).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// cp.async writes are generic-proxy writes; wgmma reads shared memory through the async proxy.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
#endif
// Keeps the compiler from moving accumulator reads/writes across the asynchronous wgmma boundary.
template <int N> __device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// The same for a register fragment: materialised here, so the compiler neither sinks its computation between the
// wgmmas that read it (ptxas would then inject warpgroup arrives, C7519) nor reuses its registers before the wait.
template <int R, int C> __device__ __forceinline__ void fence_regs(uint32_t (&d)[R][C]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < C; ++j) asm volatile("" : "+r"(d[i][j])::"memory");
}

// floor(n / d) and n % d for 0 <= n < 2^32 and 1 <= d < 2^31 (Granlund-Montgomery round-up multiplier).
struct FastDiv {
  uint64_t mul = 1;
  uint32_t shift = 0, d = 1;
  FastDiv() = default;
  explicit FastDiv(uint32_t div) : d(div) {
    uint32_t l = 0;
    while ((uint64_t(1) << l) < div) ++l;
    shift = 32 + l;
    mul = ((uint64_t(1) << shift) + div - 1) / div;
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return uint32_t((uint64_t(n) * mul) >> shift);
  }
};

// One wgmma k-step for each operand kind. `TA`/`TB` are 1 for MN-major operands (16-bit only).
template <typename T, int BN, int TA, int TB> struct Mma;
template <int BN, int TA, int TB> struct Mma<__nv_bfloat16, BN, TA, TB> {
  static constexpr int kStep = 16;
  __device__ __forceinline__ static void run(float* d, uint64_t a, uint64_t b, int s) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (BN == 128) wgmma_Bf16_n128<TA, TB>(d, a, b, s); else wgmma_Bf16_n64<TA, TB>(d, a, b, s);
#endif
  }
};
template <int BN, int TA, int TB> struct Mma<__half, BN, TA, TB> {
  static constexpr int kStep = 16;
  __device__ __forceinline__ static void run(float* d, uint64_t a, uint64_t b, int s) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (BN == 128) wgmma_F16_n128<TA, TB>(d, a, b, s); else wgmma_F16_n64<TA, TB>(d, a, b, s);
#endif
  }
};
template <int BN> struct Mma<float, BN, 0, 0> {  // tf32: K-major only
  static constexpr int kStep = 8;
  __device__ __forceinline__ static void run(float* d, uint64_t a, uint64_t b, int s) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (BN == 128) wgmma_Tf32_n128(d, a, b, s); else wgmma_Tf32_n64(d, a, b, s);
#endif
  }
};

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

// Stores rows of a consumer's 64 x BN fp32 accumulator block as T (+ bias), where `row_ptr(r)` gives the result
// row of block row r (0..63), or null for rows outside the result. Accumulator element i of a thread is row
// 16*warp + lane/4 + 8*((i/2)%2), column 8*(i/4) + 2*(lane%4) + i%2.
template <typename T, int BN, typename RowPtr>
__device__ __forceinline__ void store_block(const float* acc, int ctid, int n0, int Ng, const T* bias,
                                            RowPtr&& row_ptr) {
  const int lane = ctid & 31, warp = ctid >> 5;
  const bool pairs = (Ng % 2) == 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    T* out = row_ptr(warp * 16 + (lane >> 2) + 8 * h);
    if (!out) continue;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const int o = n0 + nt * 8 + (lane & 3) * 2;
      float v0 = acc[nt * 4 + h * 2], v1 = acc[nt * 4 + h * 2 + 1];
      if (o >= Ng) continue;
      if (bias) {
        v0 += to_float(bias[o]);
        if (o + 1 < Ng) v1 += to_float(bias[o + 1]);
      }
      if (pairs) {
        if constexpr (sizeof(T) == 4) {
          *reinterpret_cast<float2*>(out + o) = make_float2(v0, v1);
        } else {
          T pr[2] = {from_float<T>(v0), from_float<T>(v1)};
          *reinterpret_cast<uint32_t*>(out + o) = *reinterpret_cast<uint32_t*>(pr);
        }
      } else {
        out[o] = from_float<T>(v0);
        if (o + 1 < Ng) out[o + 1] = from_float<T>(v1);
      }
    }
  }
}

// The main loop shared by every kernel of the family. Each K-tile is one stage of `STAGE_BYTES`: the A tile at
// offset 0 and the B tile after it. `prep(kt)` computes per-K-tile metadata (e.g. a row table in shared memory,
// double-buffered by kt % 2); a barrier always separates prep(kt) from load(kt), and prep(kt) runs only after
// load(kt - 2) was issued. `load(kt, stage_addr)` issues this thread's asynchronous copies of K-tile `kt`, in
// order kt = 0, 1, 2, ...; `mma(stage_addr, acc, accumulate)` issues one warpgroup's wgmmas on a landed stage
// (the first K-tile overwrites the accumulators instead of adding to them). Loads run STAGES-2 tiles ahead; one
// wgmma group stays in flight while the next tile is awaited (the stage a load overwrites was read by a wgmma group
// that every warpgroup has retired before the barrier).
struct NoPrep {
  __device__ __forceinline__ void operator()(int) const {}
};

template <int STAGES, int STAGE_BYTES, int NACC, typename Prep, typename Load, typename Mmaf>
__device__ __forceinline__ void mainloop(uint32_t smem, int ktiles, float (&acc)[NACC], Prep&& prep, Load&& load,
                                         Mmaf&& mma) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kPrep = !std::is_same<std::decay_t<Prep>, NoPrep>::value;
  if (kPrep) {
    prep(0);
    __syncthreads();
  }
#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < ktiles) load(s, smem + s * STAGE_BYTES);
    cp_async_commit();
    if (kPrep) {
      prep(s + 1);
      __syncthreads();
    }
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<STAGES - 3>();
    fence_proxy_async();
    __syncthreads();
    const int next = kt + STAGES - 2;
    if (next < ktiles) load(next, smem + (next % STAGES) * STAGE_BYTES);
    cp_async_commit();
    if (kPrep) prep(next + 1);
    wgmma_fence();
    mma(smem + (kt % STAGES) * STAGE_BYTES, acc, kt > 0);
    wgmma_commit();
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  fence_regs(acc);
  cp_async_wait<0>();
  if (ktiles <= 0) {
#pragma unroll
    for (int i = 0; i < NACC; ++i) acc[i] = 0.0f;
  }
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
