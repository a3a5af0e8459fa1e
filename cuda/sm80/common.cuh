// Shared by the sm80 family's kernels (implicit-GEMM forward / grad-input, depthwise stencil, grad-weight,
// grad-bias): the geometry passed by value, 64-bit div/mod and shared-memory helpers; element conversions and
// cp.async come from device_common.cuh, the launch check from launch_common.cuh. Each .cu of the family includes
// it; everything is inline or templated.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "conv_problem.h"
#include "device_common.cuh"
#include "launch_common.cuh"
#include "sm80/plan.h"

namespace jaxconv3d {
namespace sm80 {

using i64 = long long;

constexpr int kInvalid = -(1 << 29);  // coordinate marker that fails every bounds test
constexpr int kTapCap = 256;           // taps held in the shared tap table of the GEMM kernel

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__host__ __device__ inline int gcd_int(int a, int b) {
  while (b) { int t = a % b; a = b; b = t; }
  return a;
}

// ----------------------------------------------------------------------------------------------------------
// Geometry shared by the kernels (host-filled, passed by value).
struct ConvGeo {
  int xd[3], yd[3], k[3], s[3], pl[3], dl[3];
};


__device__ __forceinline__ void divmod64(i64 a, i64 b, i64& q, i64& r) {
  if (((a | b) >> 31) == 0) {
    const unsigned ua = static_cast<unsigned>(a), ub = static_cast<unsigned>(b);
    const unsigned uq = ua / ub;
    q = uq; r = ua - uq * ub;
  } else {
    q = a / b; r = a - q * b;
  }
}

// A warp's walk over the tensor-core depthwise grad-weight's units (wg_plan: (sample, row block, column block)
// columns x `planes` D planes of one channel; wgrad_dw3_mma.cu, dw3_bwd_mma.cu, so both visit a split's units in one
// order): the split's units shared among the block's warps in contiguous runs, next() giving one column's run of
// planes z .. z + len - 1 at a time, its first row row0 (blocks of `rows`), first column col0 (of `cols`), sample n.
struct UnitWalk {
  i64 cur, end;
  int z, len, row0, col0;
  i64 n;
  __device__ UnitWalk(i64 units, i64 per_split, int split, int warp, int warps) {
    const i64 s0 = i64(split) * per_split, s1 = min(units, s0 + per_split);
    const i64 per_warp = (s1 - s0 + warps - 1) / warps;
    cur = s0 + warp * per_warp;
    end = min(s1, cur + per_warp);
  }
  __device__ bool next(int planes, int nhb, int nwb, int rows, int cols) {
    if (cur >= end) return false;
    z = int(cur % planes);
    len = int(min(i64(planes - z), end - cur));
    i64 col = cur / planes;
    cur += len;
    col0 = int(col % nwb) * cols;
    col /= nwb;
    row0 = int(col % nhb) * rows;
    n = col / nhb;
    return true;
  }
};

// The 3x3x3 depthwise grad-weights' (channel, split) result for dw element e: dw itself when there is one split,
// else the split's float row (`row` elements) of the workspace, which splits_reduce_kernel adds in split order.
template <typename T>
__device__ __forceinline__ void store_split_sum(void* out, int S, int split, i64 row, i64 e, float v) {
  if (S == 1)
    static_cast<T*>(out)[e] = cvt<T>(v);
  else
    static_cast<float*>(out)[i64(split) * row + e] = v;
}

// Unit u of one channel's bricks or strips (wgrad_dw3.cu, dw3_bwd_stream.cu), ordered sample, D block, H block,
// W block (W fastest; ntile: blocks along D, H, W): its sample and block coordinates.
struct Dw3Unit {
  i64 n;
  int bz, by, bx;
};
__device__ __forceinline__ Dw3Unit dw3_unit(i64 u, const int (&ntile)[3]) {
  const int bx = int(u % ntile[2]); u /= ntile[2];
  const int by = int(u % ntile[1]); u /= ntile[1];
  const int bz = int(u % ntile[0]);
  return Dw3Unit{u / ntile[0], bz, by, bx};
}

// A block's sum of each of the 27 taps over its threads' `sums` in a fixed order (a butterfly within each warp, then
// the warps in order, through `red` in shared memory), stored by thread t < 27 for tap t as dw element base + t
// (store_split_sum). Deterministic.
template <typename T, int WARPS>
__device__ __forceinline__ void block_sum27(const float (&sums)[27], float (&red)[WARPS][27], void* out, int S,
                                            int split, i64 row, i64 base) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int t = 0; t < 27; ++t) {
    float v = sums[t];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) red[warp][t] = v;
  }
  __syncthreads();
  if (threadIdx.x < 27) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w][threadIdx.x];
    store_split_sum<T>(out, S, split, row, base + threadIdx.x, v);
  }
}

template <typename Acc, int N>
__device__ __forceinline__ void lds_vec(Acc (&dst)[N], const Acc* p) {
  if constexpr (sizeof(Acc) == 4) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(p + i);
      dst[i] = v.x; dst[i + 1] = v.y; dst[i + 2] = v.z; dst[i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      const double2 v = *reinterpret_cast<const double2*>(p + i);
      dst[i] = v.x; dst[i + 1] = v.y;
    }
  }
}

inline ConvGeo make_geo(const ConvProblem& p) {
  ConvGeo G;
  for (int a = 0; a < 3; ++a) {
    G.xd[a] = (int)p.in[a]; G.yd[a] = (int)p.out[a]; G.k[a] = (int)p.kernel[a];
    G.s[a] = (int)p.stride[a]; G.pl[a] = (int)p.pad_lo[a]; G.dl[a] = (int)p.dilation[a];
  }
  return G;
}

}  // namespace sm80
}  // namespace jaxconv3d
