// The stencil family's kernels (see stencil.h): forward and grad-input of a depthwise 3x3x3 layer (stride 1,
// dilation 1, channel multiplier 1) on NDHWC activations and a (C, 3, 3, 3, 1) filter. Every sum runs in one fixed
// order: deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <type_traits>

#include "stencil/stencil.h"

namespace jaxconv3d {
namespace stencil {
namespace {

using i64 = long long;

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) return __bfloat162float(v);
  else if constexpr (std::is_same<T, __half>::value) return __half2float(v);
  else return v;
}

template <typename T>
__device__ __forceinline__ T from_f(float v) {  // round to nearest even
  if constexpr (std::is_same<T, __nv_bfloat16>::value) return __float2bfloat16(v);
  else if constexpr (std::is_same<T, __half>::value) return __float2half(v);
  else return v;
}

// One stencil launch: output q (per axis), tap t in 0..2 reads source q + t - P with tap weight w[t] (forward) or
// w[2 - t] (grad-input: the filter flipped).
struct Geo {
  int C;
  int sd[3], od[3], P[3];
  int flip;
  int wstrips, hblocks, cgroups, chunks;  // the grid, fastest first, then the batch
};

// A thread: channel c = 32 * group + lane, output row oy = 4 * hblock + warp, outputs ox0 .. ox0 + kRun - 1 of each
// plane of its block's D chunk. Source plane js (0 .. chunk + 1) meets output planes js - 2 .. js (tap kd = js - o);
// output plane js - 2 is stored once source plane js is in. Each output sums its taps in the order (kd, kh, kw);
// the taps come from shared memory (in registers, with the two planes' rows, they spilled).
template <typename T, bool BIAS>
__global__ void __launch_bounds__(kLanes * kRows, 3) depthwise3_kernel(const T* __restrict__ src, const T* __restrict__ w,
                                                                    const T* __restrict__ bias, T* __restrict__ out,
                                                                    const Geo g) {
  unsigned b = blockIdx.x;
  const int ws = int(b % unsigned(g.wstrips));
  b /= unsigned(g.wstrips);
  const int hb = int(b % unsigned(g.hblocks));
  b /= unsigned(g.hblocks);
  const int cg = int(b % unsigned(g.cgroups));
  b /= unsigned(g.cgroups);
  const int chunk = int(b % unsigned(g.chunks));
  const i64 n = i64(b / unsigned(g.chunks));

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = cg * kLanes + lane;
  const bool live = c < g.C && hb * kRows + warp < g.od[1];  // this thread computes (loads, stores)
  const int oy = hb * kRows + warp, ox0 = ws * kRun, oz0 = chunk * kChunk;
  const int zc = min(kChunk, g.od[0] - oz0);
  const int cc = c < g.C ? c : 0;

  __shared__ float s_w[27][kLanes];  // the group's taps (flipped for grad-input), [tap][lane]: no bank conflicts
  for (int i = threadIdx.x; i < 27 * kLanes; i += kLanes * kRows) {
    const int t = i / kLanes, ch = cg * kLanes + i % kLanes;
    s_w[t][i % kLanes] = ch < g.C ? to_f(w[i64(ch) * 27 + (g.flip ? 26 - t : t)]) : 0.0f;
  }
  __syncthreads();
  float bv = 0.0f;
  if constexpr (BIAS) bv = live ? to_f(bias[cc]) : 0.0f;

  const i64 s_h = i64(g.sd[2]) * g.C, s_d = i64(g.sd[1]) * s_h;
  const i64 o_h = i64(g.od[2]) * g.C, o_d = i64(g.od[1]) * o_h;
  const T* sn = src + n * i64(g.sd[0]) * s_d + cc;
  T* on = out + n * i64(g.od[0]) * o_d + cc;

  // acc[j]: output plane js - 2 + j while source plane js is added (tap kd = 2 - j); shifted down after each plane.
  float acc[3][kRun];
#pragma unroll
  for (int j = 0; j < 3; ++j)
#pragma unroll
    for (int r = 0; r < kRun; ++r) acc[j][r] = 0.0f;

  const T* s0 = sn + i64(ox0 - g.P[2]) * g.C;
  // The three source rows of plane js this thread reads (zeros outside the source or past the chunk).
  auto load_plane = [&](int js, float (&v)[3][kRun + 2]) {
    const int sz = oz0 - g.P[0] + js;
    const bool zok = live && js < zc + 2 && unsigned(sz) < unsigned(g.sd[0]);
#pragma unroll
    for (int kh = 0; kh < 3; ++kh) {
      const int sy = oy + kh - g.P[1];
      const bool ok = zok && unsigned(sy) < unsigned(g.sd[1]);
      const T* row = s0 + i64(ok ? sz : 0) * s_d + i64(ok ? sy : 0) * s_h;  // at W position ox0 - P2
#pragma unroll
      for (int i = 0; i < kRun + 2; ++i) {
        const int sx = ox0 - g.P[2] + i;
        v[kh][i] = ok && unsigned(sx) < unsigned(g.sd[2]) ? to_f(row[i * g.C]) : 0.0f;  // i * C < 2^31 (accepts)
      }
    }
  };

  // Plane js + 1's loads are in flight while plane js is multiplied. Slots of planes outside the chunk (o < 0 or
  // o >= zc) collect products too but are never stored.
  float cur[3][kRun + 2], nxt[3][kRun + 2];
  load_plane(0, cur);
#pragma unroll 1
  for (int js = 0; js < zc + 2; ++js) {
    load_plane(js + 1, nxt);
#pragma unroll
    for (int kh = 0; kh < 3; ++kh)
#pragma unroll
      for (int j = 0; j < 3; ++j)
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          const float wv = s_w[(2 - j) * 9 + kh * 3 + kw][lane];
#pragma unroll
          for (int r = 0; r < kRun; ++r) acc[j][r] = fmaf(wv, cur[kh][r + kw], acc[j][r]);
        }
    const int o = js - 2;  // complete: all three of its source planes are in
    if (o >= 0 && live) {
      T* orow = on + i64(oz0 + o) * o_d + i64(oy) * o_h;
#pragma unroll
      for (int r = 0; r < kRun; ++r)
        if (ox0 + r < g.od[2]) orow[i64(ox0 + r) * g.C] = from_f<T>(acc[0][r] + bv);
    }
#pragma unroll
    for (int r = 0; r < kRun; ++r) {
      acc[0][r] = acc[1][r];
      acc[1][r] = acc[2][r];
      acc[2][r] = 0.0f;
    }
#pragma unroll
    for (int kh = 0; kh < 3; ++kh)
#pragma unroll
      for (int i = 0; i < kRun + 2; ++i) cur[kh][i] = nxt[kh][i];
  }
}

