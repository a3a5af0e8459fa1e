// sm80 depthwise 3x3x3 grad-weight (stride 1, dilation 1, one input channel per group):
//   dw[o][kz][ky][kx] = sum over samples and positions q of dy[o][q] * x[o / Og][q + (kz, ky, kx) - pad].
// Block = (output channel, split): a contiguous run of the channel's 8 x 16 x 32 bricks of dy positions (samples
// included). Per brick, dy's brick and x's tile with its halo go to shared memory (zeros outside: padding and the
// brick's overhang); each thread holds its 8 x 4 dy values and 27 running sums, and for every H tap and source row
// reads 6 x values (two vector reads) that feed 3 D taps x 3 W taps x 4 positions. The block's 128 partial sums
// of each tap are added in a fixed tree (warp shuffles, then the four warps in order); a split writes dw itself
// (S = 1) or its row of the workspace, which splits_reduce_kernel adds in split order. Deterministic.
#include "sm80/sm80.h"
#include "sm80/stencil3.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

struct Dw3Args {
  const void* x;
  const void* dy;
  void* out;  // dw (S == 1) or the float workspace [S][O * 27]
  int O, C, Og, S;
  int64_t bricks, per_split;
  int od[3], sd[3], P[3], ntile[3];
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 5) wgrad_dw3_kernel(const Dw3Args a) {
  __shared__ __align__(16) float tile[kTileFloats];
  __shared__ __align__(16) float dyb[kZ * kY * kX];
  __shared__ float red[kThreads / 32][27];
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const int o = int(blockIdx.x % a.O), split = int(blockIdx.x / a.O);
  const int c = o / a.Og;
  const int tid = threadIdx.x, ty = tid / (kX / 4), tx = tid % (kX / 4), lane = tid % 32, warp = tid / 32;
  const i64 oS = i64(a.od[0]) * a.od[1] * a.od[2], sS = i64(a.sd[0]) * a.sd[1] * a.sd[2];
  const i64 oHW = i64(a.od[1]) * a.od[2];

  float acc[27];
#pragma unroll
  for (int t = 0; t < 27; ++t) acc[t] = 0.0f;
  const int64_t b0 = int64_t(split) * a.per_split, b1 = min(b0 + a.per_split, a.bricks);
  for (int64_t br = b0; br < b1; ++br) {
    const Dw3Unit unit = dw3_unit(br, a.ntile);
    const int64_t n = unit.n;
    const int oz0 = unit.bz * kZ, oy0 = unit.by * kY, ox0 = unit.bx * kX;
    if (br > b0) __syncthreads();  // the last brick is still being read
    fill_tile3(tile, x + (n * a.C + c) * sS, oz0 - a.P[0], oy0 - a.P[1], ox0 - a.P[2], a.sd, tid);
    const T* dyc = dy + (n * a.O + o) * oS;
    {  // dy's brick: lane = W position, each warp walks rows (z, y) warp, warp + 4, ...
      const int gx = ox0 + lane;
      int z = 0, y = warp;
      static_assert(kZ * kY % (kThreads / 32) == 0, "whole rows per warp");
#pragma unroll 8  // eight independent loads in flight per thread (see fill_tile3)
      for (int i = 0; i < kZ * kY / (kThreads / 32); ++i) {
        const int r = warp + i * (kThreads / 32);
        const int gz = oz0 + z, gy = oy0 + y;
        const bool ok = gz < a.od[0] && gy < a.od[1] && gx < a.od[2];
        dyb[r * kX + lane] = ok ? cvt<float>(dyc[gz * oHW + i64(gy) * a.od[2] + gx]) : 0.0f;
        y += kThreads / 32;
        if (y >= kY) {
          y -= kY;
          ++z;
        }
      }
    }
    __syncthreads();
    float d[kZ][4];
#pragma unroll
    for (int z = 0; z < kZ; ++z) {
      const float4 v = *reinterpret_cast<const float4*>(dyb + (z * kY + ty) * kX + 4 * tx);
      d[z][0] = v.x; d[z][1] = v.y; d[z][2] = v.z; d[z][3] = v.w;
    }
    for_each_tap3(tile, ty, tx, [&](int z, int tap, const float (&s)[6], int kx) {
#pragma unroll
      for (int v = 0; v < 4; ++v) acc[tap] = fmaf(d[z][v], s[v + kx], acc[tap]);
    });
  }
  block_sum27<T>(acc, red, a.out, a.S, split, i64(a.O) * 27, i64(o) * 27);
}

template <typename T>
std::string launch(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw, void* ws,
                   cudaStream_t st) {
  Stencil3Args s3;
  int64_t unused = 0;
  if (!pl.dw3 || !stencil3_plan(p, false, t, &s3, &unused))
    return "jaxconv3d cuda: the 3x3x3 depthwise grad-weight does not apply to this problem";
  Dw3Args a;
  a.x = x; a.dy = dy; a.out = pl.S > 1 ? ws : dw;
  a.O = int(p.out_channels); a.C = int(p.in_channels); a.Og = int(p.out_per_group()); a.S = pl.S;
  a.bricks = pl.bricks; a.per_split = pl.per_split;
  for (int d = 0; d < 3; ++d) {
    a.od[d] = s3.od[d]; a.sd[d] = s3.sd[d]; a.P[d] = s3.P[d]; a.ntile[d] = s3.ntile[d];
  }
  const int64_t blocks = int64_t(pl.S) * p.out_channels;
  if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (depthwise 3x3x3 wgrad)";
  if (blocks == 0) return "";
  wgrad_dw3_kernel<T><<<unsigned(blocks), kThreads, 0, st>>>(a);
  return launch_error("depthwise 3x3x3 wgrad");
}

}  // namespace

std::string wgrad_dw3(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw,
                      void* workspace, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return launch<float>(p, t, pl, x, dy, dw, workspace, st);
    case DType::kBF16: return launch<__nv_bfloat16>(p, t, pl, x, dy, dw, workspace, st);
    case DType::kF16: return launch<__half>(p, t, pl, x, dy, dw, workspace, st);
    default: return "jaxconv3d cuda: the 3x3x3 depthwise grad-weight takes float32, bfloat16 and float16";
  }
}

}  // namespace sm80
}  // namespace jaxconv3d
