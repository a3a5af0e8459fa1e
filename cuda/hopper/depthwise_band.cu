// The stencil family's tensor-core forward and grad-input for 16-bit channels-last depthwise 3x3x3 layers (stride 1,
// dilation 1, channel multiplier 1; C a multiple of 16, tensors 16-byte aligned; stencil::band_takes), on Hopper.
// The math is sm80's NCDHW band form (sm80/stencil3_mma.cu): each W tap row is a banded matrix, and one mma.sync
// m16n8k16 takes a 16 (H) x 8 (W) output tile's three W taps of one (kd, kh) for one channel:
//   out[h][w0 + n] += sum_k  x[h + kh - P1][w0 - P2 + k] * B[k][n],   B[k][n] = tap[kd][kh][k - n] (0 <= . <= 2)
// That needs each channel's W run contiguous, and channels-last puts the channels there; so a block turns its
// staged planes around in shared memory with ldmatrix.trans (a lane gets one channel's two neighbouring positions,
// stored as one word) and turns its outputs back the same way. The global traffic is TMA's: a block's 16 channels
// are only 32 bytes of each position, which as per-thread copies cost the LSU a line each (perf.md v24).
//   block  = 8 warps = 16 consecutive channels (warp w: channels w and w + 8) x a 16 x 16 output window through a
//            run of D planes;
//   plane  = the source box (16 channels x 24 columns x 18 rows, zeros outside the volume) loaded by TMA into a
//            three-stage ring, two planes ahead (its 32-byte swizzle swaps a position's channel halves every four
//            positions, so `ldmatrix.trans` over 8 positions hits every bank); turned into channel planes (rows of
//            24, as wide as the box, so position p of the box is element p of its channel plane); a barrier; each
//            warp's two channels' 6 A tiles x 3 output planes (kd) of mma.sync into accumulators rotated by index;
//            the completed output plane (js - 2) into channel planes, turned back at the next step into a
//            channels-last tile (the same swizzle) that one TMA store writes (it clips the volume's edges);
//   grid   = groups of cgroups blocks (one a channel group) walking the same run of (W strip, H block, batch entry)
//            columns, one wave.
// Each output sums its source planes in order (kd = 0, 1, 2), each plane's kh rows in order through the tensor
// core's fixed-order accumulation, from its bias: deterministic, and independent of the grid. As in sm80's stencil,
// a non-finite source value reaches the outputs of its 8-column tile row that a zero of B multiplies it into.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "device_common.cuh"
#include "hopper/hopper_conv.h"
#include "hopper/pipeline.cuh"
#include "hopper/tma.cuh"
#include "launch_common.cuh"
#include "plane_ring.cuh"
#include "sm80/mma16.cuh"
#include "stencil/geo.cuh"
#include "stencil/stencil.h"

