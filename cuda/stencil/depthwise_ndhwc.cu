// The stencil family's kernels (see stencil.h): forward, grad-input and grad-weight of a depthwise 3x3x3 layer
// (stride 1, dilation 1, channel multiplier 1) on NDHWC activations and a (C, 3, 3, 3, 1) filter. Every sum runs in
// one fixed order: deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <initializer_list>
#include <cstdint>
#include <type_traits>

#include "device_common.cuh"
#include "launch_common.cuh"
#include "hopper/hopper_conv.h"
#include "plane_ring.cuh"
#include "stencil/geo.cuh"
#include "stencil/stencil.h"

namespace jaxconv3d {
namespace stencil {
namespace {

// Zeroes a float array of any rank (a register array: every index compile-time).
template <typename A>
__device__ __forceinline__ void zero(A& a) {
  if constexpr (std::is_array<A>::value) {
#pragma unroll
    for (auto& e : a) zero(e);
  } else {
    a = 0.0f;
  }
}

// A lane's VEC consecutive channels of one shared-memory element as raw bits (VEC = 2: one 32-bit word; zero
// bits read +0), unpacked to floats; and stored back rounded.
template <typename T, int VEC>
struct Elem {
  using Word = typename std::conditional<VEC == 2 || sizeof(T) == 4, unsigned, unsigned short>::type;
  static __device__ __forceinline__ unsigned load_shared(const T* p) { return unsigned(*reinterpret_cast<const Word*>(p)); }
  static __device__ __forceinline__ void unpack(unsigned b, float (&f)[VEC]) {
    if constexpr (std::is_same<T, float>::value) {
      f[0] = __uint_as_float(b);
    } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      f[0] = __uint_as_float(b << 16);
      if constexpr (VEC == 2) f[1] = __uint_as_float(b & 0xffff0000u);
    } else {
      f[0] = __half2float(__ushort_as_half((unsigned short)(b & 0xffffu)));
      if constexpr (VEC == 2) f[1] = __half2float(__ushort_as_half((unsigned short)(b >> 16)));
    }
  }
  static __device__ __forceinline__ void store(T* p, const float (&f)[VEC]) {  // round to nearest even
    if constexpr (VEC == 1) {
      *p = cvt<T>(f[0]);
    } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
      *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(f[0], f[1]);
    } else {
      *reinterpret_cast<__half2*>(p) = __floats2half2_rn(f[0], f[1]);
    }
  }
};

// Calls f(kd, kw, r, e) for every tap depth kd, tap column kw, output r of a thread's run and channel e of its VEC:
// the order every sum of the family adds its products in.
template <int RUN, int VEC, typename F>
__device__ __forceinline__ void each_product(F&& f) {
#pragma unroll
  for (int kd = 0; kd < 3; ++kd)
#pragma unroll
    for (int kw = 0; kw < 3; ++kw)
#pragma unroll
      for (int r = 0; r < RUN; ++r)
#pragma unroll
        for (int e = 0; e < VEC; ++e) f(kd, kw, r, e);
}

// A lane's VEC channels of N consecutive elements of a shared-memory row of CH-channel elements, as floats.
template <typename T, int VEC, int N, int CH>
__device__ __forceinline__ void read_row(const T* p, float (&v)[N][VEC]) {
#pragma unroll
  for (int i = 0; i < N; ++i) Elem<T, VEC>::unpack(Elem<T, VEC>::load_shared(p + i * CH), v[i]);
}

// A thread's part of the stencil: its VEC channels' 27 taps (flipped for grad-input) and bias, and the
// accumulators of RUN outputs of the three output planes a source plane meets. Accumulator slot = output plane
// mod 3, so a plane loop unrolled by 3 finds every slot at a compile-time register (nothing shifted). Each output
// sums its taps in the order (kd, kh, kw): deterministic, the same order in every kernel of the family.
template <typename T, int VEC, int RUN>
struct Lane {
  float tap[27][VEC], bv[VEC];
  float acc[3][RUN][VEC];

