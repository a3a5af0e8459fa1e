// The stencil family's tensor-core forward and grad-input for 16-bit channels-last tensors (C a multiple of 8,
// 16-byte aligned): the depthwise 3x3x3 stencil as mma.sync with the channels on the product's N and K, so the
// staged channels-last planes feed ldmatrix as they lie (no transposes; sm80's NCDHW kernel puts W on K instead).
//   out[p][c] = sum over shifts s of  sum_c'  x[p + s][c'] B_s[c'][c],   B_s[c'][c] = tap_c[s] if c' == c else 0
// One m16n8k16 takes 16 output positions (a 4 x 4 tile: M) x 8 channels (N) through two (kh, kw) shifts of one
// source plane (K = 2 shifts x 8 channels; A rows are the tile's positions moved by the shift, straight from the
// staged plane by ldmatrix; B the two shifts' diagonal tap matrices, in registers); a plane's nine shifts are four
// m16n8k16 and one m16n8k8, and the same A fragments feed the three output planes the source plane meets (kd).
// 1 in 8 of B's entries is a tap: the tensor core does 8x the multiply-adds, ~10x fewer instructions than FFMA.
//   block   = 4 warps = 4 channel groups of 8 (32 channels, so a position's 64 bytes come in whole sectors) and a
//             patch of TR x TC tiles (4 TR rows x 4 TC columns) through a run of D planes; each source plane's
//             (4 TR + 2) x (4 TC + 2) x 32-channel box in shared memory, a channel group's rows PITCH 16-byte
//             units apart (PITCH = 4 mod 8: a tile's 2 x 4 ldmatrix rows hit every bank once), three planes in
//             flight (cp.async, zeros outside the volume), accumulators of the three output planes rotated by index;
//   grid    = one wave of blocks sharing every (patch, channel block, batch entry) column's planes evenly.
// Each output sums its source planes in order (kd = 0, 1, 2), each plane's shifts in order through the tensor
// core's fixed-order accumulation, from its bias: deterministic. A non-finite source value reaches the other
// channels of its group of 8 through B's zeros (0 x inf = NaN), as in sm80's tensor-core stencil; the float32 path
// keeps IEEE propagation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

#include "device_common.cuh"
#include "launch_common.cuh"
#include "plane_ring.cuh"
#include "sm80/mma16.cuh"
#include "stencil/geo.cuh"
#include "stencil/stencil.h"

