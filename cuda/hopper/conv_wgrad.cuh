// Grad-weight as a split-K implicit GEMM with MN-major operands (16-bit dtypes):
//   rows (M)    = (tap, input channel) pairs, 128 per block (64 per warpgroup): the Ntot = taps * C columns of dw;
//   columns (N) = output channels o, BN per block;
//   K           = output positions m = (n, q0, q1, q2), 64 per K-tile, the K-tiles split into contiguous ranges.
// A K-tile row is one position: for A, the input pixels that the block's 128 (tap, channel) pairs read there
// (x NDHWC, zero outside the input); for B, dy's BN channels at that position (contiguous in NDHWC). Both tiles are
// stored row = K, so wgmma reads them transposed (MN-major). Each split writes fp32 partial sums
// partial[split][Ntot][O]; `wgrad_reduce_kernel` adds them in split order (deterministic) into dw ODHWI.
#pragma once

#include "persistent.cuh"

namespace jaxconv3d {
namespace hopper {

struct WgradArgs {
  const void* x;    // NDHWC, C channels
  const void* dy;   // NDHWC, O channels
  float* partial;   // [splits][Ntot][O]
  i64 M;            // positions
  int O, C, Ntot;
  int in[3], stride[3], pad[3], dil[3], k[3];
  uint32_t spatial; // out[0] * out[1] * out[2] (< 2^31)
  FastDiv div_spatial, div_out2, div_out1;  // div_spatial serves while M < 2^32
  int out1, out2;
  int ktiles, tiles_per_split;
};

template <int BN>
struct WgradCfg {
  static constexpr int kABytes = 2 * 64 * kRowBytes;   // two 64-wide M blocks of 64 K-rows
  static constexpr int kBBytes = (BN / 64) * 64 * kRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = BN == 128 ? 5 : 6;
  static constexpr int kSmem = kStages * kStageBytes + 1024;
};

// Writes one warpgroup's 64 x BN fp32 accumulator block (rows = (tap, channel) from r0, columns = o from o0) into
// a split's partial sums [Ntot][O].
template <int BN>
__device__ __forceinline__ void store_partials(const float* acc, float* part, int r0, int o0, int Ntot,
                                               int O, int tid) {
  const int lane = tid & 31, warp = (tid >> 5) & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = r0 + warp * 16 + (lane >> 2) + 8 * h;
    if (r >= Ntot) continue;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const int o = o0 + nt * 8 + (lane & 3) * 2;
      if (o < O)  // O is a multiple of 8, so o + 1 < O too
        *reinterpret_cast<float2*>(part + i64(r) * O + o) = make_float2(acc[nt * 4 + h * 2], acc[nt * 4 + h * 2 + 1]);
    }
  }
}

