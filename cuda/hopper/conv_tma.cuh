// Forward and grad-input as an implicit GEMM fed by TMA (the family's main path), on the persistent
// warp-specialised skeleton of persistent.cuh:
//   rows (M)    = a brick of 128 result positions, bw (W) x bh (H) x bd (D), powers of two (two 64-row halves);
//   columns (N) = result channels, BN per tile;
//   K           = (tap, 128 bytes of source channels) per K-tile.
// For K-tile (tap j, channel block cb) one 5-D TMA box copies the source pixels the brick reads at that tap:
// start = q_origin * mstride + base + j * jstep per axis, traversal step = mstride, so padding, stride and
// dilation all become box coordinates, and everything outside the source arrives as zeros. A second (3-D) box
// copies the filter rows [n0, n0 + BN) of that tap. Grad-input with stride > 1 runs once per stride residue
// class r: result positions i = r + q * stride, and only the taps k with (r + pad - k * dilation) divisible by
// the stride, an arithmetic progression k = tap0 + j * tapstep.
#pragma once

#include "persistent.cuh"

namespace jaxconv3d {
namespace hopper {

// One GEMM of a launch: a grid of result positions q and the filter taps it walks. The forward pass and stride-1
// grad-input have one; grad-input at stride > 1 has one per stride residue class, up to kMaxClasses in one launch
// (a persistent grid over all their tiles, so the classes share one ramp-up and one tail instead of a launch each).
constexpr int kMaxClasses = 8;
struct TmaClass {
  int out[3];                // extents of the position grid q (D, H, W)
  int tiles[3];              // bricks along D, H, W
  int base[3], jstep[3], k[3];  // source coordinate = q * mstride + base + j * jstep, j < k per axis
  int tap0[3], tapstep[3];   // filter tap of iteration j = tap0 + j * tapstep
  int ooff[3];               // result coordinate = q * ostride + ooff
  int ktiles;
  int first_tile;            // the class's first tile in the launch (tiles of class c: first_tile .. next's - 1)
};

struct TmaArgs {
  const void* bias;  // [Ng] or null
  void* dst;         // NDHWC result [N][full0][full1][full2][Ng]
  int Ng, batch;
  int full[3], ostride[3];  // result extents; result coordinate = q * ostride + ooff
  int kfull[3];             // the kd x kh x kw filter
  int mstride[3];           // source traversal step per position
  int bw_log, bh_log;       // brick: bw = 2^bw_log along W, bh = 2^bh_log along H, bd = 128 / (bw * bh)
  int ntn;                  // BN-wide column tiles
  int cblocks;              // 128-byte channel blocks per tap
  // TMA-store epilogue (identity result map, rows of a multiple of 16 bytes): a consumer stages each 64 x BN half
  // of its tile in shared memory and one thread stores it as boxes of 64 positions x 128 bytes through tmC, whose
  // box is a half brick (a box: rows run W fastest, and 64 divides the brick).
  int tma_store;
  int nclass, total_tiles;
  TmaClass cls[kMaxClasses];
};

// SPLIT (float32 accurate, "3xTF32"): each fp32 operand x is split into big = tf32(x) (round to nearest,
// written back over x in the landed stage) and small = x - big (written to a buffer laid out like a stage), and
// the product is accumulated as small*big + big*small + big*big (the dropped small*small term is ~2^-22 of it).
// Each K-tile's three products accumulate in a zeroed register block that is added to the running sum with fp32
// adds after the K-tile (the tensor cores' own accumulation drifts over thousands of terms: measured 1.8e-5 to
// 2.7e-5 relative error at K = 3456-5400 without this, against a 1e-5 bound). kSplitBufs small buffers are used
// round-robin by K-tile. 64-wide N tiles only, for registers (two accumulator blocks).
// TG (taps per K-tile, 1 or 2): with TG = 2 (16-bit sources of at most 32 channels) a K-tile holds two filter taps
// of 64 bytes each instead of one tap padded to 128 bytes. The A tile is two regions of 128 rows x 64 bytes (64-byte
// swizzle), one per tap, the B tile two regions of BN rows x 64 bytes; wgmma k-steps 0-1 read region 0, 2-3 region 1.
// An odd tap count leaves the last K-tile's second region to a tap past the filter (zeros in B) over a box past
// the batch (zeros in A).
// RES (resident filter; tap pairs only): the whole filter, at most kResTaps taps of one BN-wide column tile, is
// copied into shared memory once per block (its own mbarrier) and stays there for every tile the block computes, so
// a stage carries only the A tile: a third less traffic per K-tile, and the filter leaves L2 once per block instead
// of once per tile. Stages then hold A only; the B regions of K-tile kt are resident taps 2 kt and 2 kt + 1.
template <typename T, int BN, bool SPLIT = false, int TG = 1, bool RES = false>
struct TmaCfg {
  static_assert(TG == 1 || (TG == 2 && !SPLIT && sizeof(T) == 2), "tap pairs are for 16-bit operands");
  static_assert(!RES || TG == 2, "a resident filter is for tap pairs");
  static constexpr int kTapBytes = 128 / TG;                      // one tap's channels in a K-tile row
  static constexpr int kBK = kTapBytes / sizeof(T);               // source channels per box
  static constexpr int kRegionA = 128 * kTapBytes, kRegionB = BN * kTapBytes;  // TG > 1: one tap's A and B regions
  static constexpr int kABytes = 128 * kRowBytes;
  static constexpr int kBBytes = BN * kRowBytes;
  static constexpr int kResTaps = RES ? 28 : 0;                   // a 3 x 3 x 3 filter, rounded up to pairs
  static constexpr int kResBytes = kResTaps * kRegionB;
  static constexpr int kStageBytes = RES ? kABytes : kABytes + kBBytes;
  static constexpr int kSplitBufs = SPLIT ? 3 : 0;
  // TMA-store staging, per consumer: a whole 128-row tile for 16-bit results (at most 32 KB: a ping-pong consumer
  // then stages its two halves without waiting for the first's store to leave), else one 64-row half at a time.
  static constexpr int kEpiRows = sizeof(T) == 2 ? 128 : 64;
  static constexpr int kEpiBytes = 2 * kEpiRows * BN * int(sizeof(T));
  static constexpr int kSmemMax = 227 * 1024;                        // per block, sm_90
  static constexpr int kFit = (kSmemMax - 1024 - kEpiBytes - kResBytes) / kStageBytes - kSplitBufs;
  static constexpr int kWanted = SPLIT ? (BN == 128 ? 3 : 5) : (BN == 128 ? 6 : 8);
  static constexpr int kStages = kWanted < kFit ? kWanted : kFit;
  static constexpr int kResOffset = (kStages + kSplitBufs) * kStageBytes + kEpiBytes;  // after the staging
  static constexpr int kSmem = kResOffset + kResBytes + 1024;
  static_assert(kStages >= 3, "too few pipeline stages");
};

template <typename T, int BN, bool SPLIT = false, int TG = 1, bool RES = false>
struct TmaConvOp {
  using Cfg = TmaCfg<T, BN, SPLIT, TG, RES>;
  static constexpr bool kStageFreeAfterMma = false;
  // Ping-pong consumers (persistent.cuh); 3xTF32 keeps them cooperative (its split pass spans both).
  static constexpr bool kPingPong = !SPLIT;
  const CUtensorMap* tmA;
  const CUtensorMap* tmB;
  const TmaArgs* a;
  uint32_t split_base;  // SPLIT: shared-memory address of the first small-part buffer
  const CUtensorMap* tmC;
  uint32_t epi_base;    // shared-memory address of the TMA-store staging (kEpiBytes)
  uint32_t res_base;    // RES: shared-memory address of the resident filter (kResBytes)
  uint32_t res_bar;     // RES: its mbarrier (one phase: the filter landed)