namespace jaxconv3d {
namespace stencil {
namespace {

using sm80::ldmatrix_x2_shared;
using sm80::ldmatrix_x4_shared;
using sm80::mma;
using sm80::mma_k8;
using sm80::pack2;

constexpr int kGroup = 8;                 // channels a warp: the mma's N, and a 16-byte ldmatrix row
constexpr int kMinPlanes = 8;             // output planes a block at least
constexpr int kAhead = 1;                 // A fragments loaded this many (pair, tile) steps ahead

// A block: G channel groups (8 G channels, so a position's 16 G bytes come in whole sectors) x TR tile rows, a
// warp each (TC tiles of 4 x 4 output positions in a row), MINB blocks an SM; its patch of 4 TR x 4 TC output
// positions and the staged source box.
template <int G, int TR, int TC, int MINB>
struct Cfg {
  static constexpr int groups = G, trows = TR, tcols = TC, min_blocks = MINB;
  static constexpr int threads = 32 * G * TR, channels = kGroup * G;
  static constexpr int rows = 4 * TR, cols = 4 * TC;
  static constexpr int srows = rows + 2, scols = cols + 2;
  static constexpr int pitch = scols + (12 - scols % 8) % 8;  // >= scols, = 4 mod 8 (16-byte units)
  static constexpr int group_bytes = srows * pitch * 16;       // a channel group's staged plane
  static constexpr int stage_bytes = G * group_bytes;
  static constexpr int copies = srows * scols * G;             // 16-byte copies a plane
  static constexpr int nq = (copies + threads - 1) / threads;
  // a finished output plane staged for whole position runs: [group][row][opitch] 16-byte units, two buffers
  static constexpr int opitch = cols + (12 - cols % 8) % 8;   // = 4 mod 8: a tile's 8 rows of a store in distinct banks
  static constexpr int ogroup_bytes = rows * opitch * 16;
  static constexpr int obuf_bytes = G * ogroup_bytes;
  static constexpr int outs = rows * cols * G;                 // 16-byte stores a plane
  static constexpr int no = (outs + threads - 1) / threads;
  static constexpr int smem_bytes = kRingStages * stage_bytes + 2 * obuf_bytes;
  static_assert(pitch % 8 == 4 && pitch >= scols && opitch % 8 == 4, "ldmatrix rows of a tile in distinct banks");
};
using Wide = Cfg<4, 1, 7, 2>;    // 4 x 28 positions, 32 channels
using Narrow = Cfg<4, 2, 4, 1>;  // 8 x 16 positions, 32 channels

// B's diagonal for a lane: element (k, n) of an 8 x 8 block is tap_n where k == n; a lane holds k = 2 (lane % 4)
// + {0, 1}, n = lane / 4, so a pair (lo, hi) with the tap in the half where k == n, zeros elsewhere.
template <typename T>
__device__ __forceinline__ unsigned diag_pair(float tap, bool mine, bool hi) {
  return pack2(mine && !hi ? tap : 0.0f, mine && hi ? tap : 0.0f, static_cast<T*>(nullptr));
}

// f(IC<0>{}) .. f(IC<N - 1>{}) in order: loop indices as compile-time constants (shared-memory offsets become the
// instructions' immediates instead of registers).
template <typename F, int... I>
__device__ __forceinline__ void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(IC<I>{}), ...);
}
template <int N, typename F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

// ldmatrix (.x4, .x2) and a 32-bit shared store at a register base plus an immediate offset.
template <int OFF>
__device__ __forceinline__ void ldsm_x4(unsigned (&a)[4], unsigned base) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4+%5];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(base), "n"(OFF));
}
template <int OFF>
__device__ __forceinline__ void ldsm_x2(unsigned (&a)[2], unsigned base) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2+%3];\n" : "=r"(a[0]), "=r"(a[1])
               : "r"(base), "n"(OFF));
}
template <int OFF>
__device__ __forceinline__ void sts32(unsigned base, unsigned v) {
  asm volatile("st.shared.u32 [%0+%1], %2;\n" ::"r"(base), "n"(OFF), "r"(v) : "memory");
}

