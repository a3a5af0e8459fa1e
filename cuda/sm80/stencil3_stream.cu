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
#include "sm80/stencil3_stream.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

using namespace stream3;

constexpr int kRing = 2;  // 16-bit: source planes in shared memory, s (read) and s + 1 (written)
constexpr int kRow = 36;  // the 16-bit ring's row stride (floats)

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

// float32, launched as a programmatic dependent: plane s + 2's copies are issued before plane s is computed.
template <int V, int RY>
__global__ void __launch_bounds__(kThreads, 5) stencil3_ring_kernel(const Stencil3Args a) {
  __shared__ __align__(16) float ring[kRingStages][kStageFloats];
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  const StreamBlock<float, RY> b(a, stencil3_block<kZ, Strip<RY>::Y, kX>(a));
  const RingWindow<V, Strip<RY>::TY> win(&ring[0][0], b.s1, b.s2, a.sd[1], a.sd[2]);
  const char* chanb = reinterpret_cast<const char*>(b.chan);
  auto issue = [&](int s, auto stage) {
    if (s < b.planes) {
      const int gz = b.sz0 + s;
      const bool zin = unsigned(gz) < unsigned(a.sd[0]);
      win.template issue<decltype(stage)::value>(chanb + (zin ? i64(gz) * (b.sHW * 4) : i64(0)), zin);
    }
    cp_async_commit();
  };
  float acc[3][RY];  // output plane z accumulates in acc[z % 3], from the bias
#pragma unroll
  for (int k = 0; k < 3; ++k)
#pragma unroll
    for (int r = 0; r < RY; ++r) acc[k][r] = b.bv;
  const int col = RY * b.warp * kRingRow + win.e + threadIdx.x % 32;
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
  const StreamBlock<T, 4> b(a, stencil3_block<kZ, Strip16::Y, kX>(a));
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
      kernel = with_f32_rows(dgrad ? p.in[1] : p.out[1], [&](auto ry) -> void (*)(const Stencil3Args) {
        constexpr int RY = decltype(ry)::value;
        return wide_copies(p, {src}) ? stencil3_ring_kernel<4, RY> : stencil3_ring_kernel<1, RY>;
      });
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