namespace jaxconv3d {
namespace hopper {
namespace {

using stencil::Geo;
using stencil::i64;
using stencil::kMinPlanes;  // output planes a group at least
using stencil::Place;

constexpr int kCh = 16;                        // channels a block: a position's 32 bytes
constexpr int kWarps = 8;                      // warp w computes channels w and w + 8
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16, kCols = 16;          // a block's output window: the mma's M x two n-tiles of 8
constexpr int kSrcRows = kRows + 2;            // staged source rows
constexpr int kSrcCols = 24;                   // staged source columns: the second n-tile's A window ends at 23
constexpr int kPitch = kSrcCols;               // a channel plane's row: 48 bytes (ldmatrix's 8 rows hit every bank)
constexpr int kChanElems = kSrcRows * kPitch + 8;  // 220 words = 28 mod 32: the turn's stores of 8 channels miss
constexpr int kOutChanElems = kRows * kPitch + 8;  // 196 words = 4 mod 32: a turned-back 8 x 8 block hits every bank
constexpr int kPos = kSrcRows * kSrcCols;      // staged positions a plane
constexpr int kStageBytes = kPos * 32;         // a multiple of 256: every stage keeps the swizzle's phase
constexpr int kTransBytes = kCh * kChanElems * 2;
constexpr int kOutBytes = kCh * kOutChanElems * 2;
constexpr int kTileBytes = kRows * kCols * 32;  // the channels-last output tile of one TMA store
constexpr int kTransAt = kRingStages * kStageBytes, kOutAt = kTransAt + kTransBytes, kTileAt = kOutAt + kOutBytes;
constexpr int kBarAt = kTileAt + kTileBytes;
constexpr int kSmemBytes = kBarAt + 8 * kRingStages + 1024;  // + the base's alignment slack
constexpr int kBlocksPerSm = 2;                // 16 warps an SM; registers <= 128
constexpr int kTurnItems = kPos * 2 / 32;      // ldmatrix.x4 a staged plane: 4 blocks of 8 positions x 8 channels
static_assert(kCols == 16 && kRows == 16 && kPitch == kSrcCols && kSrcCols % 8 == 0, "two 16 x 8 mma tiles a plane");
static_assert(kStageBytes % 256 == 0 && kTileAt % 256 == 0 && kOutAt % 16 == 0 && kBarAt % 8 == 0,
              "swizzled buffers on 256-byte boundaries");

// Where channel half h of position p lies in a 32-byte-swizzled buffer (bytes from its 256-byte aligned start): TMA's
// 32-byte swizzle flips address bit 4 by bit 7, so the halves swap every four positions.
__device__ __forceinline__ uint32_t swz32(int p, int h) { return uint32_t(32 * p + 16 * (h ^ ((p >> 2) & 1))); }

__device__ __forceinline__ void sts32(uint32_t addr, unsigned v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

template <typename T>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    depthwise3_band_tma_kernel(const __grid_constant__ CUtensorMap smap, const __grid_constant__ CUtensorMap omap,
                               const T* __restrict__ w, const T* __restrict__ bias, const Geo g) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using sm80::ldmatrix_x4_shared;
  using sm80::ldmatrix_x4_trans;
  using sm80::mma;
  using sm80::mma_from;
  using sm80::pack2;
  const uint32_t ring = dynamic_smem_base();  // 1024-byte aligned
  const uint32_t trans = ring + kTransAt;      // [channel][row][kPitch], channel stride kChanElems
  const uint32_t outs = ring + kOutAt;         // [channel][row][kPitch], channel stride kOutChanElems
  const uint32_t tile = ring + kTileAt;        // [row][column][16 channels], 32-byte swizzle
  const uint32_t bar = ring + kBarAt;          // a full barrier a stage
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gq = lane >> 2, t2 = 2 * (lane & 3);  // fragment row / column pair of a lane
  if (tid == 0) {
    for (int s = 0; s < kRingStages; ++s) mbar_init(bar + 8 * s, 1);
    mbar_fence_init();
  }
  __syncthreads();
  uint32_t phases = 0;  // the parity each stage's barrier waits for next (bit s)

  // B: this lane's (k, n) pairs k = t2 + {0, 1} (+ 8), n = gq; tap k - n when in 0..2
  const int kb = t2 - gq;
  // A (ldmatrix.x4 from channel plane warp + 8 s): lane l names row l % 16, columns 8 (l / 16) .. + 7
  const uint32_t a_base = trans + 2u * (warp * kChanElems + (lane & 15) * kPitch + 8 * (lane >> 4));
  // accumulator tile j of channel warp + 8 s: rows gq, gq + 8, columns 8 j + t2 (+ 1) of its staging plane
  const uint32_t o_store = outs + 2u * (warp * kOutChanElems + gq * kPitch + t2);
  // Turning a staged plane: the box's rows of 24 = its channel planes' rows, so position p = 8 m' + i of block m'
  // is element p of each channel plane; item it's ldmatrix.x4 takes blocks 2 it, 2 it + 1 (lane l: block
  // 2 it + l / 16, half (l / 8) % 2, position l % 8), and its word q is channel 8 (q % 2) + gq's columns t2, t2 + 1
  // of block 2 it + q / 2.
  const int t_pos = 8 * (lane >> 4) + (lane & 7), t_half = (lane >> 3) & 1;
  const uint32_t t_store = trans + 2u * (gq * kChanElems + t2);

  const int cg = int(blockIdx.x % unsigned(g.cgroups));
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  stencil::for_segments(blockIdx.x / g.cgroups, g.per, g.columns, g.od[0], [&](i64 column, int z, int len) {
    Place pl = stencil::place(g, column, 1, kCols, kRows, kCh);
    pl.c0 = cg * kCh;

    unsigned b[2][9][2];  // channel warp + 8 s's taps as B fragments, (kd, kh) = 3 kd + kh
    float bv[2];
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int c = pl.c0 + warp + 8 * s;
#pragma unroll
      for (int q = 0; q < 9; ++q) sm80::band_fragment(b[s][q], w, c, q, kb, g.flip);
      bv[s] = bias != nullptr ? cvt<float>(bias[c]) : 0.0f;
    }

    auto plane_in = [&](int js) { return unsigned(z - g.P[0] + js) < unsigned(g.sd[0]); };
    // Source plane js into stage js % 3 (thread 0): the box from (c0, ox0 - P2, oy0 - P1) of depth z - P0 + js;
    // a plane outside the volume is not loaded, its barrier only arrived at.
    auto issue = [&](int js) {
      const uint32_t full = bar + 8 * (js % kRingStages);
      if (plane_in(js)) {
        mbar_expect_tx(full, kStageBytes);
        tma_load_5d(ring + uint32_t((js % kRingStages) * kStageBytes), &smap, full, pl.c0, pl.ox0 - g.P[2],
                    pl.oy0 - g.P[1], z - g.P[0] + js, int(pl.n));
      } else {
        mbar_arrive(full);
      }
    };

    // Stage `stage` into the channel planes: items it = warp, warp + 8, ... < kTurnItems, every load first.
    auto turn = [&](uint32_t stage) {
      constexpr int kTurns = (kTurnItems + kWarps - 1) / kWarps;
      const bool last = warp + kWarps * (kTurns - 1) < kTurnItems;  // this warp has a last item
      unsigned v[kTurns][4];
#pragma unroll
      for (int k = 0; k < kTurns; ++k)
        if (k + 1 < kTurns || last) ldmatrix_x4_trans(v[k], stage + swz32(16 * (warp + kWarps * k) + t_pos, t_half));
#pragma unroll
      for (int k = 0; k < kTurns; ++k) {
        if (k + 1 < kTurns || last) {
          const uint32_t d = t_store + 2u * 16 * (warp + kWarps * k);
#pragma unroll
          for (int q = 0; q < 4; ++q) sts32(d + 2u * (8 * (q >> 1) + 8 * kChanElems * (q & 1)), v[k][q]);
        }
      }
    };

    // The staged output plane back to channels-last, into the store tile: warp w turns rows w and w + 8; lane l
    // names channel 8 ((l / 8) % 2) + l % 8 of column block l / 16, so its word q holds channels 8 (q % 2) + t2,
    // + 1 of column 8 (q / 2) + gq. The tile's last TMA store must have read it (thread 0 waited before the barrier).
    auto turn_back = [&]() {
      unsigned v[2][4];
#pragma unroll
      for (int h = 0; h < 2; ++h)
        ldmatrix_x4_trans(v[h], outs + 2u * ((8 * ((lane >> 3) & 1) + (lane & 7)) * kOutChanElems +
                                             (warp + 8 * h) * kPitch + 8 * (lane >> 4)));
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int q = 0; q < 4; ++q)
          sts32(tile + swz32((warp + 8 * h) * kCols + 8 * (q >> 1) + gq, q & 1) + 2u * t2, v[h][q]);
      fence_proxy_async();  // generic-proxy stores, read by the TMA store
    };
    auto store_tile = [&](int oz) {  // thread 0, after the barrier that follows turn_back
      tma_store_5d(&omap, tile, pl.c0, pl.ox0, pl.oy0, oz, int(pl.n));
      tma_store_commit();
    };

    float acc[2][3][2][4];  // [channel s][output plane slot][n-tile][fragment]
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
      for (int sl = 0; sl < 3; ++sl)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[s][sl][j][i] = bv[s];

    if (tid == 0) {
      issue(0);
      issue(1);
    }
    // Step js: a barrier (everyone is past step js - 1: the stage plane js + 2 goes into was turned, the channel
    // planes were read, output plane js - 3 was staged), plane js + 2 issued, output plane js - 3 turned back, plane
    // js awaited and turned, a barrier, output plane js - 3 stored, plane js's products, output plane js - 2
    // staged. Output plane js's slot (js % 3) starts at its bias with its first product (kd = 0, kh = 0:
    // D = A B + bias), or is set to the bias when source plane js lies outside the volume.
    auto step = [&](int js, auto phase) {
      constexpr int PH = decltype(phase)::value;  // js % 3: the stage and the accumulator rotation
      __syncthreads();
      if (tid == 0 && js + 2 < len + 2) issue(js + 2);
      if (js >= 3) turn_back();
      mbar_wait(bar + 8 * PH, (phases >> PH) & 1u);
      phases ^= 1u << PH;
      const bool in = plane_in(js);
      if (in) turn(ring + uint32_t(PH * kStageBytes));
      __syncthreads();
      if (tid == 0 && js >= 3) store_tile(z + js - 3);
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        if (in) {
          unsigned a[3][2][4];  // the channel's six A tiles loaded first (the asm keeps its order): one wait
#pragma unroll
          for (int kh = 0; kh < 3; ++kh)
#pragma unroll
            for (int j = 0; j < 2; ++j)
              ldmatrix_x4_shared(a[kh][j], a_base + 2u * (8 * s * kChanElems + kh * kPitch + 8 * j));
#pragma unroll
          for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
              // unconditional: a product for an output plane outside 0 .. len - 1 lands in a slot that starts
              // over (at its bias) before that slot's next output plane, or after its output plane was stored
              if (kh == 0)
                mma_from(acc[s][PH][j], a[kh][j], b[s][0], bv[s], static_cast<T*>(nullptr));
              else
                mma(acc[s][PH][j], a[kh][j], b[s][kh], static_cast<T*>(nullptr));
#pragma unroll
              for (int kd = 1; kd < 3; ++kd)
                mma(acc[s][(PH - kd + 3) % 3][j], a[kh][j], b[s][kd * 3 + kh], static_cast<T*>(nullptr));
            }
          }
        } else {
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[s][PH][j][i] = bv[s];
        }
        constexpr int SO = (PH + 1) % 3;  // output plane js - 2 is complete: staged
        if (js >= 2) {
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h)
              sts32(o_store + 2u * (8 * s * kOutChanElems + 8 * h * kPitch + 8 * j),
                    pack2(acc[s][SO][j][2 * h], acc[s][SO][j][2 * h + 1], static_cast<T*>(nullptr)));
        }
      }
      if (tid == 0 && js >= 3) tma_store_wait_read();  // the tile is rewritten after the next barrier
    };
    each_plane_by_three(len + 2, step);
    __syncthreads();  // every warp staged the last output plane
    turn_back();
    __syncthreads();
    if (tid == 0) {
      store_tile(z + len - 1);
      tma_store_wait_read();
    }
  });
  pdl_release();
  if (tid == 0) tma_store_wait_all();