std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("stencil: ") + what + " launch failed: " + cudaGetErrorString(e);
}

int ceil_div(i64 a, i64 b) { return int((a + b - 1) / b); }

template <typename T>
std::string run_stencil(const ConvProblem& p, const void* src, const void* w, const void* bias, void* out, bool dgrad,
                        cudaStream_t st) {
  Geo g{};
  g.C = int(p.out_channels);
  for (int a = 0; a < 3; ++a) {
    g.sd[a] = int(dgrad ? p.out[a] : p.in[a]);
    g.od[a] = int(dgrad ? p.in[a] : p.out[a]);
    g.P[a] = int(dgrad ? 2 - p.pad_lo[a] : p.pad_lo[a]);
  }
  g.flip = dgrad ? 1 : 0;
  g.wstrips = ceil_div(g.od[2], kRun);
  g.hblocks = ceil_div(g.od[1], kRows);
  g.cgroups = ceil_div(g.C, kLanes);
  g.chunks = ceil_div(g.od[0], kChunk);
  const i64 blocks = i64(g.wstrips) * g.hblocks * g.cgroups * g.chunks * p.batch;
  if (blocks > INT_MAX) return "stencil: problem too large for one grid";
  const T* s = static_cast<const T*>(src);
  const T* wt = static_cast<const T*>(w);
  T* o = static_cast<T*>(out);
  if (bias != nullptr)
    depthwise3_kernel<T, true><<<unsigned(blocks), kLanes * kRows, 0, st>>>(s, wt, static_cast<const T*>(bias), o, g);
  else
    depthwise3_kernel<T, false><<<unsigned(blocks), kLanes * kRows, 0, st>>>(s, wt, nullptr, o, g);
  return launch_error(dgrad ? "grad-input" : "forward");
}

std::string run(const ConvProblem& p, DType t, const void* src, const void* w, const void* bias, void* out, bool dgrad,
                void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return run_stencil<float>(p, src, w, bias, out, dgrad, st);
    case DType::kBF16: return run_stencil<__nv_bfloat16>(p, src, w, bias, out, dgrad, st);
    case DType::kF16: return run_stencil<__half>(p, src, w, bias, out, dgrad, st);
    default: return "stencil: unsupported dtype";
  }
}

}  // namespace

std::string fwd(const ConvProblem& p, DType t, const void* x, const void* w, const void* bias, void* y, void* stream) {
  return run(p, t, x, w, bias, y, false, stream);
}

std::string dgrad(const ConvProblem& p, DType t, const void* dy, const void* w, void* dx, void* stream) {
  return run(p, t, dy, w, nullptr, dx, true, stream);
}

}  // namespace stencil
}  // namespace jaxconv3d
