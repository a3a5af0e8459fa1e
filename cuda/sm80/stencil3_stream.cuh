// What the float32 streaming depthwise kernels share (stencil3_stream.cu: forward and grad-input; dw3_bwd_stream.cu:
// grad-weight, and grad-input with grad-weight in one pass): a block's strip of one channel, 32 (W) columns of RY H
// rows through a chunk of up to 16 D planes, with a lane per W column; the strip's per-plane stencil arithmetic; and
// one thread's share of the cp.async copies that bring a 34-row window of a source plane into a ring stage.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "plane_ring.cuh"
#include "sm80/stencil3_launch.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace stream3 {

constexpr int kX = kS3SX, kZ = kS3SZ;  // outputs of a block: W columns (a warp's lanes), D planes
constexpr int kTX = kX + 2;            // a source plane's columns: 34
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// A block's strip when each thread computes RY H rows of one column (plan.h: kS3SY, stream_rows_f32).
template <int RY>
struct Strip {
  static constexpr int Y = kWarps * RY, TY = Y + 2;  // output rows; source rows with the halo
};
using Strip16 = Strip<4>;  // 16-bit: 16 x 32 outputs, 18 x 34 source values a plane
static_assert(Strip16::Y == kS3SY, "the plan's strips");
// float32: 28 or 32 rows of 32 outputs (30 or 34 x 34 source values a plane), as stream_rows_f32 says; f(IC<RY>{}).
template <typename F>
decltype(auto) with_f32_rows(int64_t h, F&& f) {
  if (stream_rows_f32(h) == Strip<7>::Y) return f(IC<7>{});
  return f(IC<8>{});
}

// What a kernel holds of one strip: its output channel's source, its filter (flipped for grad-input), this thread's
// outputs (RY rows of column ox) and where they go, and the arithmetic of one source plane.
template <typename T, int RY>
struct StreamBlock {
  const T* chan;  // the source channel: forward, input channel oc / Og; grad-input (Og == 1), dy channel oc
  T* obase;       // this thread's output in row oy of output plane 0
  float w[27], bv;
  i64 sHW, oHW, orow;  // orow: an output row's bytes
  int oz0, zc, planes, sz0, s1, s2, warp, oy, ox, rows;  // rows: of this thread's RY, those inside the output

  // with_filter false: the caller runs no stencil (dw3_bwd_stream.cu's grad-weight alone) and a.wt may be null.
  __device__ __forceinline__ StreamBlock(const Stencil3Args& a, const Stencil3Block& blk, bool with_filter = true) {
    oz0 = blk.oz0;
    zc = min(kZ, a.od[0] - oz0);  // output planes of this chunk
    planes = zc + 2;              // its source planes: oz0 - P0 + s, s = 0 .. zc + 1
    warp = threadIdx.x / 32;
    sz0 = oz0 - a.P[0], s1 = blk.oy0 - a.P[1], s2 = blk.ox0 - a.P[2];
    sHW = i64(a.sd[1]) * a.sd[2];
    const int sc = a.dgrad ? blk.oc : blk.oc / a.Og;
    chan = static_cast<const T*>(a.src) + (blk.n * a.SC + sc) * (sHW * a.sd[0]);
    const T* wt = static_cast<const T*>(a.wt);
#pragma unroll
    for (int t = 0; t < 27; ++t) w[t] = with_filter ? cvt<float>(wt[i64(blk.oc) * 27 + (a.dgrad ? 26 - t : t)]) : 0.0f;
    oy = blk.oy0 + RY * warp;
    ox = blk.ox0 + threadIdx.x % 32;
    const T* bias = static_cast<const T*>(a.bias);
    bv = bias != nullptr ? cvt<float>(bias[blk.oc]) : 0.0f;
    oHW = i64(a.od[1]) * a.od[2];
    orow = i64(a.od[2]) * i64(sizeof(T));
    rows = min(RY, a.od[1] - oy);
    obase = static_cast<T*>(a.out) + (blk.n * a.OC + blk.oc) * (oHW * a.od[0]) + i64(oy) * a.od[2] + ox;
  }