  __device__ __forceinline__ void init(const Geo& g, const T* w, const T* bias, int c, bool live) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
#pragma unroll
      for (int t = 0; t < 27; ++t) tap[t][e] = live ? cvt<float>(w[i64(c + e) * 27 + (g.flip ? 26 - t : t)]) : 0.0f;
      bv[e] = live && bias != nullptr ? cvt<float>(bias[c + e]) : 0.0f;
    }
    zero(acc);
  }
  // Source row kh of plane js (js % 3 == PH): RUN + 2 values into the three output planes js - kd.
  template <int PH>
  __device__ __forceinline__ void row(int kh, const float (&v)[RUN + 2][VEC]) {
    each_product<RUN, VEC>([&](int kd, int kw, int r, int e) {
      float& a = acc[(PH - kd + 3) % 3][r][e];
      a = fmaf(tap[kd * 9 + kh * 3 + kw][e], v[r + kw][e], a);
    });
  }
  // After source plane js (js % 3 == PH): output plane js - 2 is complete; store it (when js >= 2, into `orow`, the
  // thread's output row of that plane at W position 0) and clear its slot for plane js + 1. Strips wholly inside
  // the row store without a check each.
  template <int PH>
  __device__ __forceinline__ void retire(bool store, T* orow, int ox0, int width, int C) {
    constexpr int SO = (PH + 1) % 3;
    if (store) {
      T* p = orow + i64(ox0) * C;
      const bool whole = ox0 + RUN <= width;
#pragma unroll
      for (int r = 0; r < RUN; ++r, p += C) {
        if (whole || ox0 + r < width) {
          float f[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) f[e] = acc[SO][r][e] + bv[e];
          Elem<T, VEC>::store(p, f);
        }
      }
    }
    zero(acc[SO]);
  }
};

// ---- staging: boxes of source planes copied into shared memory, kStages planes in flight.
constexpr int kThreads = kLanes * kRows;
constexpr int kStages = kRingStages;

// A ROWS x COLS x CH box of one plane (rows from y0, columns from x0, channels from c0 of an H x W x C plane),
// copied by a block's threads into shared memory [ROWS][COLS][CH]; elements outside the plane or past C read zero
// (the zero padding). CB: bytes a copy moves with cp.async (16, or 4 where rows are not 16-byte aligned), or 0: one
// element at a time through registers (16-bit rows of an odd C, or tensors not 4-byte aligned). A thread's copies
// are q = threadIdx.x + kThreads k; where they are few, their offsets and in-plane bits are worked out once.
template <typename T, int CB, int ROWS, int COLS, int CH>
struct Box {
  static constexpr int PER = CB == 0 ? 1 : CB / int(sizeof(T));  // channels a copy moves
  static constexpr int COPIES = ROWS * COLS * (CH / PER);
  static constexpr int NQ = (COPIES + kThreads - 1) / kThreads;
  static constexpr bool kHeld = NQ <= 4;
  i64 off[kHeld ? NQ : 1];
  unsigned held = 0;
  int y0, x0, c0, H, W, C;