template <typename T, typename P>
__global__ void __launch_bounds__(P::threads, P::min_blocks)
    depthwise3_mma_kernel(const T* __restrict__ src, const T* __restrict__ w, const T* __restrict__ bias,
                          T* __restrict__ out, const Geo g) {
  constexpr int G = P::groups, TC = P::tcols, kThreads = P::threads;
  extern __shared__ __align__(128) unsigned char ring[];  // kRingStages source stages, then two output buffers
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, cg_w = warp % G, tr = warp / G;
  const int gq = lane >> 2, q = lane & 3;  // the accumulator's row g (+ 8) and channel pair 2 q, 2 q + 1
  const unsigned ring0 = unsigned(__cvta_generic_to_shared(ring));
  // ldmatrix: lane l names row (l % 8) + 8 ((l / 8) % 2) of A (tile position r = m / 4, c = m % 4) in the shift of
  // K half l / 16; its offset in the warp's group plane and tile row, before the shift and the tile column
  const int am = (lane & 7) + 8 * ((lane >> 3) & 1);
  const unsigned a_lane = unsigned(cg_w * P::group_bytes + ((4 * tr + (am >> 2)) * P::pitch + (am & 3)) * 16);
  auto shift_bytes = [](int s) { return unsigned(((s / 3) * P::pitch + s % 3) * 16); };
  unsigned a_base[5];  // this lane's address in stage 0, tile (0, 0) for pair j: shift 2 j (K half 0) or 2 j + 1
#pragma unroll
  for (int j = 0; j < 4; ++j) a_base[j] = ring0 + a_lane + shift_bytes(2 * j + (lane >> 4));
  a_base[4] = ring0 + a_lane + shift_bytes(8);  // the ninth shift (m16n8k8: lanes 0-15)
  const i64 s_d = i64(g.sd[1]) * g.sd[2] * g.C, o_d = i64(g.od[1]) * g.od[2] * g.C;

  for_segments(blockIdx.x, g.per, g.columns, g.od[0], [&](i64 column, int z, int len) {
    const Place pl = place(g, column, g.cgroups, P::cols, P::rows, P::channels);
    const int cw = pl.c0 + cg_w * kGroup;  // the warp's first channel
    const bool live = cw < g.C;            // C % 8 == 0: a group is wholly inside or outside

    // B fragments: kd's four shift pairs (m16n8k16: 2 registers) and its ninth shift (m16n8k8: 1)
    unsigned b16[3][4][2], b8[3];
    {
      const bool mine = live && (gq >> 1) == q, hi = gq & 1;
      const T* wc = w + i64(mine ? cw + gq : 0) * 27;
      auto tap = [&](int t) { return mine ? cvt<float>(wc[g.flip ? 26 - t : t]) : 0.0f; };
#pragma unroll
      for (int kd = 0; kd < 3; ++kd) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          b16[kd][j][0] = diag_pair<T>(tap(kd * 9 + 2 * j), mine, hi);
          b16[kd][j][1] = diag_pair<T>(tap(kd * 9 + 2 * j + 1), mine, hi);
        }
        b8[kd] = diag_pair<T>(tap(kd * 9 + 8), mine, hi);
      }
    }
    float bv[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) bv[e] = live && bias != nullptr ? cvt<float>(bias[cw + 2 * q + e]) : 0.0f;

    // copies: q = tid + threads k is channel group q % G of box position q / G; its offset in the source plane (0
    // outside: nothing is read there), its shared offset in a stage, and whether it lies inside, fixed per column
    unsigned off[P::nq], dst[P::nq], inside = 0;
#pragma unroll
    for (int k = 0; k < P::nq; ++k) {
      const int cq = int(threadIdx.x) + kThreads * k, cg = cq % G, pos = cq / G;
      const int by = pos / P::scols, bx = pos % P::scols;
      const int sy = pl.oy0 - g.P[1] + by, sx = pl.ox0 - g.P[2] + bx, ch = pl.c0 + cg * kGroup;
      const bool in = cq < P::copies && unsigned(sy) < unsigned(g.sd[1]) && unsigned(sx) < unsigned(g.sd[2]) &&
                      ch < g.C;
      off[k] = in ? unsigned((sy * g.sd[2] + sx) * g.C + ch) : 0u;  // < 2^31: accepts() bounds H x W x C
      dst[k] = unsigned(cg * P::group_bytes + (by * P::pitch + bx) * 16);
      inside |= unsigned(in) << k;
    }
    const T* sn = src + pl.n * i64(g.sd[0]) * s_d;
    auto plane_in = [&](int js) { return unsigned(z - g.P[0] + js) < unsigned(g.sd[0]); };
    auto issue = [&](int js, auto stage) {
      if (js < len + 2 && plane_in(js)) {
        const T* sp = sn + i64(z - g.P[0] + js) * s_d;
        const unsigned base = ring0 + unsigned(decltype(stage)::value * P::stage_bytes);
#pragma unroll
        for (int k = 0; k < P::nq; ++k)
          if (k + 1 < P::nq || int(threadIdx.x) + kThreads * k < P::copies)
            cp_async_shared<16>(base + dst[k], sp + off[k], inside >> k & 1u);
      }
      cp_async_commit();
    };

    // this lane's accumulators: tile positions m = gq and gq + 8 (rows gq / 4 and 2 + gq / 4, column gq % 4),
    // channels 2 q, 2 q + 1 of the warp's group; their shared offset in an output buffer (tile (0, 0), half 0)
    const unsigned obuf0 = ring0 + unsigned(kRingStages * P::stage_bytes);
    const unsigned o_lane0 =
        obuf0 + unsigned(cg_w * P::ogroup_bytes + ((4 * tr + (gq >> 2)) * P::opitch + (gq & 3)) * 16 + 4 * q);
    const unsigned o_lane1 = o_lane0 + unsigned(P::obuf_bytes);
    // the copies out: q = tid + threads k is channel group q % G of patch position q / G: its shared offset in a
    // buffer, its offset in an output plane, and whether it lies inside (position in the plane, group below C)
    unsigned o_src[P::no], o_dst[P::no], o_in = 0;
#pragma unroll
    for (int k = 0; k < P::no; ++k) {
      const int cq = int(threadIdx.x) + kThreads * k, cg = cq % G, pos = cq / G;
      const int r = pos / P::cols, c = pos % P::cols, oy = pl.oy0 + r, ox = pl.ox0 + c, ch = pl.c0 + cg * kGroup;
      const bool in = cq < P::outs && oy < g.od[1] && ox < g.od[2] && ch < g.C;
      o_src[k] = unsigned(cg * P::ogroup_bytes + (r * P::opitch + c) * 16);
      o_dst[k] = in ? unsigned((oy * g.od[2] + ox) * g.C + ch) : 0u;  // < 2^31: accepts() bounds H x W x C
      o_in |= unsigned(in) << k;
    }
    T* on = out + pl.n * i64(g.od[0]) * o_d;
    // output plane `plane` from buffer `b` to memory, 16 bytes a thread and copy
    auto copy_out = [&](int plane, int b) {
      T* op = on + i64(plane) * o_d;
      const unsigned base = obuf0 + unsigned(b * P::obuf_bytes);
#pragma unroll
      for (int k = 0; k < P::no; ++k)
        if (o_in >> k & 1u) {
          uint4 v;
          asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                       : "r"(base + o_src[k]) : "memory");
          *reinterpret_cast<uint4*>(op + o_dst[k]) = v;
        }
    };

    float acc[3][TC][4];