template <typename T, int BN>
__global__ void __launch_bounds__(kThreads, 1) conv_wgrad_kernel(const __grid_constant__ WgradArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = WgradCfg<BN>;
  const uint32_t smem = dynamic_smem_base();
  const int tid = threadIdx.x;
  const int chunk = tid & 15;     // 16-byte chunk along the 128-wide M (and, for B, along BN)
  const int row0 = tid >> 4;      // K rows row0 + 16 * i
  const int na0 = blockIdx.x * 128;
  const int o0 = blockIdx.y * BN;
  const int split = blockIdx.z;
  const T* x = static_cast<const T*>(a.x);
  const T* dy = static_cast<const T*>(a.dy);

  // The (tap, channel) pair this thread's A chunk covers is fixed for the whole block.
  const int na = na0 + chunk * 8;
  const bool aval = na < a.Ntot;
  const int tap = aval ? na / a.C : 0, c = aval ? na - tap * a.C : 0;
  const int j2 = tap % a.k[2], j1 = (tap / a.k[2]) % a.k[1], j0 = tap / (a.k[2] * a.k[1]);
    const bool bload = BN == 128 || chunk < 8;
  const int ob = o0 + chunk * 8;
  const bool bval = bload && ob < a.O;
  // A chunk j -> M block j / 8 (64 wide), chunk j % 8 inside it; B likewise.
  const uint32_t a_dst = (chunk >> 3) * (64 * kRowBytes) + swz(row0, chunk & 7);

  const int kt_begin = split * a.tiles_per_split;
  const int kt_count = min(a.tiles_per_split, a.ktiles - kt_begin);

  // Row table: for each of a K-tile's 64 positions, where its window starts in x and where it lies in dy,
  // decoded once by 64 threads (double-buffered by K-tile parity) instead of by every loading thread.
  struct RowInfo {
    i64 xoff;        // offset of pixel (n, q * stride - pad) in x
    i64 dyoff;       // m * O, or -1 past the last position
    int b[3];        // q * stride - pad
    int pad_;
  };
  __shared__ RowInfo rows[2][64];
  const int toff[3] = {j0 * a.dil[0], j1 * a.dil[1], j2 * a.dil[2]};
  const i64 tapoff = ((i64(toff[0]) * a.in[1] + toff[1]) * a.in[2] + toff[2]) * a.C + c;
  auto prep = [&](int kt) {
    if (tid >= 64 || kt >= kt_count) return;
    RowInfo& r = rows[kt & 1][tid];
    const i64 m = i64(kt_begin + kt) * 64 + tid;
    if (m >= a.M) {
      r.dyoff = -1;
      return;
    }
    const i64 n = a.M < (i64(1) << 32) ? i64(a.div_spatial.div(uint32_t(m))) : m / a.spatial;
    const uint32_t sp = uint32_t(m - n * a.spatial);
    const uint32_t t = a.div_out2.div(sp);
    const int q2 = int(sp - t * uint32_t(a.out2));
    const uint32_t q0 = a.div_out1.div(t);
    const int q1 = int(t - q0 * uint32_t(a.out1));
    r.b[0] = int(q0) * a.stride[0] - a.pad[0];
    r.b[1] = q1 * a.stride[1] - a.pad[1];
    r.b[2] = q2 * a.stride[2] - a.pad[2];
    r.xoff = (((n * a.in[0] + r.b[0]) * a.in[1] + r.b[1]) * i64(a.in[2]) + r.b[2]) * a.C;
    r.dyoff = m * a.O;
  };

  auto load = [&](int kt, uint32_t stage) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const RowInfo& r = rows[kt & 1][row0 + 16 * i];
      const bool mval = r.dyoff >= 0;
      const int p0 = r.b[0] + toff[0], p1 = r.b[1] + toff[1], p2 = r.b[2] + toff[2];
      const bool v = mval && aval && unsigned(p0) < unsigned(a.in[0]) && unsigned(p1) < unsigned(a.in[1]) &&
                     unsigned(p2) < unsigned(a.in[2]);
      cp_async16(stage + a_dst + 16 * 128 * i, v ? x + r.xoff + tapoff : x, v);
      if (bload) {
        const bool vb = mval && bval;
        cp_async16(stage + Cfg::kABytes + a_dst + 16 * 128 * i, vb ? dy + r.dyoff + ob : dy, vb);
      }
    }
  };

  const int wg = tid >> 7;
  auto mma = [&](uint32_t stage, float(&acc)[BN / 2], bool accumulate) {
#pragma unroll
    for (int ks = 0; ks < 64 / 16; ++ks) {
      const uint64_t da = smem_desc(stage + wg * 64 * kRowBytes + ks * 2048, 64 * kRowBytes, 1024);
      const uint64_t db = smem_desc(stage + Cfg::kABytes + ks * 2048, 64 * kRowBytes, 1024);
      Mma<T, BN, 1, 1>::run(acc, da, db, (accumulate || ks > 0) ? 1 : 0);
    }
  };

  float acc[BN / 2];
  mainloop<Cfg::kStages, Cfg::kStageBytes>(smem, kt_count > 0 ? kt_count : 0, acc, prep, load, mma);

  store_partials<BN>(acc, a.partial + i64(split) * a.Ntot * a.O, na0 + wg * 64, o0, a.Ntot, a.O, tid);