  __device__ __forceinline__ bool locate(int q, i64& o) const {
    const int k = q % (CH / PER), pos = q / (CH / PER);
    const int sy = y0 + pos / COLS, sx = x0 + pos % COLS, ch = c0 + k * PER;
    const bool in = unsigned(sy) < unsigned(H) && unsigned(sx) < unsigned(W) && ch < C;
    o = in ? (i64(sy) * W + sx) * C + ch : 0;
    return in;
  }
  __device__ __forceinline__ void init(int y, int x, int c, int h, int w, int channels) {
    y0 = y, x0 = x, c0 = c, H = h, W = w, C = channels;
    held = 0;
    if constexpr (kHeld) {
#pragma unroll
      for (int k = 0; k < NQ; ++k) {
        const int q = threadIdx.x + k * kThreads;
        off[k] = 0;
        if (q < COPIES && locate(q, off[k])) held |= 1u << k;
      }
    }
  }
  // The box of `plane` (a pointer to its element (0, 0, 0), inside the tensor; `live`: the plane lies inside the
  // volume) into `dst`. Copies outside read nothing but still name an address inside the tensor (offset 0).
  __device__ __forceinline__ void copy(T* dst, const T* plane, bool live) const {
    auto one = [&](int q, bool in, i64 o) {
      if constexpr (CB == 0)
        dst[q] = in ? plane[o] : cvt<T>(0.0f);
      else
        cp_async<CB>(reinterpret_cast<char*>(dst) + q * CB, plane + o, in);
    };
    if constexpr (kHeld) {
#pragma unroll
      for (int k = 0; k < NQ; ++k) {
        const int q = threadIdx.x + k * kThreads;
        if (k + 1 < NQ || q < COPIES) one(q, live && (held >> k & 1u), off[k]);
      }
    } else {
#pragma unroll 1
      for (int q = threadIdx.x; q < COPIES; q += kThreads) {
        i64 o;
        const bool in = locate(q, o) && live;
        one(q, in, o);
      }
    }
  }
};

// One segment's plane pipeline (plane_ring.cuh): the block's stages, so a block-wide barrier each plane.
template <typename Issue, typename Body>
__device__ __forceinline__ void pipeline(int len, Issue&& issue, Body&& body) {
  plane_ring(len, [] { __syncthreads(); }, issue, body);
}

// ---- forward and grad-input. A thread: channels c0 + VEC lane .. + VEC - 1, output row oy0 + warp, outputs
// ox0 .. ox0 + RUN - 1 of each plane of a segment; a column is one (W strip, H block, channel group, batch entry)
// and all its D planes. The grid is one wave of blocks sharing the columns' planes evenly (they end together).
// Each source plane's (4 + 2) rows x (RUN + 2) columns x CH channels come through shared memory; every warp reads
// its three rows from there.
// Blocks an SM the forward / grad-input kernel is compiled for. float32 at five (96 registers, no spill): more planes
// in flight than at four (128 registers), measured 81.8 -> 72.7 us on the suite layer (H100, perf.md v21); six (80
// registers) measured 82.9 (smaller shares a block: more segments, each with its two halo planes, and barrier
// stalls). The 16-bit pair kernels need ~126 registers and stay at four (five spill).
template <typename T>
constexpr int stencil_blocks() { return sizeof(T) == 4 ? 5 : 4; }

template <typename T, int VEC, int RUN, int CB>
__global__ void __launch_bounds__(kThreads, stencil_blocks<T>())
    depthwise3_kernel(const T* __restrict__ src, const T* __restrict__ w, const T* __restrict__ bias,
                      T* __restrict__ out, const Geo g) {
  constexpr int CH = kLanes * VEC, COLS = RUN + 2, ROWS = kRows + 2;
  __shared__ __align__(16) T stage[kStages][ROWS][COLS][CH];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 s_h = i64(g.sd[2]) * g.C, s_d = i64(g.sd[1]) * s_h;
  const i64 o_h = i64(g.od[2]) * g.C, o_d = i64(g.od[1]) * o_h;

  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  for_segments(blockIdx.x, g.per, g.columns, g.od[0], [&](i64 column, int z, int len) {
    const Place pl = place(g, column, g.cgroups, RUN, kRows, CH);
    const int c = pl.c0 + lane * VEC, oy = pl.oy0 + warp;
    const bool live = c < g.C && oy < g.od[1];  // computes and stores (every thread copies and synchronises)
    Lane<T, VEC, RUN> ln;
    ln.init(g, w, bias, live ? c : 0, live);
    const T* sn = src + pl.n * i64(g.sd[0]) * s_d;
    T* orow0 = out + pl.n * i64(g.od[0]) * o_d + i64(oy) * o_h + c;
    Box<T, CB, ROWS, COLS, CH> box;
    box.init(pl.oy0 - g.P[1], pl.ox0 - g.P[2], pl.c0, g.sd[1], g.sd[2], g.C);

    auto issue = [&](int js, auto stage_index) {  // source plane js into its stage
      const int sz = z - g.P[0] + js;
      const bool in = js < len + 2 && unsigned(sz) < unsigned(g.sd[0]);
      box.copy(&stage[decltype(stage_index)::value][0][0][0], sn + i64(in ? sz : 0) * s_d, in);
      cp_async_commit();
    };
    pipeline(len, issue, [&](int js, auto phase) {
      constexpr int PH = decltype(phase)::value;  // js % 3: the stage and the accumulator rotation
      if (live) {
#pragma unroll
        for (int kh = 0; kh < 3; ++kh) {
          float v[COLS][VEC];
          read_row<T, VEC, COLS, CH>(&stage[PH][warp + kh][0][lane * VEC], v);
          ln.template row<PH>(kh, v);
        }
      }
      ln.template retire<PH>(live && js >= 2, orow0 + i64(z + js - 2) * o_d, pl.ox0, g.od[2], g.C);
    });
  });
  pdl_release();
}

