// The stencil family's tensor-core forward and grad-input (see stencil.h) for 16-bit channels-last tensors whose
// channel count is a multiple of 16: the banded-matrix trick of sm80/stencil3_mma.cu (each W tap row a Toeplitz
// B[k][n] = tap[k - n], one mma.sync.m16n8k16 per 16 x 8 output tile and (kd, kh)), fed from NDHWC through two
// transposes in shared memory:
//   block   = 16 channels (one warp each) x a 16 (H) x 32 (W) output window through a run of D planes;
//   in      = each source plane's 18 x 40 positions x 16 channels (32 bytes a position) copied with 16-byte cp.async
//             into a three-stage ring (the two channel halves of a position swapped every four positions, so eight
//             consecutive positions hit every bank), then turned channel-major by ldmatrix.trans (a lane gets two
//             positions of one channel) and 32-bit stores: one 18 x 40 plane a channel;
//   compute = each warp its channel's plane exactly as stencil3_mma (A by ldmatrix.x4, B fragments in registers,
//             three accumulator planes rotated by index);
//   out     = a finished plane's fragments, plus the bias, rounded and stored channel-major (16 x 32 a channel),
//             then ldmatrix.trans again (a lane gets two channels of one position) and 32-bit global stores.
// Each output sums its source planes in order (kd = 0, 1, 2) through the tensor core's fixed-order accumulation,
// from its bias: deterministic and independent of the grid. A non-finite source value reaches the outputs of its
// 8-column tile row through the band's zeros (README, "Known differences").
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "device_common.cuh"
#include "launch_common.cuh"
#include "plane_ring.cuh"
#include "sm80/mma16.cuh"
#include "stencil/stencil.h"

namespace jaxconv3d {
namespace stencil {
namespace {

using i64 = long long;
using sm80::ldmatrix_x4;
using sm80::mma;
using sm80::pack2;

constexpr int kMC = 16;                          // channels a block, one warp each
constexpr int kMY = 16, kMX = 32;                // output rows, columns a block
constexpr int kSrcRows = kMY + 2, kSrcCols = 40;  // a staged plane: 18 x 40 positions (three 16-column A windows)
constexpr int kMThreads = 32 * kMC;
constexpr int kRawPos = kSrcRows * kSrcCols;
constexpr int kRawElems = kRawPos * kMC;          // 32 bytes a position
constexpr int kChunks = kRawPos * 2;              // 16-byte copies a plane: two channel halves a position
constexpr int kCopies = (kChunks + kMThreads - 1) / kMThreads;
constexpr int kChanStride = kRawPos + 8;          // 1456 bytes between channel planes: 32-bit stores hit every bank
constexpr int kOutRow = 40, kOutChan = kMY * kOutRow + 8;  // out tile: 80-byte rows, 1296 bytes a channel
constexpr int kInGroups = kSrcRows * (kSrcCols / 8) * 2 / 4;  // ldmatrix.x4 transposes a staged plane (45)
constexpr int kOutGroups = kMY * (kMX / 8) * 2 / 4;           // and a finished plane (32)
constexpr int kSmemElems = kRingStages * kRawElems + kMC * kChanStride + kMC * kOutChan;
static_assert(kSrcCols % 8 == 0 && kMX == 32 && kMY == 16, "8-position matrices; four 16 x 8 mma tiles a plane");

// Where a position's channel half lives in a raw stage: halves swapped every four positions.
__device__ __forceinline__ int raw_at(int pos, int half) { return pos * kMC + 8 * (half ^ ((pos >> 2) & 1)); }

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&a)[4], const void* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(s));
}

struct MGeo {
  int C;
  int sd[3], od[3], P[3];
  int flip;
  int wblocks, hblocks, cgroups;
  i64 columns, per;
};