#endif
}

// The TMA variant (C a multiple of 64): a K-tile is a brick of 64 output positions (bw x bh x bd); each 64-wide
// M block of the A tile is one tap x 64 input channels, copied as one 5-D box of x (start q * stride - pad + j *
// dilation, traversal step = stride); the B tile is BN/64 boxes of dy over the same brick. Positions outside the
// output grid read dy as zeros, so they add nothing.
struct WgradTmaArgs {
  float* partial;  // [splits][Ntot][O]
  int O, C, Ntot, taps;
  int k[3], stride[3], pad[3], dil[3];
  int bw_log, bh_log, bd_log;
  int tiles[3];     // bricks along D, H, W
  int ktiles, tiles_per_split, splits;
};

// The tile walk both TMA grad-weight ops share: tiles, split ranges, and the producer's copies. A K-tile's A part is
// 128 / BOX_CH boxes of x (each one tap x BOX_CH channels = 128 bytes, 64 positions: kBox bytes), its B part BN /
// BOX_CH boxes of dy, all over one brick; the epilogue writes a consumer's 64 rows of partial sums.
template <int BN, int BOX_CH>
struct WgradTmaWalk {
  static constexpr int kABoxes = 128 / BOX_CH;
  static constexpr int kBox = 64 * kRowBytes;
  static constexpr int kABytes = kABoxes * kBox;
  const CUtensorMap* tmX;
  const CUtensorMap* tmDy;
  const WgradTmaArgs* a;

  __device__ __forceinline__ int mblocks() const { return (a->Ntot + 127) / 128; }
  __device__ __forceinline__ int oblocks() const { return (a->O + BN - 1) / BN; }
  __device__ __forceinline__ int tiles() const { return mblocks() * oblocks() * a->splits; }
  // tile = (split * oblocks + ob) * mblocks + mb: neighbouring blocks share a split's stretch of x and dy.
  __device__ __forceinline__ int split_of(int tile) const { return tile / (mblocks() * oblocks()); }
  __device__ __forceinline__ int ktiles(int tile) const {
    const int begin = split_of(tile) * a->tiles_per_split;
    return max(0, min(a->tiles_per_split, a->ktiles - begin));
  }