// ---- grad-weight: dw[c][kd][kh][kw] = sum over positions of dy[o] x[o + tap - pad]. A block owns one channel
// group and a share of its (W strip, H block, batch entry) columns' planes; a thread sums its channels' 27 taps
// over its row and strip of every dy plane it meets, x planes and dy planes both staged (x with its halo); dy plane
// js - kd stays in registers (slot (js - kd) mod 3) while x plane js is in. Each warp's sums (float32: the block's
// four warps' sums added in order) go to a slot of the workspace and a second kernel adds the slots up in a fixed
// order: deterministic.
template <typename T, int VEC, int RUN, int CB>
__global__ void __launch_bounds__(kThreads, stencil_blocks<T>())
    depthwise3_wgrad_kernel(const T* __restrict__ x, const T* __restrict__ dy, float* __restrict__ part, const Geo g) {
  constexpr int CH = kLanes * VEC, COLS = RUN + 2, ROWS = kRows + 2;
  __shared__ __align__(16) T xs[kStages][ROWS][COLS][CH];
  __shared__ __align__(16) T ds[kStages][kRows][RUN][CH];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int cg = int(blockIdx.x % unsigned(g.cgroups)), b = int(blockIdx.x / unsigned(g.cgroups));
  const int c0 = cg * CH, c = c0 + lane * VEC;
  const i64 s_d = i64(g.sd[1]) * g.sd[2] * g.C, o_d = i64(g.od[1]) * g.od[2] * g.C;

  float acc[27][VEC];
  zero(acc);

  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  for_segments(b, g.per, g.columns, g.od[0], [&](i64 column, int z, int len) {
    const Place pl = place(g, column, 1, RUN, kRows, CH);
    const int ox0 = pl.ox0, oy0 = pl.oy0;
    const i64 n = pl.n;
    const bool live = c < g.C && oy0 + warp < g.od[1];
    const T* xn = x + n * i64(g.sd[0]) * s_d;
    const T* dn = dy + n * i64(g.od[0]) * o_d;
    Box<T, CB, ROWS, COLS, CH> xb;
    xb.init(oy0 - g.P[1], ox0 - g.P[2], c0, g.sd[1], g.sd[2], g.C);
    Box<T, CB, kRows, RUN, CH> db;
    db.init(oy0, ox0, c0, g.od[1], g.od[2], g.C);
    float dv[3][RUN][VEC];  // dy planes js, js - 1, js - 2 (those before the segment: zeros)
    zero(dv);

    auto issue = [&](int js, auto stage_index) {  // x plane js and dy plane js (zeros past the segment)
      constexpr int S = decltype(stage_index)::value;
      const int xz = z - g.P[0] + js;
      const bool xin = js < len + 2 && unsigned(xz) < unsigned(g.sd[0]);
      xb.copy(&xs[S][0][0][0], xn + i64(xin ? xz : 0) * s_d, xin);
      db.copy(&ds[S][0][0][0], dn + i64(js < len ? z + js : 0) * o_d, js < len);
      cp_async_commit();
    };
    pipeline(len, issue, [&](int, auto phase) {
      constexpr int PH = decltype(phase)::value;
      if (live) {
        read_row<T, VEC, RUN, CH>(&ds[PH][warp][0][lane * VEC], dv[PH]);
#pragma unroll
        for (int kh = 0; kh < 3; ++kh) {
          float v[COLS][VEC];
          read_row<T, VEC, COLS, CH>(&xs[PH][warp + kh][0][lane * VEC], v);
          each_product<RUN, VEC>([&](int kd, int kw, int r, int e) {
            float& a = acc[kd * 9 + kh * 3 + kw][e];
            a = fmaf(dv[(PH - kd + 3) % 3][r][e], v[r + kw][e], a);
          });
        }
      }
    });
  });

  pdl_release();
  if constexpr (wgrad_slots(sizeof(T)) == kRows) {  // each warp's sums to its own slot (wgrad_slots)
    float* mine = part + ((i64(cg) * (gridDim.x / g.cgroups) + b) * kRows + warp) * 27 * CH + lane * VEC;
#pragma unroll
    for (int t = 0; t < 27; ++t)
#pragma unroll
      for (int e = 0; e < VEC; ++e) mine[t * CH + e] = acc[t][e];
  } else {
    // float32: the block's four warps summed in order (warp 0 + 1 + 2 + 3) through the x stages, half the taps at a
    // time (the segment loop ended on a barrier), then warp 0 writes the block's slot
    constexpr int kHalf = 14;
    static_assert((kRows - 1) * kHalf * CH * sizeof(float) <= sizeof(xs), "the warps' sums fit the x stages");
    float* red = reinterpret_cast<float*>(&xs[0][0][0][0]);
    float* mine = part + (i64(cg) * (gridDim.x / g.cgroups) + b) * 27 * CH + lane * VEC;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (warp > 0) {
#pragma unroll
        for (int t = h * kHalf; t < min(27, (h + 1) * kHalf); ++t)
#pragma unroll
          for (int e = 0; e < VEC; ++e) red[((warp - 1) * kHalf + t - h * kHalf) * CH + lane * VEC + e] = acc[t][e];
      }
      __syncthreads();
      if (warp == 0) {
#pragma unroll
        for (int t = h * kHalf; t < min(27, (h + 1) * kHalf); ++t)
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            float sum = acc[t][e];
#pragma unroll
            for (int k = 0; k < kRows - 1; ++k) sum += red[(k * kHalf + t - h * kHalf) * CH + lane * VEC + e];
            mine[t * CH + e] = sum;
          }
      }
      __syncthreads();
    }
  }
}