template <typename T>
__global__ void __launch_bounds__(kMThreads, 1) depthwise3_mma_kernel(const T* __restrict__ src,
                                                                      const T* __restrict__ w,
                                                                      const T* __restrict__ bias, T* __restrict__ out,
                                                                      const MGeo g) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* raw = reinterpret_cast<T*>(smem_raw);
  T* chan = raw + kRingStages * kRawElems;
  T* outt = chan + kMC * kChanStride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gq = lane >> 2, t2 = 2 * (lane & 3);
  const int kb = t2 - gq;                                 // B: tap k - n of this lane's (k, n) pairs
  const int a_off = (lane & 15) * kSrcCols + 8 * (lane >> 4);  // A: row l % 16, columns 8 (l / 16) of a window
  const i64 s_h = i64(g.sd[2]) * g.C, s_d = i64(g.sd[1]) * s_h;
  const i64 o_h = i64(g.od[2]) * g.C, o_d = i64(g.od[1]) * o_h;

  plane_segments(blockIdx.x, g.per, g.columns, g.od[0], [&](i64 column, int z, int len) {
    i64 col = column;
    const int ox0 = int(col % g.wblocks) * kMX;
    col /= g.wblocks;
    const int oy0 = int(col % g.hblocks) * kMY;
    col /= g.hblocks;
    const int c0 = int(col % g.cgroups) * kMC;
    const i64 n = col / g.cgroups;
    const int c = c0 + warp;  // this warp's channel (C % 16 == 0: always inside)

    unsigned b[9][2];  // the channel's taps as B fragments, (kd, kh) = 3 kd + kh
#pragma unroll
    for (int q = 0; q < 9; ++q) {
      float v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int kw = kb + (i & 1) + 8 * (i >> 1), tap = q * 3 + kw;
        v[i] = unsigned(kw) <= 2u ? cvt<float>(w[i64(c) * 27 + (g.flip ? 26 - tap : tap)]) : 0.0f;
      }
      b[q][0] = pack2(v[0], v[1], static_cast<T*>(nullptr));
      b[q][1] = pack2(v[2], v[3], static_cast<T*>(nullptr));
    }
    const float bv = bias != nullptr ? cvt<float>(bias[c]) : 0.0f;

    // this thread's copies: chunk q = threadIdx.x + 512 i (position q / 2, channel half q % 2); its offset in the
    // plane and whether it lies inside are fixed per column (32-bit: the plan bounds H x W x C)
    int off[kCopies];
    unsigned inside = 0;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int q = threadIdx.x + kMThreads * i, pos = q >> 1;
      const int y = oy0 - g.P[1] + pos / kSrcCols, x = ox0 - g.P[2] + pos % kSrcCols;
      off[i] = (y * g.sd[2] + x) * g.C + c0 + 8 * (q & 1);
      if (q < kChunks && unsigned(y) < unsigned(g.sd[1]) && unsigned(x) < unsigned(g.sd[2])) inside |= 1u << i;
    }
    const T* sn = src + n * i64(g.sd[0]) * s_d;
    T* on = out + n * i64(g.od[0]) * o_d;

    auto issue = [&](int js, auto stage) {  // source plane js (depth z - P0 + js) into its raw stage
      const int sz = z - g.P[0] + js;
      const bool pin = js < len + 2 && unsigned(sz) < unsigned(g.sd[0]);
      const T* pl = sn + i64(pin ? sz : 0) * s_d;
      T* dst = raw + decltype(stage)::value * kRawElems;
#pragma unroll
      for (int i = 0; i < kCopies; ++i) {
        const int q = threadIdx.x + kMThreads * i;
        if (i + 1 < kCopies || q < kChunks) {
          const bool in = pin && (inside >> i & 1u);
          cp_async<16>(dst + raw_at(q >> 1, q & 1), in ? pl + off[i] : pl, in);
        }
      }
      cp_async_commit();
    };

    float acc[3][4][4];