  struct Cursor {
    int mc[kABoxes], mj[kABoxes][3];  // channel and tap of each M block (fixed for the tile)
    int o0;
    int tw, th, td, tn;   // the brick walk
  };
  __device__ __forceinline__ Cursor cursor(int tile) const {
    const WgradTmaArgs& g = *a;
    Cursor c;
    const int mb = tile % mblocks();
    c.o0 = ((tile / mblocks()) % oblocks()) * BN;
#pragma unroll
    for (int b = 0; b < kABoxes; ++b) {
      const int na = mb * 128 + BOX_CH * b;
      const int tap = na < g.Ntot ? na / g.C : 0;
      c.mc[b] = na < g.Ntot ? na - tap * g.C : g.C;  // past the end: a box wholly outside x, i.e. zeros
      c.mj[b][2] = tap % g.k[2];
      c.mj[b][1] = (tap / g.k[2]) % g.k[1];
      c.mj[b][0] = tap / (g.k[2] * g.k[1]);
    }
    const int bt = split_of(tile) * g.tiles_per_split;
    c.tw = bt % g.tiles[2];
    c.th = (bt / g.tiles[2]) % g.tiles[1];
    c.td = (bt / (g.tiles[2] * g.tiles[1])) % g.tiles[0];
    c.tn = bt / (g.tiles[2] * g.tiles[1] * g.tiles[0]);
    return c;
  }
  __device__ __forceinline__ void issue(Cursor& c, uint32_t stage, uint32_t bar) const {
    load(c, stage, bar, tmX, tmDy);
    advance(c);
  }
  // The cursor's K-tile of x (through map mx: the A part at `stage`) and of dy (mdy: the B part after it).
  __device__ __forceinline__ void load(const Cursor& c, uint32_t stage, uint32_t bar, const CUtensorMap* mx,
                                       const CUtensorMap* mdy) const {
    const WgradTmaArgs& g = *a;
    const int q2 = c.tw << g.bw_log, q1 = c.th << g.bh_log, q0 = c.td << g.bd_log;
#pragma unroll
    for (int b = 0; b < kABoxes; ++b)
      tma_load_5d(stage + b * kBox, mx, bar, c.mc[b], q2 * g.stride[2] - g.pad[2] + c.mj[b][2] * g.dil[2],
                  q1 * g.stride[1] - g.pad[1] + c.mj[b][1] * g.dil[1], q0 * g.stride[0] - g.pad[0] + c.mj[b][0] * g.dil[0],
                  c.tn);
#pragma unroll
    for (int b = 0; b < BN / BOX_CH; ++b)
      tma_load_5d(stage + kABytes + b * kBox, mdy, bar, c.o0 + BOX_CH * b, q2, q1, q0, c.tn);
  }
  __device__ __forceinline__ void advance(Cursor& c) const {
    const WgradTmaArgs& g = *a;
    if (++c.tw == g.tiles[2]) {
      c.tw = 0;
      if (++c.th == g.tiles[1]) {
        c.th = 0;
        if (++c.td == g.tiles[0]) { c.td = 0; ++c.tn; }
      }
    }
  }
  __device__ __forceinline__ void finish(int, int) const {}
  __device__ __forceinline__ void epilogue(int tile, const float* acc, int consumer, int ctid, int) const {
    const WgradTmaArgs& g = *a;
    const int mb = tile % mblocks(), o0 = ((tile / mblocks()) % oblocks()) * BN;
    store_partials<BN>(acc, g.partial + i64(split_of(tile)) * g.Ntot * g.O, mb * 128 + consumer * 64, o0, g.Ntot,
                       g.O, ctid);
  }
};

// 16-bit operands: 64 channels per box, read MN-major by wgmma straight from the stage.
template <typename T, int BN>
struct WgradTmaOp : WgradTmaWalk<BN, 64> {
  using Cfg = WgradCfg<BN>;
  static constexpr bool kStageFreeAfterMma = false;
  static constexpr bool kPingPong = false;
  static_assert(WgradTmaWalk<BN, 64>::kABytes == Cfg::kABytes, "the walk's A tile is the stage's");

  __device__ __forceinline__ void mma(uint32_t stage, float* acc, int consumer, bool accumulate, int) const {
#pragma unroll
    for (int ks = 0; ks < 64 / 16; ++ks) {
      const uint64_t da = smem_desc(stage + consumer * 64 * kRowBytes + ks * 2048, 64 * kRowBytes, 1024);
      const uint64_t db = smem_desc(stage + Cfg::kABytes + ks * 2048, 64 * kRowBytes, 1024);
      Mma<T, BN, 1, 1>::run(acc, da, db, (accumulate || ks > 0) ? 1 : 0);
    }
  }
};

template <typename T, int BN>
__global__ void __launch_bounds__(kPersistentThreads, 1)
    conv_wgrad_tma_kernel(const __grid_constant__ CUtensorMap tmX, const __grid_constant__ CUtensorMap tmDy,
                          const __grid_constant__ WgradTmaArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = WgradCfg<BN>;
  const uint32_t smem = dynamic_smem_base();
  tma_prefetch_maps(&tmX, &tmDy);
  const WgradTmaOp<T, BN> op{{&tmX, &tmDy, &a}};
  persistent_gemm<Cfg::kStages, Cfg::kStageBytes, BN / 2>(op, smem);
#endif
}

