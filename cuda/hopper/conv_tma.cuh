// Forward and stride-1 grad-input as an implicit GEMM fed by TMA (the family's main path):
//   rows (M)    = a brick of 128 result positions, bw (W) x bh (H) x bd (D), powers of two; 64 per warpgroup;
//   columns (N) = result channels, BN per block;
//   K           = (tap, 128 bytes of source channels) per K-tile.
// For K-tile (tap j, channel block cb) one 5-D TMA box copies the source pixels the brick reads at that tap:
// start = q_origin * mstride + base + j * jstep per axis, traversal step = mstride, so padding, stride and
// dilation all become box coordinates, and everything outside the source arrives as zeros. A second (3-D) box
// copies the filter rows [n0, n0 + BN) of tap j. Both land 128-byte-swizzled; one thread issues them, an mbarrier
// per stage says when they have landed, and a block barrier per K-tile tells the issuing thread that the stage it
// refills has been retired by both warpgroups' wgmmas.
#pragma once

#include "pipeline.cuh"
#include "tma.cuh"

namespace jaxconv3d {
namespace hopper {

struct TmaArgs {
  const void* bias;  // [Ng] or null
  void* dst;         // NDHWC result [N][out0][out1][out2][Ng]
  int Ng;
  int out[3];                      // result extents (D, H, W)
  int bw_log, bh_log;              // brick: bw = 2^bw_log along W, bh = 2^bh_log along H, bd = 128 / (bw * bh)
  int tiles[3];                    // bricks along D, H, W
  int mstride[3], base[3], jstep[3], k[3];
  int cblocks, ktiles;
};

template <typename T, int BN>
struct TmaCfg {
  static constexpr int kBK = 128 / sizeof(T);
  static constexpr int kABytes = 128 * kRowBytes;
  static constexpr int kBBytes = BN * kRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = BN == 128 ? 6 : 8;
  static constexpr int kSmem = kStages * kStageBytes + 1024;
};

template <typename T, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    conv_tma_kernel(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB,
                    const __grid_constant__ TmaArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = TmaCfg<T, BN>;
  constexpr int S = Cfg::kStages;
  extern __shared__ unsigned char smem_raw[];
  __shared__ alignas(8) uint64_t bars[S];
  const uint32_t smem = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t bar0 = uint32_t(__cvta_generic_to_shared(bars));
  const int tid = threadIdx.x;

  // Which brick of which image.
  int bx = blockIdx.x;
  const int tw = bx % a.tiles[2]; bx /= a.tiles[2];
  const int th = bx % a.tiles[1]; bx /= a.tiles[1];
  const int td = bx % a.tiles[0];
  const int n = bx / a.tiles[0];
  const int bw = 1 << a.bw_log, bh = 1 << a.bh_log, bd = 128 >> (a.bw_log + a.bh_log);
  const int q0 = td * bd, q1 = th * bh, q2 = tw * bw;
  const int n0 = blockIdx.y * BN;

  if (tid == 0) {
    for (int s = 0; s < S; ++s) mbar_init(bar0 + 8 * s, 1);
    mbar_fence_init();
    tma_prefetch_map(&tmA);
    tma_prefetch_map(&tmB);
  }
  __syncthreads();

  // Issuing thread's incremental K-tile state.
  int cb = 0, j0 = 0, j1 = 0, j2 = 0, tap = 0;
  auto issue = [&](int kt) {
    const int s = kt % S;
    const uint32_t stage = smem + s * Cfg::kStageBytes, bar = bar0 + 8 * s;
    mbar_expect_tx(bar, Cfg::kStageBytes);
    tma_load_5d(stage, &tmA, bar, cb * Cfg::kBK, q2 * a.mstride[2] + a.base[2] + j2 * a.jstep[2],
                q1 * a.mstride[1] + a.base[1] + j1 * a.jstep[1], q0 * a.mstride[0] + a.base[0] + j0 * a.jstep[0], n);
    tma_load_3d(stage + Cfg::kABytes, &tmB, bar, cb * Cfg::kBK, tap, n0);
    if (++cb == a.cblocks) {
      cb = 0;
      ++tap;
      if (++j2 == a.k[2]) {
        j2 = 0;
        if (++j1 == a.k[1]) { j1 = 0; ++j0; }
      }
    }
  };

  const int wg = tid >> 7;
  float acc[BN / 2];
  if (tid == 0)
    for (int kt = 0; kt < S - 2 && kt < a.ktiles; ++kt) issue(kt);
  for (int kt = 0; kt < a.ktiles; ++kt) {
    mbar_wait(bar0 + 8 * (kt % S), (kt / S) & 1);
    __syncthreads();
    if (tid == 0 && kt + S - 2 < a.ktiles) issue(kt + S - 2);
    const uint32_t stage = smem + (kt % S) * Cfg::kStageBytes;
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < Cfg::kBK / Mma<T, BN, 0, 0>::kStep; ++ks) {
      const uint64_t da = smem_desc(stage + wg * 64 * kRowBytes + ks * 32, 16, 1024);
      const uint64_t db = smem_desc(stage + Cfg::kABytes + ks * 32, 16, 1024);
      Mma<T, BN, 0, 0>::run(acc, da, db, (kt > 0 || ks > 0) ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  fence_regs(acc);
  if (a.ktiles <= 0) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
  }

  // Epilogue: accumulator element i of this thread is row 16*warp + lane/4 + 8*((i/2)%2), column
  // 8*(i/4) + 2*(lane%4) + i%2 of the warpgroup's 64 x BN block; row r of the block is brick position
  // (r % bw, (r / bw) % bh, r / (bw * bh)).
  T* dst = static_cast<T*>(a.dst);
  const T* bias = static_cast<const T*>(a.bias);
  const int lane = tid & 31, warp = (tid >> 5) & 3;
  const bool pairs = (a.Ng % 2) == 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wg * 64 + warp * 16 + (lane >> 2) + 8 * h;
    const int p2 = q2 + (r & (bw - 1)), p1 = q1 + ((r >> a.bw_log) & (bh - 1)), p0 = q0 + (r >> (a.bw_log + a.bh_log));
    if (p0 >= a.out[0] || p1 >= a.out[1] || p2 >= a.out[2]) continue;
    T* out = dst + (((i64(n) * a.out[0] + p0) * a.out[1] + p1) * a.out[2] + p2) * a.Ng;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const int o = n0 + nt * 8 + (lane & 3) * 2;
      float v0 = acc[nt * 4 + h * 2], v1 = acc[nt * 4 + h * 2 + 1];
      if (o >= a.Ng) continue;
      if (bias) {
        v0 += to_float(bias[o]);
        if (o + 1 < a.Ng) v1 += to_float(bias[o + 1]);
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
        if (o + 1 < a.Ng) out[o + 1] = from_float<T>(v1);
      }
    }
  }
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