  struct Where {
    int n, q0, q1, q2, n0, c;  // c: the class
  };
  // The class a tile belongs to (a scan of at most kMaxClasses first tiles; always 0 for one class).
  __device__ __forceinline__ int class_of(int tile) const {
    int c = 0;
    while (c + 1 < a->nclass && tile >= a->cls[c + 1].first_tile) ++c;
    return c;
  }
  __device__ __forceinline__ Where where(int tile) const {
    Where w;
    w.c = class_of(tile);
    const TmaClass& k = a->cls[w.c];
    tile -= k.first_tile;
    w.n0 = (tile % a->ntn) * BN;
    int b = tile / a->ntn;
    const int tw = b % k.tiles[2]; b /= k.tiles[2];
    const int th = b % k.tiles[1]; b /= k.tiles[1];
    const int td = b % k.tiles[0];
    w.n = b / k.tiles[0];
    w.q2 = tw << a->bw_log;
    w.q1 = th << a->bh_log;
    w.q0 = td << (7 - a->bw_log - a->bh_log);
    return w;
  }
  __device__ __forceinline__ int tiles() const { return a->total_tiles; }
  __device__ __forceinline__ int ktiles(int tile) const { return a->cls[class_of(tile)].ktiles; }

  struct Cursor {
    Where w;
    int cb, j0, j1, j2;
  };
  __device__ __forceinline__ Cursor cursor(int tile) const { return Cursor{where(tile), 0, 0, 0, 0}; }
  __device__ __forceinline__ void issue(Cursor& c, uint32_t stage, uint32_t bar) const {
    if constexpr (TG > 1) {
      issue_group(c, stage, bar);
      return;
    }
    const TmaArgs& g = *a;
    const TmaClass& k = g.cls[c.w.c];
    const int tap = ((k.tap0[0] + c.j0 * k.tapstep[0]) * g.kfull[1] + k.tap0[1] + c.j1 * k.tapstep[1]) * g.kfull[2] +
                    k.tap0[2] + c.j2 * k.tapstep[2];
    tma_load_5d(stage, tmA, bar, c.cb * Cfg::kBK, c.w.q2 * g.mstride[2] + k.base[2] + c.j2 * k.jstep[2],
                c.w.q1 * g.mstride[1] + k.base[1] + c.j1 * k.jstep[1],
                c.w.q0 * g.mstride[0] + k.base[0] + c.j0 * k.jstep[0], c.w.n);
    tma_load_3d(stage + Cfg::kABytes, tmB, bar, c.cb * Cfg::kBK, tap, c.w.n0);
    if (++c.cb == g.cblocks) {
      c.cb = 0;
      if (++c.j2 == k.k[2]) {
        c.j2 = 0;
        if (++c.j1 == k.k[1]) { c.j1 = 0; ++c.j0; }
      }
    }
  }