// s[r] = p[r][0] + p[r][stride] + ... + p[r][(n - 1) * stride] for R rows, each added in that order (the split
// reduction's fixed order: every sum bitwise a plain loop's), the loads of all rows issued eight terms at a time.
// One load's latency per term bound the plain loop where blocks are few (perf.md v22: unet_256's reduce 6.8 -> 4.3
// us, down_s2's 7.3 -> 5.8). A row the caller does not need may point anywhere readable; n may be 0.
template <int R>
__device__ __forceinline__ void ordered_sums(const float* const (&p)[R], i64 stride, int n, float (&s)[R]) {
  constexpr int kBatch = 8;
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.0f;
  int k = 0;
  for (; k + kBatch <= n; k += kBatch) {
    float v[R][kBatch];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = 0; j < kBatch; ++j) v[r][j] = p[r][(k + j) * stride];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = 0; j < kBatch; ++j) s[r] += v[r][j];
  }
  for (; k < n; ++k)
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] += p[r][k * stride];
}

// dw[o][n] = the sum over splits of partial[s][n][o]: the splits in CHUNKS contiguous chunks, each summed in split
// order, then the chunks added in chunk order (a fixed order: deterministic, the same on every device). A block of 32
// x 8 x CHUNKS threads sums a 32 (n) x 32 (o) tile, each z slice one chunk, with reads along o; it adds the chunks
// and writes the tile through shared memory along n: both sides coalesced (a thread per element writing dw[o][n]
// directly scattered 2-4-byte stores at a stride of Ntot elements: 37 us for unet_256's 1.8M-element filter against
// ~4 us for the bytes). Grid: x over n tiles, y (strided) over o tiles. reduce_chunks() picks CHUNKS from the tile
// count alone: four where the tiles are fewer than one wave (more loads in flight: pointwise's 32 tiles 17.9 -> 5.6
// us, down_s2's 54 tiles 5.7 -> 3.2), else one (unet_256's 1728 tiles: 4.3 us with one, 17.3 with four; perf.md v23).
constexpr int kFewReduceTiles = 132;
inline int reduce_chunks(int64_t tiles) { return tiles < kFewReduceTiles ? 4 : 1; }

template <typename T, int CHUNKS>
__global__ void __launch_bounds__(256 * CHUNKS) wgrad_reduce_kernel(const float* __restrict__ partial,
                                                                   T* __restrict__ dw, int Ntot, int O, int splits) {
  __shared__ float tile[CHUNKS][32][33];
  const i64 total = i64(Ntot) * O;
  const int tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
  const int per = (splits + CHUNKS - 1) / CHUNKS;
  const int k0 = min(splits, tz * per), k1 = min(splits, k0 + per);
  const int n0 = blockIdx.x * 32;
  for (int o0 = blockIdx.y * 32; o0 < O; o0 += gridDim.y * 32) {
    const float* rows[4];  // the thread's four elements (n0 + ty + 8r, o0 + tx); one outside reads element (0, 0)
    float s[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int n = n0 + ty + 8 * r, o = o0 + tx;
      rows[r] = partial + i64(k0) * total + (n < Ntot && o < O ? i64(n) * O + o : 0);
    }
    ordered_sums(rows, total, k1 - k0, s);
#pragma unroll
    for (int r = 0; r < 4; ++r) tile[tz][ty + 8 * r][tx] = s[r];
    __syncthreads();
    if (tz == 0) {
#pragma unroll
      for (int i = 0; i < 32; i += 8) {
        const int o = o0 + ty + i, n = n0 + tx;
        float v = tile[0][tx][ty + i];
#pragma unroll
        for (int c = 1; c < CHUNKS; ++c) v += tile[c][tx][ty + i];
        if (n < Ntot && o < O) dw[i64(o) * Ntot + n] = from_float<T>(v);
      }
    }
    __syncthreads();
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
