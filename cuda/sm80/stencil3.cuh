// What the 3x3x3 depthwise kernels (stencil3.cu: forward / grad-input, wgrad_dw3.cu: grad-weight) share: the
// 8 x 16 x 32 (D, H, W) brick of positions a block of 128 threads owns, each thread 8 along D x 4 along W, and its
// source tile with a one-position halo in shared memory (rows of 36 floats: 16-byte aligned for vector reads).
#pragma once

#include "sm80/common.cuh"
#include "sm80/plan.h"

namespace jaxconv3d {
namespace sm80 {

constexpr int kZ = kS3Z, kY = kS3Y, kX = kS3X;         // the brick
constexpr int kTZ = kZ + 2, kTY = kY + 2, kTX = kX + 2;  // its source tile
constexpr int kRow = 36;                                 // tile row stride (floats)
constexpr int kThreads = kY * (kX / 4);                  // 128: one per (H row, 4 W positions)
static_assert(kX == 32 && kTY >= kThreads / 32, "fill_tile3: a lane per column, rows stepped by the warp count");
constexpr int kTileFloats = kTZ * kTY * kRow;

// The source tile from (s0, s1, s2) (may be negative: padding) of one channel `base` with extents sd, zeros
// outside the source. Columns 0..31: lane = column, each warp walks rows warp, warp + 4, ... with the row's (z, y)
// stepped, not divided; columns 32 and 33 of every row after.
template <typename T>
__device__ __forceinline__ void fill_tile3(float* tile, const T* __restrict__ base, int s0, int s1, int s2,
                                           const int (&sd)[3], int tid) {
  constexpr int NW = kThreads / 32;
  const i64 sHW = i64(sd[1]) * sd[2];
  const int warp = tid / 32, lane = tid % 32;
  const int gx = s2 + lane;
  const bool xok = unsigned(gx) < unsigned(sd[2]);
  // Every warp walks the same number of rows. float32: 9 at a time keeps 9 independent loads in flight per thread
  // (the fill is latency-bound; fp32 forward 0.184 -> 0.151 ms against 3); 16-bit sources stay at 3 (9 made the
  // bf16 forward slower, 0.157 -> 0.212 ms).
  constexpr int kRowsPerWarp = kTZ * kTY / NW;
  constexpr int kUnroll = sizeof(T) == 4 ? 9 : 3;
  static_assert(kTZ * kTY % NW == 0 && kRowsPerWarp % 9 == 0, "whole groups of 9 rows per warp");
  int z = 0, y = warp;
#pragma unroll kUnroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + i * NW;
    const int gz = s0 + z, gy = s1 + y;
    const bool ok = xok && unsigned(gz) < unsigned(sd[0]) && unsigned(gy) < unsigned(sd[1]);
    tile[r * kRow + lane] = ok ? cvt<float>(base[gz * sHW + i64(gy) * sd[2] + gx]) : 0.0f;
    y += NW;
    if (y >= kTY) {
      y -= kTY;
      ++z;
    }
  }
  for (int i = tid; i < kTZ * kTY * (kTX - 32); i += kThreads) {
    const int r = i / (kTX - 32), x = 32 + i % (kTX - 32), rz = r / kTY, ry = r - rz * kTY;
    const int gz = s0 + rz, gy = s1 + ry, hx = s2 + x;
    const bool ok =
        unsigned(gz) < unsigned(sd[0]) && unsigned(gy) < unsigned(sd[1]) && unsigned(hx) < unsigned(sd[2]);
    tile[r * kRow + x] = ok ? cvt<float>(base[gz * sHW + i64(gy) * sd[2] + hx]) : 0.0f;
  }
}

// Source row (D row r, H row y) of the tile at W positions 4 tx .. 4 tx + 5: two vector reads.
__device__ __forceinline__ void tile3_row(const float* tile, int r, int y, int tx, float (&s)[6]) {
  const float* row = tile + (r * kTY + y) * kRow + 4 * tx;
  const float4 lo = *reinterpret_cast<const float4*>(row);
  const float2 hi = *reinterpret_cast<const float2*>(row + 4);
  s[0] = lo.x; s[1] = lo.y; s[2] = lo.z; s[3] = lo.w; s[4] = hi.x; s[5] = hi.y;
}

// Visits every (brick row z, tap (kz, ky, kx)) pair of a thread's column (D rows 0..7, H row ty, W positions
// 4 tx .. 4 tx + 3) with the 6 source values s of D row z + kz, H row ty + ky, W 4 tx .. 4 tx + 5: f(z, tap, s, kx)
// with tap = (kz * 3 + ky) * 3 + kx. Each source row is read once (two vector reads) for its three D taps; every
// index is a compile-time constant once unrolled, so the caller's register arrays stay in registers.
template <typename F>
__device__ __forceinline__ void for_each_tap3(const float* tile, int ty, int tx, F&& f) {
#pragma unroll
  for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
    for (int r = 0; r < kTZ; ++r) {
      float s[6];
      tile3_row(tile, r, ty + ky, tx, s);
#pragma unroll
      for (int kz = 0; kz < 3; ++kz) {
        const int z = r - kz;  // the brick row this source row meets through D tap kz
        if (z < 0 || z >= kZ) continue;
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) f(z, (kz * 3 + ky) * 3 + kx, s, kx);
      }
    }
  }
}

}  // namespace sm80
}  // namespace jaxconv3d
