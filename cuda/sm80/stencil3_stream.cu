// sm80 depthwise 3x3x3 stencil that streams along D (stride 1, dilation 1, one input channel per group): forward,
// and grad-input of a channel multiplier of 1 as the same stencil run on dy with the filter flipped. The brick
// kernel (stencil3.cu) loads a whole 10 x 18 x 34 source tile, then computes, then stores: one block's loads are
// never overlapped with its own math. Here a block owns a strip of outputs, 32 (W) wide and 16 (16-bit) or 32
// (float32) rows high, through a chunk of up to 16 output planes, and walks the chunk's source planes in order:
//   plane   = the strip's source values with their halo (zeros outside the source) in a ring of shared memory.
//             float32: cp.async copies through plane_ring.cuh's three stages, two planes in flight a block and no
//             registers held for them, 16 bytes a copy where the rows allow. 16-bit (cp.async copies 4 bytes at
//             least; the halo's rows start at odd columns): a two-buffer ring, each thread holding its 6 values of
//             the next plane in registers, loaded while it computes the current plane (two planes in registers,
//             with fewer blocks an SM, measured slower: docs/perf.md v9);
//   thread  = one W column (its lane) of RY H rows (4 in 16-bit, 8 in float32) in each of the three output planes
//             a source plane meets (3 RY accumulators, rotated every plane), the 27 weights in registers. A warp's
//             reads of a source row are 32 consecutive floats, free of bank conflicts, and its stores whole rows;
//             an output plane is stored as soon as its third source plane has been added.
// Fixed summation order (bias, source plane, H tap, D tap, W tap): deterministic.
#include "sm80/sm80.h"
#include "plane_ring.cuh"
#include "sm80/stencil3_launch.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr int kX = kS3SX, kZ = kS3SZ;  // outputs of a block: W columns (a warp's lanes), D planes
constexpr int kTX = kX + 2;            // a source plane's columns: 34
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kRing = 2;  // 16-bit: source planes in shared memory, s (read) and s + 1 (written)
constexpr int kRow = 36;  // the 16-bit ring's row stride (floats)

// A block's strip when each thread computes RY H rows of one column (plan.h: kS3SY, kS3SYF32).
template <int RY>
struct Strip {
  static constexpr int Y = kWarps * RY, TY = Y + 2;  // output rows; source rows with the halo
};
using Strip16 = Strip<4>;  // 16-bit: 16 x 32 outputs, 18 x 34 source values a plane
using Strip32 = Strip<8>;  // float32: 32 x 32 outputs, 34 x 34 source values a plane
static_assert(Strip16::Y == kS3SY && Strip32::Y == kS3SYF32, "the plan's strips");

// 16-bit staging: the 18 x 34 source values of a plane, a lane per column 0..31 of rows warp, warp + 4, ... (kMain
// rows), and one thread per value of columns 32..33.
constexpr int kTY = Strip16::TY, kMain = (kTY + kWarps - 1) / kWarps;
static_assert(kX == 32 && kTY * (kTX - 32) <= kThreads, "a lane per column 0..31, one thread per value past them");

// A thread's share of one 16-bit source plane: columns 0..31 of rows warp, warp + 4, ... (lane = column), and at
// most one value of columns 32..33.
struct PlaneShare {
  float v[kMain + 1];
};

template <typename T>
__device__ __forceinline__ void load_plane(PlaneShare& sh, const T* __restrict__ chan, int gz, int s1, int s2,
                                           const int (&sd)[3], int tid) {
  const int warp = tid / 32, lane = tid % 32;
  const bool zok = unsigned(gz) < unsigned(sd[0]);
  const T* plane = chan + i64(zok ? gz : 0) * sd[1] * sd[2];
  const int gx = s2 + lane;
  const bool xok = zok && unsigned(gx) < unsigned(sd[2]);
#pragma unroll
  for (int i = 0; i < kMain; ++i) {
    const int r = warp + i * kWarps, gy = s1 + r;
    const bool ok = xok && r < kTY && unsigned(gy) < unsigned(sd[1]);
    sh.v[i] = ok ? cvt<float>(plane[i64(gy) * sd[2] + gx]) : 0.0f;
  }
  const int r = tid / (kTX - 32), x = 32 + tid % (kTX - 32), gy = s1 + r, hx = s2 + x;
  const bool ok = zok && tid < kTY * (kTX - 32) && unsigned(gy) < unsigned(sd[1]) && unsigned(hx) < unsigned(sd[2]);
  sh.v[kMain] = ok ? cvt<float>(plane[i64(gy) * sd[2] + hx]) : 0.0f;
}