  // TG = 2: two taps (one channel block, cblocks == 1), the second past the filter when the walk has run out.
  __device__ __forceinline__ void issue_group(Cursor& c, uint32_t stage, uint32_t bar) const {
    const TmaArgs& g = *a;
    const TmaClass& k = g.cls[c.w.c];
#pragma unroll
    for (int r = 0; r < TG; ++r) {
      const bool real = c.j0 < k.k[0];
      const int tap = real ? ((k.tap0[0] + c.j0 * k.tapstep[0]) * g.kfull[1] + k.tap0[1] + c.j1 * k.tapstep[1]) *
                                     g.kfull[2] + k.tap0[2] + c.j2 * k.tapstep[2]
                           : g.kfull[0] * g.kfull[1] * g.kfull[2];
      tma_load_5d(stage + r * Cfg::kRegionA, tmA, bar, 0, c.w.q2 * g.mstride[2] + k.base[2] + c.j2 * k.jstep[2],
                  c.w.q1 * g.mstride[1] + k.base[1] + c.j1 * k.jstep[1],
                  c.w.q0 * g.mstride[0] + k.base[0] + c.j0 * k.jstep[0], real ? c.w.n : g.batch);
      if constexpr (!RES) tma_load_3d(stage + Cfg::kABytes + r * Cfg::kRegionB, tmB, bar, 0, tap, c.w.n0);
      if (real && ++c.j2 == k.k[2]) {
        c.j2 = 0;
        if (++c.j1 == k.k[1]) { c.j1 = 0; ++c.j0; }
      }
    }
  }

  // RES: the producer copies the filter's taps 0 .. 2 * ktiles - 1 (one class, identity map: tap t is filter row
  // t; a tap past the filter arrives as zeros) before any stage; every consumer waits for them once.
  __device__ __forceinline__ void producer_prologue() const {
    if constexpr (RES) {
      const int taps = 2 * a->cls[0].ktiles;
      mbar_expect_tx(res_bar, uint32_t(taps * Cfg::kRegionB));
      for (int t = 0; t < taps; ++t) tma_load_3d(res_base + t * Cfg::kRegionB, tmB, res_bar, 0, t, 0);
    }
  }
  __device__ __forceinline__ void consumer_prologue() const {
    if constexpr (RES) mbar_wait(res_bar, 0);
  }

