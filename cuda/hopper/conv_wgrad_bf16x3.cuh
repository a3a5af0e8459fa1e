// TF32-mode grad-weight from bfloat16 parts ("bf16x3"): the TMA split-K GEMM of conv_wgrad.cuh on the 16-bit
// tensor-core path, with no shared-memory transpose.
//
// TF32 wgmma reads shared-memory operands K-major only, and grad-weight's K (output positions) is the outer axis of
// both NDHWC operands, so the TF32 kernel (conv_wgrad_tf32.cuh) transposes every stage through shared memory and
// runs at ~100 TFLOP/s. 16-bit wgmma reads MN-major operands as they land. So each float32 operand is split once,
// before the GEMM (`split_bf16_kernel`), into hi = bf16(v) and lo = bf16(v - hi) (both rounded to nearest: v = hi +
// lo to about 2^-17 relative, finer than TF32's 2^-11), and each K-tile accumulates, in this order,
//     x_hi * dy_hi + x_hi * dy_lo + x_lo * dy_hi
// into one fp32 accumulator (the dropped x_lo * dy_lo is ~2^-18 of the product). A stage holds both parts of both
// operands: [x_hi | dy_hi | x_lo | dy_lo], each laid out as the 16-bit kernel's A and B tiles (64 channels per
// 128-byte row, C a multiple of 64). Split ranges and the fixed-order reduction are the 16-bit kernel's.
#pragma once

#include "conv_wgrad.cuh"

namespace jaxconv3d {
namespace hopper {

template <int BN>
struct WgradBf16x3Cfg {
  static constexpr int kPartBytes = WgradCfg<BN>::kStageBytes;  // one part (hi or lo) of A and B
  static constexpr int kStageBytes = 2 * kPartBytes;
  static constexpr int kStages = BN == 128 ? 3 : 4;
  static constexpr int kSmem = kStages * kStageBytes + 1024;
};

template <int BN>
struct WgradBf16x3Op : WgradTmaWalk<BN, 64> {
  using Walk = WgradTmaWalk<BN, 64>;
  using Cfg = WgradBf16x3Cfg<BN>;
  static constexpr bool kStageFreeAfterMma = false;
  static constexpr bool kPingPong = false;
  static_assert(Walk::kABytes == WgradCfg<BN>::kABytes, "the walk's A tile is the 16-bit kernel's");
  const CUtensorMap* tmXlo;
  const CUtensorMap* tmDylo;

  __device__ __forceinline__ void issue(typename Walk::Cursor& c, uint32_t stage, uint32_t bar) const {
    this->load(c, stage, bar, this->tmX, this->tmDy);
    this->load(c, stage + Cfg::kPartBytes, bar, tmXlo, tmDylo);
    this->advance(c);
  }

  __device__ __forceinline__ void mma(uint32_t stage, float* acc, int consumer, bool accumulate, int) const {
    constexpr int kA = WgradCfg<BN>::kABytes;
#pragma unroll
    for (int ks = 0; ks < 64 / 16; ++ks) {
      const uint32_t a_off = consumer * 64 * kRowBytes + ks * 2048, b_off = kA + ks * 2048;
      const uint64_t a_hi = smem_desc(stage + a_off, 64 * kRowBytes, 1024);
      const uint64_t b_hi = smem_desc(stage + b_off, 64 * kRowBytes, 1024);
      const uint64_t a_lo = smem_desc(stage + Cfg::kPartBytes + a_off, 64 * kRowBytes, 1024);
      const uint64_t b_lo = smem_desc(stage + Cfg::kPartBytes + b_off, 64 * kRowBytes, 1024);
      Mma<__nv_bfloat16, BN, 1, 1>::run(acc, a_hi, b_hi, (accumulate || ks > 0) ? 1 : 0);
      Mma<__nv_bfloat16, BN, 1, 1>::run(acc, a_hi, b_lo, 1);
      Mma<__nv_bfloat16, BN, 1, 1>::run(acc, a_lo, b_hi, 1);
    }
  }
};

template <int BN>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    conv_wgrad_bf16x3_kernel(const __grid_constant__ CUtensorMap tmXhi, const __grid_constant__ CUtensorMap tmDyhi,
                             const __grid_constant__ CUtensorMap tmXlo, const __grid_constant__ CUtensorMap tmDylo,
                             const __grid_constant__ WgradTmaArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = WgradBf16x3Cfg<BN>;
  const uint32_t smem = dynamic_smem_base();
  tma_prefetch_maps(&tmXhi, &tmDyhi);
  tma_prefetch_maps(&tmXlo, &tmDylo);
  const WgradBf16x3Op<BN> op{{&tmXhi, &tmDyhi, &a}, &tmXlo, &tmDylo};
  persistent_gemm<Cfg::kStages, Cfg::kStageBytes, BN / 2>(op, smem);
#endif
}

// hi[i] = bf16(v[i]), lo[i] = bf16(v[i] - hi[i]) (both round to nearest even; lo = 0 where hi is not finite, so an
// infinite input gives the infinite product TF32 gives, not inf - inf).
__global__ void __launch_bounds__(256) split_bf16_kernel(const float* __restrict__ v, __nv_bfloat16* __restrict__ hi,
                                                         __nv_bfloat16* __restrict__ lo, i64 n) {
  const i64 stride = i64(gridDim.x) * blockDim.x;
  for (i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float f = v[i];
    const __nv_bfloat16 h = __float2bfloat16_rn(f);
    const float hf = __bfloat162float(h);
    hi[i] = h;
    lo[i] = __float2bfloat16_rn(isfinite(hf) ? f - hf : 0.0f);
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