__device__ __forceinline__ void store_plane(const PlaneShare& sh, float* buf, int tid) {
  const int warp = tid / 32, lane = tid % 32;
#pragma unroll
  for (int i = 0; i < kMain; ++i) {
    const int r = warp + i * kWarps;
    if (r < kTY) buf[r * kRow + lane] = sh.v[i];
  }
  if (tid < kTY * (kTX - 32)) buf[(tid / (kTX - 32)) * kRow + 32 + tid % (kTX - 32)] = sh.v[kMain];
}

// What both kernels hold of a block: its output channel's source, its filter (flipped for grad-input), this
// thread's outputs (RY rows of column ox) and where they go, and the arithmetic of one source plane.
template <typename T, int RY>
struct StreamBlock {
  const T* chan;  // the source channel: forward, input channel oc / Og; grad-input (Og == 1), dy channel oc
  T* obase;       // this thread's output in row oy of output plane 0
  float w[27], bv;
  i64 sHW, oHW, orow;  // orow: an output row's bytes
  int oz0, zc, planes, sz0, s1, s2, warp, oy, ox, rows;  // rows: of this thread's RY, those inside the output

  __device__ __forceinline__ StreamBlock(const Stencil3Args& a) {
    const Stencil3Block blk = stencil3_block<kZ, Strip<RY>::Y, kX>(a);
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
    for (int t = 0; t < 27; ++t) w[t] = cvt<float>(wt[i64(blk.oc) * 27 + (a.dgrad ? 26 - t : t)]);
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

// The float32 kernel's copies of a source plane, V floats each: 16-byte copies (V = 4) where W % 4 == 0 and the
// source is 16-byte aligned, else 4-byte copies (V = 1). A plane's rows are copied as chunks of V columns from source
// column s2 - e (e = 0 .. V - 1: the start rounded down to a multiple of V), into stage rows of kRingRow floats.
template <int V>
struct RingCopies {
  static constexpr int CPR = V == 4 ? 10 : kTX;  // chunks a row: 40 columns cover e + 34 <= 37, or 34 columns
  static constexpr int Chunks = Strip32::TY * CPR;
  static constexpr int Copies = (Chunks + kThreads - 1) / kThreads;  // a thread's: 3 or 10
};
constexpr int kRingRow = 40;  // the float32 stage's row stride (floats)

// float32, launched as a programmatic dependent: plane s + 2's copies are issued before plane s is computed.
template <int V>
__global__ void __launch_bounds__(kThreads, 5) stencil3_ring_kernel(const Stencil3Args a) {
  using G = Strip32;
  using C = RingCopies<V>;
  constexpr int kStageFloats = G::TY * kRingRow;
  __shared__ __align__(16) float ring[kRingStages][kStageFloats];
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  const StreamBlock<float, 8> b(a);
  const int tid = threadIdx.x;
  const int e = V == 4 ? b.s2 & 3 : 0, x0 = b.s2 - e;  // the copies' first column (a multiple of V)
  // Copy q = tid + kThreads i: row q / CPR, chunk q % CPR. Its shared address in stage 0, its byte offset in the
  // plane (0 outside it: nothing is read there; < 2^31, the plan bounds H x W) and whether it lies inside: fixed
  // per block, so a copy costs one 64-bit add.
  unsigned sdst[C::Copies], off[C::Copies], inside = 0;
  const unsigned sbase = unsigned(__cvta_generic_to_shared(&ring[0][0]));
#pragma unroll
  for (int i = 0; i < C::Copies; ++i) {
    const int q = tid + kThreads * i, r = q / C::CPR, c = q % C::CPR;
    const int gy = b.s1 + r, gx = x0 + V * c;
    const bool in = q < C::Chunks && unsigned(gy) < unsigned(a.sd[1]) && unsigned(gx) < unsigned(a.sd[2]);
    sdst[i] = sbase + unsigned(4 * (min(r, G::TY - 1) * kRingRow + V * c));
    off[i] = in ? (unsigned(gy) * unsigned(a.sd[2]) + unsigned(gx)) * 4u : 0u;
    inside |= unsigned(in) << i;
  }
  const char* chanb = reinterpret_cast<const char*>(b.chan);
  auto issue = [&](int s, auto stage) {
    if (s < b.planes) {
      const int gz = b.sz0 + s;
      const bool zin = unsigned(gz) < unsigned(a.sd[0]);
      const char* pl = chanb + (zin ? i64(gz) * (b.sHW * 4) : i64(0));
      const unsigned ins = zin ? inside : 0u;
      constexpr unsigned kStage = 4u * decltype(stage)::value * kStageFloats;
#pragma unroll
      for (int i = 0; i < C::Copies; ++i)
        if (i + 1 < C::Copies || tid + kThreads * i < C::Chunks)
          cp_async_shared<4 * V>(sdst[i] + kStage, pl + off[i], (ins >> i & 1u) != 0);
    }
    cp_async_commit();
  };
  float acc[3][8];  // output plane z accumulates in acc[z % 3], from the bias
#pragma unroll
  for (int k = 0; k < 3; ++k)
#pragma unroll
    for (int r = 0; r < 8; ++r) acc[k][r] = b.bv;
  const int col = 8 * b.warp * kRingRow + e + tid % 32;
  plane_ring(b.planes - 2, [] { __syncthreads(); }, issue, [&](int s, auto phase) {
    constexpr int PH = decltype(phase)::value;  // s % 3: the stage and the accumulator rotation
    b.template plane<kRingRow>(a, ring[PH] + col, s, acc[PH], acc[(PH + 2) % 3], acc[(PH + 1) % 3]);
  });
  pdl_release();
}

// 16-bit: plane s + 1 waits in registers while plane s is computed from the two-buffer ring.
template <typename T>
__global__ void __launch_bounds__(kThreads, 5) stencil3_stream_kernel(const Stencil3Args a) {
  __shared__ __align__(16) float ring[kRing][Strip16::TY * kRow];
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  const StreamBlock<T, 4> b(a);
  const int tid = threadIdx.x, col = 4 * b.warp * kRow + tid % 32;
  PlaneShare next;
  load_plane(next, b.chan, b.sz0, b.s1, b.s2, a.sd, tid);
  store_plane(next, ring[0], tid);
  load_plane(next, b.chan, b.sz0 + 1, b.s1, b.s2, a.sd, tid);  // planes >= 3
  __syncthreads();

  float acc[3][4];  // output plane z accumulates in acc[z % 3], from the bias
#pragma unroll
  for (int k = 0; k < 3; ++k)
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[k][r] = b.bv;
  each_plane_by_three(b.planes, [&](int s, auto phase) {
    constexpr int PH = decltype(phase)::value;  // s % 3: the accumulator rotation
    // `next` holds plane s + 1: into the ring, then refilled with plane s + 2
    if (s + 1 < b.planes) store_plane(next, ring[(s + 1) % kRing], tid);
    if (s + 2 < b.planes) load_plane(next, b.chan, b.sz0 + s + 2, b.s1, b.s2, a.sd, tid);
    b.template plane<kRow>(a, ring[s % kRing] + col, s, acc[PH], acc[(PH + 2) % 3], acc[(PH + 1) % 3]);
    __syncthreads();  // plane s + 1 is in its buffer; nobody reads plane s's buffer any more
  });
  pdl_release();
}

}  // namespace

std::string stencil3_stream(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w,
                            const void* bias, void* out, void* stream) {
  return for_stencil3_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    void (*kernel)(const Stencil3Args);
    if constexpr (std::is_same_v<T, float>)  // 16-byte copies: rows of a multiple of 4, a 16-byte aligned source
      kernel = p.in[2] % 4 == 0 && p.out[2] % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0
                   ? stencil3_ring_kernel<4>
                   : stencil3_ring_kernel<1>;
    else
      kernel = stencil3_stream_kernel<T>;
    return launch_stencil3<T>(stencil3_stream_plan, kernel, kThreads, p, t, dgrad, src, w, bias, out, stream,
                              dgrad ? "streaming 3x3x3 depthwise stencil (grad-input)"
                                    : "streaming 3x3x3 depthwise stencil (forward)",
                              /*dependent=*/true);
  });
}

}  // namespace sm80
}  // namespace jaxconv3d