  __device__ __forceinline__ void mma(uint32_t stage, float* acc, int half, bool accumulate, int iter) const {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (SPLIT) {
      // big = tf32(x) in place, small = x - big beside it, for the whole stage (A and B); 16 bytes per thread
      // per step, the same offsets in both buffers.
      const uint32_t small = split_base + (iter % Cfg::kSplitBufs) * Cfg::kStageBytes;
      const int ctid = threadIdx.x - 128;
#pragma unroll
      for (int i = ctid; i < Cfg::kStageBytes / 16; i += 256) {
        float x[4], big[4];
        asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                     : "=f"(x[0]), "=f"(x[1]), "=f"(x[2]), "=f"(x[3]) : "r"(stage + 16 * i));
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          uint32_t r;
          asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x[e]));
          big[e] = __uint_as_float(r);
          x[e] -= big[e];
        }
        asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(stage + 16 * i), "f"(big[0]), "f"(big[1]),
                     "f"(big[2]), "f"(big[3]) : "memory");
        asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(small + 16 * i), "f"(x[0]), "f"(x[1]),
                     "f"(x[2]), "f"(x[3]) : "memory");
      }
      fence_proxy_async();
      asm volatile("bar.sync 1, 256;\n" ::: "memory");  // both consumers' splits are written
      float part[BN / 2];
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < Cfg::kBK / 8; ++ks) {
        const uint32_t ao = half * 64 * kRowBytes + ks * 32, bo = Cfg::kABytes + ks * 32;
        const uint64_t ab = smem_desc(stage + ao, 16, 1024), as = smem_desc(small + ao, 16, 1024);
        const uint64_t bb = smem_desc(stage + bo, 16, 1024), bs = smem_desc(small + bo, 16, 1024);
        Mma<float, BN, 0, 0>::run(part, as, bb, ks > 0 ? 1 : 0);  // small terms first
        Mma<float, BN, 0, 0>::run(part, ab, bs, 1);
        Mma<float, BN, 0, 0>::run(part, ab, bb, 1);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(part);
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = accumulate ? acc[i] + part[i] : part[i];
    } else if constexpr (TG == 2) {
      // B: the stage's regions, or (RES) resident taps 2 kt, 2 kt + 1 (every tile walks the same K-tiles, so the
      // consumer's running K-tile count gives kt)
      const uint32_t b0 = RES ? res_base + 2 * (iter % a->cls[0].ktiles) * Cfg::kRegionB : stage + Cfg::kABytes;
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {  // k16 steps: two per 64-byte region
        const uint32_t off = (ks & 1) * 32;
        const uint64_t da = smem_desc(stage + (ks >> 1) * Cfg::kRegionA + half * 64 * 64 + off, 16, 512, 2);
        const uint64_t db = smem_desc(b0 + (ks >> 1) * Cfg::kRegionB + off, 16, 512, 2);
        Mma<T, BN, 0, 0>::run(acc, da, db, (accumulate || ks > 0) ? 1 : 0);
      }
    } else {
#pragma unroll
      for (int ks = 0; ks < Cfg::kBK / Mma<T, BN, 0, 0>::kStep; ++ks) {
        const uint64_t da = smem_desc(stage + half * 64 * kRowBytes + ks * 32, 16, 1024);
        const uint64_t db = smem_desc(stage + Cfg::kABytes + ks * 32, 16, 1024);
        Mma<T, BN, 0, 0>::run(acc, da, db, (accumulate || ks > 0) ? 1 : 0);
      }
    }
#endif
  }

  // One consumer warpgroup's named barrier (ids 2 and 3; 1 is the SPLIT pass's, over both consumers).
  __device__ __forceinline__ static void consumer_sync(int consumer) {
    if (consumer == 0)
      asm volatile("bar.sync 2, 128;\n" ::: "memory");
    else
      asm volatile("bar.sync 3, 128;\n" ::: "memory");
  }

  // TMA-store epilogue: the accumulators of row half `half` (plus bias, rounded exactly as store_block does) go to
  // consumer `consumer`'s staging buffer as BN * sizeof(T) / 128 boxes of [64 rows][128 bytes] (128-byte swizzle),
  // then one thread stores them; rows and columns outside the result are clipped by the copy engine.
  __device__ __forceinline__ void epilogue_tma(int tile, const float* acc, int half, int ctid, int consumer) const {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int kCols = 128 / int(sizeof(T));  // columns per box
    constexpr int kBoxBytes = 64 * 128;
    const TmaArgs& g = *a;
    const Where w = where(tile);
    constexpr int kHalfBytes = 64 * BN * int(sizeof(T));
    const bool own_half = Cfg::kEpiRows == 128;  // each half has its own region of the staging buffer
    const uint32_t buf =
        epi_base + consumer * (Cfg::kEpiRows * BN * int(sizeof(T))) + (own_half ? half * kHalfBytes : 0);
    const T* bias = static_cast<const T*>(g.bias);
    if (!own_half || half == 0) {
      if (ctid == 0) tma_store_wait_read();  // the previous stores have read the buffer
      consumer_sync(consumer);
    }
    const int lane = ctid & 31, warp = ctid >> 5;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = warp * 16 + (lane >> 2) + 8 * h;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
        const int col = nt * 8 + (lane & 3) * 2, o = w.n0 + col;
        float v0 = acc[nt * 4 + h * 2], v1 = acc[nt * 4 + h * 2 + 1];
        if (bias) {
          if (o < g.Ng) v0 += to_float(bias[o]);
          if (o + 1 < g.Ng) v1 += to_float(bias[o + 1]);
        }
        const int inner = (col % kCols) * int(sizeof(T));
        const uint32_t addr = buf + (col / kCols) * kBoxBytes + row * 128 + ((((inner >> 4) ^ (row & 7))) << 4) +
                              (inner & 15);
        if constexpr (sizeof(T) == 4) {
          asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(v0), "f"(v1) : "memory");
        } else {
          T pr[2] = {from_float<T>(v0), from_float<T>(v1)};
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(*reinterpret_cast<uint32_t*>(pr)) : "memory");
        }
      }
    }
    fence_proxy_async();
    consumer_sync(consumer);
    if (ctid == 0) {
      const int r0 = half * 64;  // the half brick's first row
      const int p2 = w.q2 + (r0 & ((1 << g.bw_log) - 1)), p1 = w.q1 + ((r0 >> g.bw_log) & ((1 << g.bh_log) - 1)),
                p0 = w.q0 + (r0 >> (g.bw_log + g.bh_log));
#pragma unroll
      for (int b = 0; b < BN / kCols; ++b) tma_store_5d(tmC, buf + b * kBoxBytes, w.n0 + b * kCols, p2, p1, p0, w.n);
      tma_store_commit();
    }
