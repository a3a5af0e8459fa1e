// Forward and stride-1 grad-input as one implicit GEMM with K-major operands (every dtype, tf32 included):
//   rows (M)    = output positions (n, q0, q1, q2) of the NDHWC result, 128 per block (64 per warpgroup);
//   columns (N) = result channels, BN per block;
//   K           = (tap, source channel), one tap and 128 bytes of channels per K-tile.
// A row of the A tile is the source pixel that tap (j0, j1, j2) of output position q reads:
//   source coordinate = q * mstride + base + j * jstep   (forward: stride, -pad_lo, dilation;
//                                                          grad-input, stride 1: 1, +pad_lo, -dilation),
// zero-filled outside the source. The B tile holds weights [N][taps][Cs] (forward: w ODHWI; grad-input: the
// transposed filter wT[c][tap][o] built in the workspace).
#pragma once

#include "pipeline.cuh"

namespace jaxconv3d {
namespace hopper {

struct KMajorArgs {
  const void* src;   // NDHWC source activations, channels Cs
  const void* wgt;   // [Ng][taps][Cs]
  const void* bias;  // [Ng] or null
  void* dst;         // NDHWC result [M][Ng]
  i64 M;             // batch * out[0] * out[1] * out[2]
  int Ng, Cs;
  int out[3], src_ext[3], mstride[3], base[3], jstep[3], k[3];
  int cblocks, ktiles;  // channel blocks per tap, taps * cblocks
};

template <typename T, int BN>
struct KMajorCfg {
  static constexpr int kEpc = 16 / sizeof(T);      // elements per 16-byte chunk
  static constexpr int kBK = 128 / sizeof(T);      // elements of K per tile
  static constexpr int kABytes = 128 * kRowBytes;  // 128 rows
  static constexpr int kBBytes = BN * kRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = BN == 128 ? 5 : 6;
  static constexpr int kSmem = kStages * kStageBytes + 1024;  // + alignment slack
};

template <typename T, int BN>
__global__ void __launch_bounds__(kThreads, 1) conv_kmajor_kernel(const __grid_constant__ KMajorArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = KMajorCfg<T, BN>;
  constexpr int EPC = Cfg::kEpc, BK = Cfg::kBK;
  const uint32_t smem = dynamic_smem_base();
  const int tid = threadIdx.x;
  const int chunk = tid & 7;
  const int row0 = tid >> 3;  // rows row0 + 32 * i
  const i64 m0 = i64(blockIdx.x) * 128;
  const int n0 = blockIdx.y * BN;
  const T* src = static_cast<const T*>(a.src);
  const T* wgt = static_cast<const T*>(a.wgt);
  const int taps = a.k[0] * a.k[1] * a.k[2];

  // This thread's four A rows: where their window starts in the source, and whether they exist.
  i64 rowoff[4];
  int rb[4][3];
  bool rvalid[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const i64 m = m0 + row0 + 32 * i;
    rvalid[i] = m < a.M;
    i64 t = rvalid[i] ? m : 0;
    int q[3];
    q[2] = int(t % a.out[2]); t /= a.out[2];
    q[1] = int(t % a.out[1]); t /= a.out[1];
    q[0] = int(t % a.out[0]); t /= a.out[0];
#pragma unroll
    for (int d = 0; d < 3; ++d) rb[i][d] = q[d] * a.mstride[d] + a.base[d];
    rowoff[i] = (((t * a.src_ext[0] + rb[i][0]) * a.src_ext[1] + rb[i][1]) * a.src_ext[2] + rb[i][2]) * i64(a.Cs);
  }
  const uint32_t a_dst = swz(row0, chunk);  // + 32 * 128 * i: row0 + 32i has the same swizzle phase

  // K-tiles are loaded strictly in order (kt = 0, 1, 2, ...), so the tap and channel block advance incrementally.
  int cb = 0, j0 = 0, j1 = 0, j2 = 0, tap = 0;
  auto load = [&](int, uint32_t stage) {
    const int c = cb * BK + chunk * EPC;
    const int s0 = j0 * a.jstep[0], s1 = j1 * a.jstep[1], s2 = j2 * a.jstep[2];
    const bool cval = c < a.Cs;
    const i64 tapoff = ((i64(s0) * a.src_ext[1] + s1) * a.src_ext[2] + s2) * a.Cs + c;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int p0 = rb[i][0] + s0, p1 = rb[i][1] + s1, p2 = rb[i][2] + s2;
      const bool v = rvalid[i] && cval && unsigned(p0) < unsigned(a.src_ext[0]) &&
                     unsigned(p1) < unsigned(a.src_ext[1]) && unsigned(p2) < unsigned(a.src_ext[2]);
      cp_async16(stage + a_dst + 32 * 128 * i, v ? src + rowoff[i] + tapoff : src, v);
    }
#pragma unroll
    for (int i = 0; i < BN / 32; ++i) {
      const int n = n0 + row0 + 32 * i;
      const bool v = cval && n < a.Ng;
      cp_async16(stage + Cfg::kABytes + a_dst + 32 * 128 * i, v ? wgt + (i64(n) * taps + tap) * a.Cs + c : wgt, v);
    }
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
  auto mma = [&](uint32_t stage, float(&acc)[BN / 2], bool accumulate) {
#pragma unroll
    for (int ks = 0; ks < BK / Mma<T, BN, 0, 0>::kStep; ++ks) {
      const uint64_t da = smem_desc(stage + wg * 64 * kRowBytes + ks * 32, 16, 1024);
      const uint64_t db = smem_desc(stage + Cfg::kABytes + ks * 32, 16, 1024);
      Mma<T, BN, 0, 0>::run(acc, da, db, (accumulate || ks > 0) ? 1 : 0);
    }
  };

  float acc[BN / 2];
  mainloop<Cfg::kStages, Cfg::kStageBytes>(smem, a.ktiles, acc, NoPrep{}, load, mma);

  T* dst = static_cast<T*>(a.dst);
  store_block<T, BN>(acc, tid & 127, n0, a.Ng, static_cast<const T*>(a.bias), [&](int r) -> T* {
    const i64 m = m0 + wg * 64 + r;
    return m < a.M ? dst + m * a.Ng : nullptr;
  });
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