#pragma unroll
    for (int s = 0; s < 3; ++s)
#pragma unroll
      for (int t = 0; t < TC; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[s][t][i] = bv[i & 1];

    // each step: the previous step's finished plane leaves its buffer (after the ring's barrier: all four warps
    // staged it), the source plane's products, then the plane finished now staged in the other buffer
    plane_ring(len, [] { __syncthreads(); }, issue, [&](int js, auto phase) {
      constexpr int PH = decltype(phase)::value;  // js % 3: the stage and the accumulator rotation
      if (js >= 3) copy_out(z + js - 3, (js - 3) & 1);
      if (live && plane_in(js)) {
        // (shift pair j, tile t) in order, each step's A loaded kAhead steps before its products: consecutive
        // mma.sync go to different tiles' accumulators. Each accumulator still takes pairs 0..3 then the ninth shift.
        constexpr int kSteps = 5 * TC;
        unsigned a[kAhead + 1][4];
        auto load = [&](auto ic) {  // step i's A into slot i % (kAhead + 1)
          constexpr int i = decltype(ic)::value, j = i / TC, t = i % TC;
          constexpr int off = PH * P::stage_bytes + t * 4 * 16;
          unsigned(&d)[4] = a[i % (kAhead + 1)];
          if constexpr (j < 4) {
            ldsm_x4<off>(d, a_base[j]);
          } else {
            unsigned h[2];
            ldsm_x2<off>(h, a_base[4]);
            d[0] = h[0];
            d[1] = h[1];
          }
        };
        static_for<kAhead>(load);
        static_for<kSteps>([&](auto ic) {
          constexpr int i = decltype(ic)::value, j = i / TC, t = i % TC;
          if constexpr (i + kAhead < kSteps) load(IC<i + kAhead>{});
          if constexpr (j < 4) {
#pragma unroll
            for (int kd = 0; kd < 3; ++kd)
              mma(acc[(PH - kd + 3) % 3][t], a[i % (kAhead + 1)], b16[kd][j], static_cast<T*>(nullptr));
          } else {
            const unsigned h[2] = {a[i % (kAhead + 1)][0], a[i % (kAhead + 1)][1]};
#pragma unroll
            for (int kd = 0; kd < 3; ++kd) mma_k8(acc[(PH - kd + 3) % 3][t], h, b8[kd], static_cast<T*>(nullptr));
          }
        });
      }
      // output plane js - 2 is complete: staged (js >= 2; it leaves at the next step), then its slot starts over at
      // the bias for plane js + 1
      constexpr int SO = (PH + 1) % 3;
      if (js >= 2) {
        const unsigned ob = (js - 2) & 1 ? o_lane1 : o_lane0;
        static_for<2 * TC>([&](auto ic) {
          constexpr int t = decltype(ic)::value / 2, hh = decltype(ic)::value % 2;
          sts32<(2 * hh * P::opitch + 4 * t) * 16>(
              ob, pack2(acc[SO][t][2 * hh], acc[SO][t][2 * hh + 1], static_cast<T*>(nullptr)));
        });
      }
#pragma unroll
      for (int t = 0; t < TC; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[SO][t][i] = bv[i & 1];
    });
    __syncthreads();  // every warp staged the last plane
    copy_out(z + len - 1, (len - 1) & 1);
  });
}