#endif
  }

  __device__ __forceinline__ void finish(int, int ctid) const {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if (a->tma_store && ctid == 0) tma_store_wait_all();
#endif
  }

  // Row r of the brick is position (r % bw, (r / bw) % bh, r / (bw * bh)).
  __device__ __forceinline__ void epilogue(int tile, const float* acc, int half, int ctid, int consumer) const {
    if (a->tma_store) {
      epilogue_tma(tile, acc, half, ctid, consumer);
      return;
    }
    const TmaArgs& g = *a;
    const Where w = where(tile);
    const TmaClass& k = g.cls[w.c];
    const int bw = 1 << g.bw_log, bh = 1 << g.bh_log;
    T* dst = static_cast<T*>(g.dst);
    store_block<T, BN>(acc, ctid, w.n0, g.Ng, static_cast<const T*>(g.bias), [&](int r) -> T* {
      r += half * 64;
      const int p2 = w.q2 + (r & (bw - 1)), p1 = w.q1 + ((r >> g.bw_log) & (bh - 1)),
                p0 = w.q0 + (r >> (g.bw_log + g.bh_log));
      if (p0 >= k.out[0] || p1 >= k.out[1] || p2 >= k.out[2]) return nullptr;
      const int r0 = p0 * g.ostride[0] + k.ooff[0], r1 = p1 * g.ostride[1] + k.ooff[1],
                r2 = p2 * g.ostride[2] + k.ooff[2];
      return dst + (((i64(w.n) * g.full[0] + r0) * g.full[1] + r1) * g.full[2] + r2) * g.Ng;
    });
  }
};

template <typename T, int BN, bool SPLIT, int TG = 1, bool RES = false>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    conv_tma_kernel(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB,
                    const __grid_constant__ CUtensorMap tmC, const __grid_constant__ TmaArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = TmaCfg<T, BN, SPLIT, TG, RES>;
  __shared__ alignas(8) uint64_t res_bar;
  const uint32_t smem = dynamic_smem_base();
  const uint32_t res_bar_addr = uint32_t(__cvta_generic_to_shared(&res_bar));
  if (RES && threadIdx.x == 0) mbar_init(res_bar_addr, 1);  // fenced and synchronised by persistent_gemm's set-up
  tma_prefetch_maps(&tmA, &tmB);
  if (threadIdx.x == 0 && a.tma_store) tma_prefetch_map(&tmC);
  const uint32_t after_stages = smem + (Cfg::kStages + Cfg::kSplitBufs) * Cfg::kStageBytes;
  const TmaConvOp<T, BN, SPLIT, TG, RES> op{&tmA, &tmB, &a, smem + Cfg::kStages * Cfg::kStageBytes, &tmC,
                                            after_stages, smem + Cfg::kResOffset, res_bar_addr};
  persistent_gemm<Cfg::kStages, Cfg::kStageBytes, BN / 2>(op, smem);
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
