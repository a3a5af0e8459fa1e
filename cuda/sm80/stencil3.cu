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

namespace jaxconv3d {
namespace sm80 {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 4 : 5) stencil3_kernel(const Stencil3Args a) {
  __shared__ __align__(16) float tile[kTZ * kTY * kRow];
  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);

  i64 b = blockIdx.x;
  const int bx = int(b % a.ntile[2]); b /= a.ntile[2];
  const int by = int(b % a.ntile[1]); b /= a.ntile[1];
  const int bz = int(b % a.ntile[0]); b /= a.ntile[0];
  const int oc = int(b % a.OC);
  const i64 n = b / a.OC;
  const int oz0 = bz * kZ, oy0 = by * kY, ox0 = bx * kX;
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
  const bool whole = a.vec && ox + 4 <= a.od[2];  // four outputs in one aligned store
#pragma unroll
  for (int z = 0; z < kZ; ++z) {
    if (oz0 + z >= a.od[0]) break;
    T* o = obase + (oz0 + z) * oHW;
    __align__(16) T v[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = cvt<T>(acc[z][e] + bv);
    if (whole) {
      using Vec = std::conditional_t<sizeof(T) == 4, uint4, uint2>;  // four outputs
      *reinterpret_cast<Vec*>(o) = *reinterpret_cast<const Vec*>(v);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (ox + e < a.od[2]) o[e] = v[e];
    }
  }
}

template <typename T>
std::string stencil3_impl(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w,
                          const void* bias, void* out, cudaStream_t st) {
  Stencil3Args s;
  int64_t blocks = 0;
  if (!stencil3_plan(p, dgrad, t, &s, &blocks))
    return "jaxconv3d cuda: the 3x3x3 depthwise stencil does not apply to this problem";
  if (blocks == 0) return "";
  s.src = src; s.wt = w; s.bias = bias; s.out = out;
  s.vec = s.od[2] % 4 == 0 && reinterpret_cast<uintptr_t>(out) % (4 * sizeof(T)) == 0;
  stencil3_kernel<T><<<unsigned(blocks), kThreads, 0, st>>>(s);
  return launch_error(dgrad ? "depthwise 3x3x3 dgrad" : "depthwise 3x3x3 fwd");
}

}  // namespace

std::string stencil3(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                     void* out, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return stencil3_impl<float>(p, t, dgrad, src, w, bias, out, st);
    case DType::kBF16: return stencil3_impl<__nv_bfloat16>(p, t, dgrad, src, w, bias, out, st);
    case DType::kF16: return stencil3_impl<__half>(p, t, dgrad, src, w, bias, out, st);
    default: return "jaxconv3d cuda: the 3x3x3 depthwise stencil takes float32, bfloat16 and float16";
  }
}

}  // namespace sm80
}  // namespace jaxconv3d