template <typename T, typename P>
std::string launch(Geo g, i64 batch, const T* s, const T* w, const T* b, T* o, cudaStream_t st) {
  static std::atomic<int> per_sm[64][1];
  static std::atomic<uint64_t> smem_set{0};
  if (allow_smem(depthwise3_mma_kernel<T, P>, P::smem_bytes, smem_set) != cudaSuccess) {
    cudaGetLastError();
    return "stencil: cannot give the tensor-core stencil its shared memory";
  }
  const int slots = resident_blocks(depthwise3_mma_kernel<T, P>, P::threads, P::smem_bytes, 0, per_sm) * sm_count();
  if (slots <= 0) {
    cudaGetLastError();
    return "stencil: cannot read how many tensor-core stencil blocks the device holds";
  }
  g.wstrips = ceil_div(g.od[2], P::cols);
  g.hblocks = ceil_div(g.od[1], P::rows);
  g.cgroups = ceil_div(g.C, P::channels);
  g.columns = i64(g.wstrips) * g.hblocks * g.cgroups * batch;
  const i64 planes = g.columns * g.od[0];
  const i64 blocks = std::min<i64>(slots, (planes + kMinPlanes - 1) / kMinPlanes);
  g.per = (planes + blocks - 1) / blocks;
  depthwise3_mma_kernel<T, P><<<unsigned(blocks), P::threads, P::smem_bytes, st>>>(s, w, b, o, g);
  return "";
}

template <typename T>
std::string run(const ConvProblem& p, bool dgrad, const void* src, const void* w, const void* bias, void* out,
                cudaStream_t st) {
  const Geo g = geo_of(p, dgrad, 4);
  const T* s = static_cast<const T*>(src);
  const T* wt = static_cast<const T*>(w);
  const T* bs = static_cast<const T*>(bias);
  T* o = static_cast<T*>(out);
  const std::string err = mma_patch_wide(g.od[1], g.od[2]) ? launch<T, Wide>(g, p.batch, s, wt, bs, o, st)
                                                          : launch<T, Narrow>(g, p.batch, s, wt, bs, o, st);
  if (!err.empty()) return err;
  return launch_error(dgrad ? "tensor-core stencil grad-input" : "tensor-core stencil forward");
}

}  // namespace

std::string mma_stencil(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                        void* out, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t == DType::kBF16) return run<__nv_bfloat16>(p, dgrad, src, w, bias, out, st);
  if (t == DType::kF16) return run<__half>(p, dgrad, src, w, bias, out, st);
  return "stencil: the tensor-core stencil takes bfloat16 and float16";
}

}  // namespace stencil
}  // namespace jaxconv3d
