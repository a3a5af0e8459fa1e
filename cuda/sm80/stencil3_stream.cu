// sm80 depthwise 3x3x3 stencil that streams along D (stride 1, dilation 1, one input channel per group): forward,
// and grad-input of a channel multiplier of 1 as the same stencil run on dy with the filter flipped. The brick
// kernel (stencil3.cu) loads a whole 10 x 18 x 34 source tile, then computes, then stores: one block's loads are
// never overlapped with its own math, and 128 registers a thread leave four blocks an SM, too few four-byte loads
// in flight for the memory system (ncu: DRAM 29% busy). Here a block owns a 16 (H) x 32 (W) strip of outputs
// through a chunk of up to 16 output planes and walks the chunk's source planes in order:
//   plane   = 18 x 34 source values (the strip with its halo; zeros outside the source) in a two-buffer ring of
//             shared memory; each thread holds its 6 values of the next plane in registers, loaded while it
//             computes the current plane, so every block always has loads in flight (two planes in flight with
//             fewer blocks an SM measured slower: docs/perf.md v9);
//   thread  = 4 W outputs of one H row in each of the three output planes a source plane meets (12 accumulators,
//             rotated every plane), the 27 weights in registers; an output plane is stored as soon as its third
//             source plane has been added.
// Fixed summation order (source plane, H tap, D tap, W tap): deterministic.
#include "sm80/sm80.h"
#include "sm80/stencil3_launch.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr int kY = kS3SY, kX = kS3SX, kZ = kS3SZ;  // outputs of a block: H rows x W columns x D planes
constexpr int kTY = kY + 2, kTX = kX + 2;           // a source plane: 18 x 34
constexpr int kRow = 36;                            // plane row stride (floats): 16-byte aligned rows
constexpr int kThreads = kY * (kX / 4);             // 128: one per (H row, 4 W outputs)
constexpr int kWarps = kThreads / 32;
constexpr int kMain = (kTY + kWarps - 1) / kWarps;  // rows a lane loads in columns 0..31 (5)
constexpr int kRing = 2;                            // source planes in shared memory: s (read), s + 1 (written)
static_assert(kX == 32 && kTY * (kTX - 32) <= kThreads, "a lane per column 0..31, one thread per value past them");

// A thread's share of one source plane: columns 0..31 of rows warp, warp + 4, ... (lane = column), and at most one
// value of columns 32..33.
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

template <typename T>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 5 : 6) stencil3_stream_kernel(const Stencil3Args a) {
  __shared__ __align__(16) float ring[kRing][kTY * kRow];
  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);

  const Stencil3Block blk = stencil3_block<kZ, kY, kX>(a);
  const i64 n = blk.n;
  const int oc = blk.oc, oz0 = blk.oz0, oy0 = blk.oy0, ox0 = blk.ox0;
  const int zc = min(kZ, a.od[0] - oz0);  // output planes of this chunk
  const int planes = zc + 2;              // its source planes: oz0 - P0 + s, s = 0 .. zc + 1
  const int tid = threadIdx.x, ty = tid / (kX / 4), tx = tid % (kX / 4);
  const int sz0 = oz0 - a.P[0], s1 = oy0 - a.P[1], s2 = ox0 - a.P[2];
  // forward: output channel oc reads input channel oc / Og with its own filter; grad-input (Og == 1): dx channel
  // oc reads dy channel oc through its filter flipped
  const int sc = a.dgrad ? oc : oc / a.Og;
  const T* chan = src + (n * a.SC + sc) * (i64(a.sd[0]) * a.sd[1] * a.sd[2]);

  // Plane s + 1 waits in registers while plane s is computed from the ring.
  PlaneShare next;
  load_plane(next, chan, sz0, s1, s2, a.sd, tid);
  store_plane(next, ring[0], tid);
  load_plane(next, chan, sz0 + 1, s1, s2, a.sd, tid);  // planes >= 3
  float w[27];
#pragma unroll
  for (int t = 0; t < 27; ++t) w[t] = cvt<float>(wt[i64(oc) * 27 + (a.dgrad ? 26 - t : t)]);
  __syncthreads();

  const int oy = oy0 + ty, ox = ox0 + 4 * tx;
  const bool mine = oy < a.od[1] && ox < a.od[2];
  const T* bias = static_cast<const T*>(a.bias);
  const float bv = bias != nullptr ? cvt<float>(bias[oc]) : 0.0f;
  const i64 oHW = i64(a.od[1]) * a.od[2];
  T* obase = out + (n * a.OC + oc) * (oHW * a.od[0]) + i64(oy) * a.od[2] + ox;

  // Source plane s: `cur` (output plane s) starts, `mid` (s - 1) takes its middle D tap, `done` (s - 2) its last and
  // is stored, then cleared to become output plane s + 1's.
  auto step = [&](int s, float (&cur)[4], float (&mid)[4], float (&done)[4]) {
    // `next` holds plane s + 1: into the ring, then refilled with plane s + 2
    if (s + 1 < planes) store_plane(next, ring[(s + 1) % kRing], tid);
    if (s + 2 < planes) load_plane(next, chan, sz0 + s + 2, s1, s2, a.sd, tid);
    const float* buf = ring[s % kRing];
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
      const float* row = buf + (ty + ky) * kRow + 4 * tx;
      const float4 lo = *reinterpret_cast<const float4*>(row);
      const float2 hi = *reinterpret_cast<const float2*>(row + 4);
      const float v[6] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y};
#pragma unroll
      for (int kz = 0; kz < 3; ++kz) {
        float(&acc)[4] = kz == 0 ? cur : (kz == 1 ? mid : done);
        const int z = s - kz;  // the output plane this source plane meets through D tap kz (block-uniform)
        if (z < 0 || z >= zc) continue;
#pragma unroll
        for (int kx = 0; kx < 3; ++kx)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[e] = fmaf(w[(kz * 3 + ky) * 3 + kx], v[e + kx], acc[e]);
      }
    }
    const int z = s - 2;
    if (z >= 0 && z < zc && mine) store_four(obase + (oz0 + z) * oHW, done, bv, a.vec, ox, a.od[2]);
#pragma unroll
    for (int e = 0; e < 4; ++e) done[e] = 0.0f;
    __syncthreads();  // plane s + 1 is in its buffer; nobody reads plane s's buffer any more
  };

  float acc0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, acc1[4] = {0.0f, 0.0f, 0.0f, 0.0f}, acc2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // Output plane z accumulates in acc[z % 3]; unrolled by three so every array index is a constant.
  for (int s = 0; s < planes; s += 3) {
    step(s, acc0, acc2, acc1);
    if (s + 1 < planes) step(s + 1, acc1, acc0, acc2);
    if (s + 2 < planes) step(s + 2, acc2, acc1, acc0);
  }
}

}  // namespace

std::string stencil3_stream(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w,
                            const void* bias, void* out, void* stream) {
  return for_stencil3_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    return launch_stencil3<T>(stencil3_stream_plan, stencil3_stream_kernel<T>, kThreads, p, t, dgrad, src, w, bias,
                              out, stream, dgrad ? "streaming 3x3x3 depthwise stencil (grad-input)"
                                                 : "streaming 3x3x3 depthwise stencil (forward)");
  });
}

}  // namespace sm80
}  // namespace jaxconv3d