  // Source plane s (in `buf`, row stride ROW; this thread's source column ox - P2 at `col`'s row 0): `cur` (output
  // plane s) starts, `mid` (s - 1) takes its middle D tap, `done` (s - 2) its last and is stored, then restarted at
  // the bias as output plane s + 1's. Source row RY warp + q meets output row RY warp + r through H tap q - r.
  // Every tap is multiplied, even into the slots of output planes outside 0 .. zc - 1 (s < 2, s >= zc): those are
  // never stored and restart before they are reused, so the loop carries no per-plane branch.
  template <int ROW>
  __device__ __forceinline__ void plane(const Stencil3Args& a, const float* col, int s, float (&cur)[RY],
                                        float (&mid)[RY], float (&done)[RY]) const {
#pragma unroll
    for (int q = 0; q < RY + 2; ++q) {
      const float v[3] = {col[q * ROW], col[q * ROW + 1], col[q * ROW + 2]};
#pragma unroll
      for (int kz = 0; kz < 3; ++kz) {
        float(&acc)[RY] = kz == 0 ? cur : (kz == 1 ? mid : done);
#pragma unroll
        for (int r = 0; r < RY; ++r) {
          const int ky = q - r;
          if (ky < 0 || ky > 2) continue;
#pragma unroll
          for (int kx = 0; kx < 3; ++kx) acc[r] = fmaf(w[(kz * 3 + ky) * 3 + kx], v[kx], acc[r]);
        }
      }
    }
    const int z = s - 2;
    if (z >= 0 && z < zc && ox < a.od[2]) {
      char* o = reinterpret_cast<char*>(obase + (oz0 + z) * oHW);
#pragma unroll
      for (int r = 0; r < RY; ++r, o += orow)
        if (r < rows) *reinterpret_cast<T*>(o) = cvt<T>(done[r]);
    }
#pragma unroll
    for (int r = 0; r < RY; ++r) done[r] = bv;
  }
};

constexpr int kRingRow = 40;  // a float32 stage's row stride (floats)
constexpr int kStageFloats = Strip<8>::TY * kRingRow;  // the taller strip's

// One thread's share of the copies of a float32 source plane's TY x 34 window (rows s1 .., columns s2 ..; zeros
// outside the plane) into a ring stage, V floats a copy: 16-byte copies (V = 4) where W % 4 == 0 and the source is
// 16-byte aligned, else 4-byte copies (V = 1). A row is copied as chunks of V columns from column x0 = s2 - e
// (e = 0 .. V - 1: the start rounded down to a multiple of V), so the window's column 0 lands at stage column e.
// Copy q = tid + kThreads i: row q / CPR, chunk q % CPR; its shared address in stage 0, its byte offset in the plane
// (0 outside it: nothing is read there; < 2^32, the plan bounds H x W by 2^30) and whether it lies inside are fixed per
// window, so a copy costs one 64-bit add.
template <int V, int TY>
struct RingWindow {
  static constexpr int CPR = V == 4 ? 10 : kTX;  // chunks a row: 40 columns cover e + 34 <= 37, or 34 columns
  static constexpr int Chunks = TY * CPR;
  static constexpr int Copies = (Chunks + kThreads - 1) / kThreads;  // a thread's: 3, or 8 to 10
  unsigned sdst[Copies], off[Copies], inside;
  int e;

  __device__ __forceinline__ RingWindow(const float* stage0, int s1, int s2, int H, int W) {
    const int tid = threadIdx.x;
    e = V == 4 ? s2 & 3 : 0;
    const int x0 = s2 - e;
    const unsigned sbase = unsigned(__cvta_generic_to_shared(stage0));
    inside = 0;
#pragma unroll
    for (int i = 0; i < Copies; ++i) {
      const int q = tid + kThreads * i, r = q / CPR, c = q % CPR;
      const int gy = s1 + r, gx = x0 + V * c;
      const bool in = q < Chunks && unsigned(gy) < unsigned(H) && unsigned(gx) < unsigned(W);
      sdst[i] = sbase + unsigned(4 * (min(r, TY - 1) * kRingRow + V * c));
      off[i] = in ? (unsigned(gy) * unsigned(W) + unsigned(gx)) * 4u : 0u;
      inside |= unsigned(in) << i;
    }
  }

  // The copies of the plane at `pl` (any valid address where !zin: then every copy zero-fills) into stage STAGE.
  template <int STAGE>
  __device__ __forceinline__ void issue(const char* pl, bool zin) const {
    const unsigned ins = zin ? inside : 0u;
    constexpr unsigned kStage = 4u * STAGE * kStageFloats;
#pragma unroll
    for (int i = 0; i < Copies; ++i)
      if (i + 1 < Copies || threadIdx.x + kThreads * i < Chunks)
        cp_async_shared<4 * V>(sdst[i] + kStage, pl + off[i], (ins >> i & 1u) != 0);
  }
};

// The float32 kernels' copies: 16 bytes where both rows allow and every source is 16-byte aligned.
inline bool wide_copies(const ConvProblem& p, std::initializer_list<const void*> sources) {
  if (p.in[2] % 4 != 0 || p.out[2] % 4 != 0) return false;
  for (const void* s : sources)
    if (reinterpret_cast<uintptr_t>(s) % 16 != 0) return false;
  return true;
}

}  // namespace stream3
}  // namespace sm80
}  // namespace jaxconv3d
