// TF32 grad-weight: the TMA split-K GEMM of conv_wgrad.cuh, for float32 operands.
//
// TF32 wgmma reads shared-memory operands K-major only, and grad-weight's K (output positions) is the outer axis
// of both NDHWC operands: TMA lands them MN-major (a row per position, 32 channels per 128-byte row), exactly as
// for the 16-bit kernel. After a stage lands, the two consumer warpgroups transpose it into one K-major copy
// (rows = (tap, channel) pairs or output channels, 32 positions per 128-byte row, two 32-position halves),
// rounding each value to TF32 on the way (round to nearest, cvt.rna), then both run their wgmmas on that copy.
//   rows (M)    = 128 (tap, channel) pairs: four TMA boxes of x, each one tap x 32 channels (C % 32 == 0);
//   columns (N) = BN output channels: BN / 32 boxes of dy;
//   K           = a brick of 64 output positions per K-tile, the K-tiles split into contiguous ranges whose fp32
//                 partial sums `wgrad_reduce_kernel` adds in split order (deterministic).
// One K-major copy is shared by both consumers, so each K-tile is bracketed by two named barriers: the copy is
// free (both retired the previous K-tile's wgmmas) before it is overwritten, and complete before it is read.
#pragma once

#include "conv_wgrad.cuh"

namespace jaxconv3d {
namespace hopper {

template <int BN>
struct WgradTf32Cfg {
  static constexpr int kBox = 64 * kRowBytes;             // one box: 64 positions x 32 channels
  static constexpr int kABytes = 4 * kBox;                // 128 (tap, channel) pairs
  static constexpr int kBBytes = (BN / 32) * kBox;        // BN output channels
  static constexpr int kStageBytes = kABytes + kBBytes;   // MN-major, as TMA lands it
  static constexpr int kStages = BN == 128 ? 2 : 3;
  static constexpr int kHalfA = 128 * kRowBytes;          // K-major A: [2 halves][128 rows][32 positions]
  static constexpr int kHalfB = BN * kRowBytes;           // K-major B: [2 halves][BN rows][32 positions]
  static constexpr int kCopyBytes = 2 * kHalfA + 2 * kHalfB;
  static constexpr int kSmem = kStages * kStageBytes + kCopyBytes + 1024;
};

template <int BN>
struct WgradTf32Op : WgradTmaWalk<BN, 32> {
  using Cfg = WgradTf32Cfg<BN>;
  static constexpr bool kStageFreeAfterMma = true;
  static constexpr bool kPingPong = false;  // both consumers share each K-tile's transposed copy
  static_assert(WgradTmaWalk<BN, 32>::kABytes == Cfg::kABytes, "the walk's A tile is the stage's");
  uint32_t copy;  // shared-memory address of the K-major copy

  // Box-major source (`boxes` boxes of [64 positions][32 channels], 128B-swizzled rows) -> K-major destination
  // ([2 halves][boxes * 32 rows][32 positions], 128B-swizzled rows), values rounded to TF32. A warp takes 32
  // consecutive positions of one 16-byte channel chunk: its reads hit 8 distinct bank groups and each of its four
  // stores fills one destination row, so neither side conflicts.
  __device__ __forceinline__ static void transpose(uint32_t src, uint32_t dst, int boxes, int t) {
    const int rows = boxes * 32;
    for (int i = t; i < boxes * 512; i += 256) {
      const int p = i & 63, j = (i >> 6) & 7, b = i >> 9;
      float v[4];
      asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                   : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3]) : "r"(src + b * Cfg::kBox + swz(p, j)));
      const int k = p & 31;
      const uint32_t half = dst + (p >> 5) * rows * kRowBytes;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int m = b * 32 + 4 * j + e;
        uint32_t r;
        asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v[e]));
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(half + swz(m, k >> 2) + (k & 3) * 4), "r"(r) : "memory");
      }
    }
  }

  __device__ __forceinline__ void mma(uint32_t stage, float* acc, int consumer, bool accumulate, int) const {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    const int t = threadIdx.x - 128;  // 0..255 over both consumers
    const uint32_t ka = copy, kb = copy + 2 * Cfg::kHalfA;
    asm volatile("bar.sync 1, 256;\n" ::: "memory");  // both consumers retired the wgmmas reading the copy
    transpose(stage, ka, 4, t);
    transpose(stage + Cfg::kABytes, kb, BN / 32, t);
    fence_proxy_async();
    asm volatile("bar.sync 1, 256;\n" ::: "memory");  // the copy is complete
    wgmma_fence();
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        const uint64_t da = smem_desc(ka + h * Cfg::kHalfA + consumer * 64 * kRowBytes + ks * 32, 16, 1024);
        const uint64_t db = smem_desc(kb + h * Cfg::kHalfB + ks * 32, 16, 1024);
        Mma<float, BN, 0, 0>::run(acc, da, db, (accumulate || h > 0 || ks > 0) ? 1 : 0);
      }
    wgmma_commit();
    wgmma_wait<0>();
#endif
  }
};

template <int BN>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    conv_wgrad_tf32_kernel(const __grid_constant__ CUtensorMap tmX, const __grid_constant__ CUtensorMap tmDy,
                           const __grid_constant__ WgradTmaArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = WgradTf32Cfg<BN>;
  const uint32_t smem = dynamic_smem_base();
  tma_prefetch_maps(&tmX, &tmDy);
  const WgradTf32Op<BN> op{{&tmX, &tmDy, &a}, smem + Cfg::kStages * Cfg::kStageBytes};
  persistent_gemm<Cfg::kStages, Cfg::kStageBytes, BN / 2>(op, smem);
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