// dw[c][t] = the sum of the partial sums of c's group: its slots k = 0 .. K - 1 (blocks x warps a block) dealt to
// kSlices threads (slice j: k = j, j + kSlices, ... in order), the slices then added in order: a fixed order.
// A block: one tap, 32 channels.
constexpr int kSlices = 8;

template <typename T>
__global__ void __launch_bounds__(32 * kSlices) depthwise3_wgrad_reduce_kernel(const float* __restrict__ part,
                                                                              T* __restrict__ dw, int C, int CH,
                                                                              int K) {
  __shared__ float sums[kSlices][32];
  pdl_wait();  // launched as a dependent of the kernel that wrote `part`
  pdl_release();
  const int t = int(blockIdx.x % 27u), c = int(blockIdx.x / 27u) * 32 + (threadIdx.x & 31);
  const int slice = threadIdx.x >> 5;
  float s = 0.0f;
  if (c < C) {
    const float* p = part + i64(c / CH) * K * 27 * CH + t * CH + c % CH;
    for (int k = slice; k < K; k += kSlices) s += p[i64(k) * 27 * CH];
  }
  sums[slice][threadIdx.x & 31] = s;
  __syncthreads();
  if (slice == 0 && c < C) {
#pragma unroll
    for (int j = 1; j < kSlices; ++j) s += sums[j][threadIdx.x];
    dw[i64(c) * 27 + t] = cvt<T>(s);
  }
}