#pragma unroll
    for (int s = 0; s < 3; ++s)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[s][j][i] = bv;  // every output starts at its bias

    plane_ring(len, [] { __syncthreads(); }, issue, [&](int js, auto phase) {
      constexpr int PH = decltype(phase)::value;  // js % 3: the raw stage and the accumulator rotation
      // channel-major: matrix m = (row r, 8-position group cg, channel half h) = (r * 5 + cg) * 2 + h
      const T* rs = raw + PH * kRawElems;
      for (int grp = warp; grp < kInGroups; grp += kMC) {
        const int mi = 4 * grp + (lane >> 3), ii = lane & 7;
        const int h = mi & 1, rc = mi >> 1, r = rc / (kSrcCols / 8), cg = rc % (kSrcCols / 8);
        unsigned v[4];
        ldmatrix_x4_trans(v, rs + raw_at(r * kSrcCols + 8 * cg + ii, h));
        // register i: positions t2, t2 + 1 of channel gq in matrix 4 grp + i
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int mj = 4 * grp + i, hj = mj & 1, rcj = mj >> 1;
          const int rj = rcj / (kSrcCols / 8), cgj = rcj % (kSrcCols / 8);
          *reinterpret_cast<unsigned*>(chan + (8 * hj + gq) * kChanStride + rj * kSrcCols + 8 * cgj + t2) = v[i];
        }
      }
      __syncthreads();
      const T* base = chan + warp * kChanStride + a_off;
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          unsigned av[4];
          ldmatrix_x4(av, base + kh * kSrcCols + 8 * j);
#pragma unroll
          for (int kd = 0; kd < 3; ++kd)
            if (js - kd >= 0 && js - kd < len) mma(acc[(PH - kd + 3) % 3][j], av, b[kd * 3 + kh], static_cast<T*>(nullptr));
        }
      }
      // output plane js - 2 is complete: channel-major into the out tile, then back to positions and out
      constexpr int SO = (PH + 1) % 3;
      if (js >= 2) {
        T* ot = outt + warp * kOutChan;
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int half = 0; half < 2; ++half)
            *reinterpret_cast<unsigned*>(ot + (gq + 8 * half) * kOutRow + 8 * j + t2) =
                pack2(acc[SO][j][2 * half], acc[SO][j][2 * half + 1], static_cast<T*>(nullptr));
        __syncthreads();
        T* op = on + i64(z + js - 2) * o_d;
        // matrix m = (row r, 8-column group wg, channel half h) = (r * 4 + wg) * 2 + h: rows its 8 channels
        for (int grp = warp; grp < kOutGroups; grp += kMC) {
          const int mi = 4 * grp + (lane >> 3), ii = lane & 7;
          const int h = mi & 1, rw = mi >> 1, r = rw >> 2, wg = rw & 3;
          unsigned v[4];
          ldmatrix_x4_trans(v, outt + (8 * h + ii) * kOutChan + r * kOutRow + 8 * wg);
          // register i: channels 8 h + t2, + 1 of column 8 wg + gq in matrix 4 grp + i
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int mj = 4 * grp + i, hj = mj & 1, rwj = mj >> 1, rj = rwj >> 2, wgj = rwj & 3;
            const int y = oy0 + rj, x = ox0 + 8 * wgj + gq;
            if (y < g.od[1] && x < g.od[2])
              *reinterpret_cast<unsigned*>(op + i64(y) * o_h + i64(x) * g.C + c0 + 8 * hj + t2) = v[i];
          }
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[SO][j][i] = bv;
    });
  });
}

template <typename T>
std::string launch_mma(const ConvProblem& p, bool dgrad, const T* s, const T* w, const T* b, T* o, cudaStream_t st) {
  MGeo g{};
  g.C = int(p.out_channels);
  for (int a = 0; a < 3; ++a) {
    g.sd[a] = int(dgrad ? p.out[a] : p.in[a]);
    g.od[a] = int(dgrad ? p.in[a] : p.out[a]);
    g.P[a] = int(dgrad ? 2 - p.pad_lo[a] : p.pad_lo[a]);
  }
  g.flip = dgrad ? 1 : 0;
  g.wblocks = int((g.od[2] + kMX - 1) / kMX);
  g.hblocks = int((g.od[1] + kMY - 1) / kMY);
  g.cgroups = g.C / kMC;
  g.columns = i64(g.wblocks) * g.hblocks * g.cgroups * p.batch;
  const i64 planes = g.columns * g.od[0];
  if (planes == 0) return "";
  constexpr int bytes = kSmemElems * int(sizeof(T));
  static std::atomic<uint64_t> smem_set{0};
  if (allow_smem(depthwise3_mma_kernel<T>, bytes, smem_set) != cudaSuccess)
    return launch_error("stencil tensor-core forward (shared memory)");
  static std::atomic<int> per_sm[64][1];
  const int slots = resident_blocks(depthwise3_mma_kernel<T>, kMThreads, bytes, 0, per_sm) * sm_count();
  if (slots <= 0) {
    cudaGetLastError();
    return "stencil: cannot read how many blocks of the tensor-core stencil the device holds";
  }
  const i64 blocks = std::min<i64>(slots, (planes + kMinPlanes - 1) / kMinPlanes);
  g.per = (planes + blocks - 1) / blocks;
  depthwise3_mma_kernel<T><<<unsigned(blocks), kMThreads, bytes, st>>>(s, w, b, o, g);
  return launch_error(dgrad ? "stencil tensor-core grad-input" : "stencil tensor-core forward");
}

}  // namespace

bool mma_aligned(const void* src, const void* out) {
  return reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
}

std::string run_mma(const ConvProblem& p, DType t, const void* src, const void* w, const void* bias, void* out,
                    bool dgrad, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t == DType::kBF16)
    return launch_mma<__nv_bfloat16>(p, dgrad, static_cast<const __nv_bfloat16*>(src),
                                     static_cast<const __nv_bfloat16*>(w), static_cast<const __nv_bfloat16*>(bias),
                                     static_cast<__nv_bfloat16*>(out), st);
  if (t == DType::kF16)
    return launch_mma<__half>(p, dgrad, static_cast<const __half*>(src), static_cast<const __half*>(w),
                              static_cast<const __half*>(bias), static_cast<__half*>(out), st);
  return "stencil: the tensor-core stencil takes bfloat16 and float16";
}

}  // namespace stencil
}  // namespace jaxconv3d