#endif
}

template <typename T>
std::string launch(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                   void* out, cudaStream_t st) {
  static std::atomic<int> per_sm[64][1];
  static std::atomic<uint64_t> smem_set{0};
  if (allow_smem(depthwise3_band_tma_kernel<T>, kSmemBytes, smem_set) != cudaSuccess) {
    cudaGetLastError();
    return "hopper: cannot give the tensor-core depthwise stencil its shared memory";
  }
  const int slots = resident_blocks(depthwise3_band_tma_kernel<T>, kThreads, kSmemBytes, 0, per_sm) * sm_count();
  if (slots <= 0) {
    cudaGetLastError();
    return "hopper: cannot read how many tensor-core depthwise stencil blocks the device holds";
  }
  Geo g = stencil::geo_of(p, dgrad, kRows);
  g.wstrips = stencil::ceil_div(g.od[2], kCols);
  g.cgroups = stencil::ceil_div(g.C, kCh);
  g.columns = i64(g.wstrips) * g.hblocks * p.batch;  // a group's columns: every channel group's block walks them all
  const i64 planes = g.columns * g.od[0];
  if (planes == 0) return "";
  const i64 groups = std::max<i64>(1, std::min<i64>(slots / g.cgroups, (planes + kMinPlanes - 1) / kMinPlanes));
  g.per = (planes + groups - 1) / groups;

  // Maps over the source (x, or dy for grad-input) and the output, innermost first: (C, W, H, D, N).
  const uint64_t es = 2, C = uint64_t(g.C);
  CUtensorMap smap, omap;
  const uint64_t sdims[5] = {C, uint64_t(g.sd[2]), uint64_t(g.sd[1]), uint64_t(g.sd[0]), uint64_t(p.batch)};
  const uint64_t odims[5] = {C, uint64_t(g.od[2]), uint64_t(g.od[1]), uint64_t(g.od[0]), uint64_t(p.batch)};
  uint64_t sstr[4], ostr[4];
  sstr[0] = C * es;
  ostr[0] = C * es;
  for (int i = 1; i < 4; ++i) {
    sstr[i] = sstr[i - 1] * sdims[i];
    ostr[i] = ostr[i - 1] * odims[i];
  }
  const uint32_t sbox[5] = {kCh, kSrcCols, kSrcRows, 1, 1}, obox[5] = {kCh, kCols, kRows, 1, 1};
  const uint32_t step[5] = {1, 1, 1, 1, 1};
  std::string err = make_tensor_map(&smap, tma_type(t), 5, src, sdims, sstr, sbox, step, 32);
  if (err.empty()) err = make_tensor_map(&omap, tma_type(t), 5, out, odims, ostr, obox, step, 32);
  if (!err.empty()) return err;
  launch_dependent(depthwise3_band_tma_kernel<T>, dim3(unsigned(groups * g.cgroups)), dim3(kThreads), kSmemBytes, st,
                   smap, omap, static_cast<const T*>(w), static_cast<const T*>(bias), g);
  return launch_error(dgrad ? "tensor-core depthwise stencil grad-input" : "tensor-core depthwise stencil forward");
}

}  // namespace

std::string depthwise_band(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                           void* out, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t == DType::kBF16) return launch<__nv_bfloat16>(p, t, dgrad, src, w, bias, out, st);
  if (t == DType::kF16) return launch<__half>(p, t, dgrad, src, w, bias, out, st);
  return "hopper: the tensor-core depthwise stencil takes bfloat16 and float16";
}

}  // namespace hopper
}  // namespace jaxconv3d