// ---- host side: the shape of a launch.

// How a launch reads its tensors: VEC channels a lane, CB bytes a copy (see Box).
struct Access {
  int vec, cb;
};
Access access_for(int C, size_t es, std::initializer_list<const void*> reads, std::initializer_list<const void*> all) {
  uintptr_t r = 0, a = 0;
  for (const void* p : reads) r |= reinterpret_cast<uintptr_t>(p);
  for (const void* p : all) a |= reinterpret_cast<uintptr_t>(p);
  const bool words = (C * es) % 4 == 0 && (a & 3) == 0;  // every element run 4-byte aligned
  const bool rows16 = (C * es) % 16 == 0 && (r & 15) == 0;
  if (es == 4) return {1, rows16 ? 16 : 4};
  if (!words) return {1, 0};  // 16-bit, odd C or unaligned: element copies
  return {2, rows16 ? 16 : 4};
}

// Forward / grad-input: one wave of blocks over every column's planes, at least kMinPlanes planes a block.

template <typename T, int VEC, int RUN, int CB>
std::string launch_fwd(Geo g, i64 batch, const T* s, const T* w, const T* b, T* o, cudaStream_t st) {
  static std::atomic<int> per_sm[64][1];
  const int slots = resident_blocks(depthwise3_kernel<T, VEC, RUN, CB>, kThreads, 0, 0, per_sm) * sm_count();
  if (slots <= 0) {
    cudaGetLastError();
    return "stencil: cannot read how many blocks the device holds";
  }
  g.wstrips = ceil_div(g.od[2], RUN);
  g.cgroups = ceil_div(g.C, kLanes * VEC);
  g.columns = i64(g.wstrips) * g.hblocks * g.cgroups * batch;
  const i64 planes = g.columns * g.od[0];
  const i64 blocks = std::min<i64>(slots, (planes + kMinPlanes - 1) / kMinPlanes);
  g.per = (planes + blocks - 1) / blocks;
  launch_dependent(depthwise3_kernel<T, VEC, RUN, CB>, dim3(unsigned(blocks)), dim3(kThreads), 0, st, s, w, b, o, g);
  return "";
}

// Calls f(IC<VEC>, IC<RUN>, IC<CB>) with the kernel instantiation that reads tensors as `a` says, RUN = run_for:
// 16-bit pairs (4 outputs a thread) or element copies, float32 16- or 4-byte copies.
template <typename T, typename F>
std::string with_variant(const Access& a, int run, F&& f) {
  if constexpr (sizeof(T) == 2) {
    if (a.vec == 2) return a.cb == 16 ? f(IC<2>{}, IC<4>{}, IC<16>{}) : f(IC<2>{}, IC<4>{}, IC<4>{});
    return run == 7 ? f(IC<1>{}, IC<7>{}, IC<0>{}) : f(IC<1>{}, IC<8>{}, IC<0>{});
  } else {
    if (a.cb == 16) return run == 7 ? f(IC<1>{}, IC<7>{}, IC<16>{}) : f(IC<1>{}, IC<8>{}, IC<16>{});
    return run == 7 ? f(IC<1>{}, IC<7>{}, IC<4>{}) : f(IC<1>{}, IC<8>{}, IC<4>{});
  }
}

template <typename T>
std::string run_stencil(const ConvProblem& p, const void* src, const void* w, const void* bias, void* out, bool dgrad,
                        cudaStream_t st) {
  const Geo g = geo_of(p, dgrad, kRows);
  const Access acc = access_for(g.C, sizeof(T), {src}, {src, out});
  const T* s = static_cast<const T*>(src);
  const T* wt = static_cast<const T*>(w);
  const T* bs = static_cast<const T*>(bias);
  T* o = static_cast<T*>(out);
  const std::string err = with_variant<T>(acc, run_for(acc.vec, g.od[2]), [&](auto vec, auto run, auto cb) {
    return launch_fwd<T, decltype(vec)::value, decltype(run)::value, decltype(cb)::value>(g, p.batch, s, wt, bs, o, st);
  });
  return err.empty() ? launch_error(dgrad ? "stencil grad-input" : "stencil forward") : err;
}

