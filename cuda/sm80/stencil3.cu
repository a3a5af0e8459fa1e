// sm80 depthwise 3x3x3 stencil (stride 1, dilation 1, one input channel per group): forward, and grad-input as the
// same stencil run on dy with the filter flipped. The general stencil (stencil.cu) spends ~10 instructions per
// multiply-add on index arithmetic and one-tap-at-a-time shared-memory reads; here everything is compile-time:
//   block   = one (sample, output channel) and an 8 x 16 x 32 (D, H, W) brick of outputs, 128 threads;
//   tile    = the brick's source with its halo, 10 x 18 x 34 values in shared memory (rows of 36: 16-byte aligned),
//             filled with the flattened index so every lane loads (zeros outside the source: the padding);
//   thread  = 8 outputs along D x 4 along W in registers, the 27 weights in registers: for each H tap and source
//             row it reads 6 values (two vector loads) and feeds the 3 D taps x 3 W taps x 4 outputs that use them.
// A grad-input of a channel multiplier (Og > 1) sums its Og dy channels in turn into the same registers. Fixed
// summation order (source channel, H tap, source row, D tap, W tap): deterministic.
#include "sm80/sm80.h"
#include "sm80/stencil3.cuh"
#include "sm80/stencil3_launch.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 4 : 5) stencil3_kernel(const Stencil3Args a) {
  __shared__ __align__(16) float tile[kTZ * kTY * kRow];
  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);

  const Stencil3Block blk = stencil3_block<kZ, kY, kX>(a);
  const i64 n = blk.n;
  const int oc = blk.oc, oz0 = blk.oz0, oy0 = blk.oy0, ox0 = blk.ox0;
  const int tid = threadIdx.x, ty = tid / (kX / 4), tx = tid % (kX / 4);
  const int s0 = oz0 - a.P[0], s1 = oy0 - a.P[1], s2 = ox0 - a.P[2];  // the tile's first source position
  const i64 sS = i64(a.sd[1]) * a.sd[2] * a.sd[0];

  float acc[kZ][4];
#pragma unroll
  for (int z = 0; z < kZ; ++z)
#pragma unroll
    for (int v = 0; v < 4; ++v) acc[z][v] = 0.0f;

  const int nsrc = a.dgrad ? a.Og : 1;
  for (int u = 0; u < nsrc; ++u) {
    // forward: output channel oc reads input channel oc / Og with its own filter; grad-input: dx channel oc sums
    // dy channels oc * Og + u, each through its filter flipped
    const int sc = a.dgrad ? oc * a.Og + u : oc / a.Og;
    const int wrow = a.dgrad ? sc : oc;
    if (u > 0) __syncthreads();  // the last source's tile is still being read
    fill_tile3(tile, src + (n * a.SC + sc) * sS, s0, s1, s2, a.sd, tid);
    float w[27];  // after the fill: fewer registers live across it
#pragma unroll
    for (int t = 0; t < 27; ++t) w[t] = cvt<float>(wt[i64(wrow) * 27 + (a.dgrad ? 26 - t : t)]);
    __syncthreads();
    for_each_tap3(tile, ty, tx, [&](int z, int tap, const float (&s)[6], int kx) {
#pragma unroll
      for (int v = 0; v < 4; ++v) acc[z][v] = fmaf(w[tap], s[v + kx], acc[z][v]);
    });
  }

  const int oy = oy0 + ty, ox = ox0 + 4 * tx;
  if (oy >= a.od[1] || ox >= a.od[2]) return;
  const T* bias = static_cast<const T*>(a.bias);
  const float bv = bias != nullptr ? cvt<float>(bias[oc]) : 0.0f;
  const i64 oHW = i64(a.od[1]) * a.od[2];
  T* obase = out + (n * a.OC + oc) * (oHW * a.od[0]) + i64(oy) * a.od[2] + ox;
#pragma unroll
  for (int z = 0; z < kZ; ++z) {
    if (oz0 + z >= a.od[0]) break;
    store_four(obase + (oz0 + z) * oHW, acc[z], bv, a.vec, ox, a.od[2]);
  }
}

}  // namespace

std::string stencil3(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                     void* out, void* stream) {
  return for_stencil3_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    return launch_stencil3<T>(stencil3_plan, stencil3_kernel<T>, kThreads, p, t, dgrad, src, w, bias, out, stream,
                              dgrad ? "3x3x3 depthwise stencil (grad-input)" : "3x3x3 depthwise stencil (forward)");
  });
}

}  // namespace sm80
}  // namespace jaxconv3d