template <typename T, int VEC, int RUN, int CB>
std::string launch_wgrad(const ConvProblem& p, const WgradShape& sh, const T* x, const T* dy, T* dw, float* part,
                         cudaStream_t st) {
  Geo g = geo_of(p, false, kRows);
  g.wstrips = ceil_div(g.od[2], RUN);
  g.cgroups = sh.cgroups;
  g.columns = sh.columns;
  g.per = sh.per;
  launch_dependent(depthwise3_wgrad_kernel<T, VEC, RUN, CB>, dim3(unsigned(sh.cgroups * sh.blocks)), dim3(kThreads), 0,
                   st, x, dy, part, g);
  launch_dependent(depthwise3_wgrad_reduce_kernel<T>, dim3(unsigned(27 * ceil_div(g.C, 32))), dim3(32 * kSlices), 0,
                   st, static_cast<const float*>(part), dw, g.C, kLanes * VEC, int(sh.blocks * sh.slots));
  return "";
}

template <typename T>
std::string run_wgrad(const ConvProblem& p, DType t, const void* x, const void* dy, void* dw, void* workspace,
                      size_t workspace_bytes, cudaStream_t st) {
  const Access acc = access_for(int(p.out_channels), sizeof(T), {x, dy}, {x, dy});
  const WgradShape sh = wgrad_shape(p, acc.vec, t);
  if (workspace == nullptr || workspace_bytes < wgrad_part_bytes(sh)) return "stencil: grad-weight workspace too small";
  const T* xs = static_cast<const T*>(x);
  const T* ds = static_cast<const T*>(dy);
  T* o = static_cast<T*>(dw);
  float* part = static_cast<float*>(workspace);
  const std::string err = with_variant<T>(acc, sh.run, [&](auto vec, auto run, auto cb) {
    return launch_wgrad<T, decltype(vec)::value, decltype(run)::value, decltype(cb)::value>(p, sh, xs, ds, o, part, st);
  });
  return err.empty() ? launch_error("stencil grad-weight") : err;
}

std::string run(const ConvProblem& p, DType t, bool band, const void* src, const void* w, const void* bias, void* out,
                bool dgrad, void* stream) {
  const uintptr_t ends = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(out);
  if (band && ends % 16 == 0) return hopper::depthwise_band(p, t, dgrad, src, w, bias, out, stream);
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return run_stencil<float>(p, src, w, bias, out, dgrad, st);
    case DType::kBF16: return run_stencil<__nv_bfloat16>(p, src, w, bias, out, dgrad, st);
    case DType::kF16: return run_stencil<__half>(p, src, w, bias, out, dgrad, st);
    default: return "stencil: unsupported dtype";
  }
}

}  // namespace

std::string fwd(const ConvProblem& p, DType t, bool band, const void* x, const void* w, const void* bias, void* y,
                void* stream) {
  return run(p, t, band, x, w, bias, y, false, stream);
}

std::string dgrad(const ConvProblem& p, DType t, bool band, const void* dy, const void* w, void* dx, void* stream) {
  return run(p, t, band, dy, w, nullptr, dx, true, stream);
}

std::string wgrad(const ConvProblem& p, DType t, const void* x, const void* dy, void* dw, void* workspace,
                  size_t workspace_bytes, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return run_wgrad<float>(p, t, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kBF16: return run_wgrad<__nv_bfloat16>(p, t, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kF16: return run_wgrad<__half>(p, t, x, dy, dw, workspace, workspace_bytes, st);
    default: return "stencil: unsupported dtype";
  }
}

}  // namespace stencil
}  // namespace jaxconv3d
