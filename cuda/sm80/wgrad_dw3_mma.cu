// sm80 depthwise 3x3x3 grad-weight on tensor cores, for 16-bit NCDHW tensors (stride 1, dilation 1):
//   dw[o][kd][kh][kw] = sum over samples and positions q of dy[o][q] x[o / Og][q + (kd, kh, kw) - P].
// The sum is taken over pairs (x column s, kw): dy column s - kw + P2. One mma.sync.m16n8k16 takes 16 x columns
// (K) of five dy rows r' against eight x rows j of one x plane:
//   C[(kw, r')][j] += sum over s of dy[r'][s - kw + P2] x[j][s]      (A row m = 5 kw + r', m = 15 zero; B col j)
// and C[(kw, r')][r' + kh] is tap (kd, kh, kw) of that x plane's kd, so 45 of its 128 outputs are taps. The A
// fragment of a dy plane serves the three x planes it meets (kd = 0, 1, 2); a B fragment (ldmatrix, x rows as
// they lie) serves all 15 rows (kw, r'), and stays in registers for the three dy planes that meet its x plane (a
// three-slot ring, the plane loop unrolled by three), so each staged plane is read from shared memory once. Every
// (dy position, tap) product is taken once: dy rows are tiled by 15 (three groups of five), x columns (K) by 32
// (two 16-column windows), dy planes by runs.
//   warp  = one (sample, 15-row dy block, 32-column x block) column of channel o through a run of dy planes:
//           x planes (18 rows from the block's first dy row - P1, 32 columns, rows of 40 elements) in a
//           three-stage cp.async ring, dy planes (15 rows, 40 columns from the first one the block reaches,
//           rounded down to a multiple of 4; rows of 52 elements, so the five dy rows an A load reads hit disjoint
//           banks) in three stages, copies two planes ahead; a lane's A pair starts at an odd element for half the
//           kw, so each pair is taken from the two aligned words around it by one byte permute;
//   block = (channel o, split): four warps share the split's (column, dy plane) pairs in four contiguous runs; the
//           warps' accumulators go to shared memory and one thread a tap adds them in a fixed order (warps, r'),
//           written to dw (S = 1) or the split's row of the workspace, which splits_reduce_kernel adds in split
//           order. The splits depend on the problem alone (wg_plan): deterministic on every device.
#include <atomic>
#include <climits>
#include <cstdint>

#include "launch_common.cuh"
#include "plane_ring.cuh"
#include "sm80/sm80.h"
#include "sm80/common.cuh"
#include "sm80/mma16.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr int kRows = kWgMY, kCols = kWgMX;  // a warp's dy rows and x columns (K) of a plane
constexpr int kGroups = kRows / 5;            // five dy rows an mma
constexpr int kXRows = kRows + 3;             // staged x rows: the last group's eight
constexpr int kStride = 40;                   // staged x row: 80 bytes, so ldmatrix's eight rows hit every bank
constexpr int kDyStride = 52;                 // staged dy row: 26 words (see the header)
constexpr int kXChunks = kCols / 4;           // 8-byte copies an x row: a copy instruction covers 4 rows
constexpr int kDyChunks = 10;                 // a dy row: 40 columns from the first one reached, rounded down; a
                                              // copy instruction covers 3 rows (30 lanes)
constexpr int kXStages = 3, kDyStages = 3;    // planes in flight: two ahead (x: read once, into registers)
constexpr int kXStage = kXRows * kStride, kDyStage = (kRows * kDyStride + 7) & ~7;
constexpr int kWarps = 4;
constexpr int kXCopies = (kXRows + 3) / 4;
constexpr int kDyCopies = kRows / 3;
constexpr int kWarpElems = kXStages * kXStage + kDyStages * kDyStage;
constexpr int kRedFloats = 3 * 16 * 8;  // a warp's C entries (kd, m, j)
constexpr int kSmemBytes = kWarps * kWarpElems * 2;
static_assert(kRows % 5 == 0 && kRows % 3 == 0 && kCols == 32 && kXChunks == 8 && kDyChunks * 3 <= 32,
              "groups of five dy rows, two 16-column windows, whole copy instructions");
static_assert(kXStage % 8 == 0 && kDyStage % 8 == 0 && kWarpElems % 8 == 0, "16-byte aligned stages");

static_assert(kWarps * kRedFloats * 4 <= kSmemBytes, "the reduction reuses the rings");

struct WgMmaArgs {
  const void* x;
  const void* dy;
  void* out;  // dw (S == 1) or the float workspace [S][O * 27]
  int O, C, Og, S;
  i64 units, per_split;  // (column, dy plane) pairs of a channel; a split's share
  int nhb, nwb;          // dy row blocks, x column blocks
  int od[3], sd[3], P[3];
};

template <typename T>
__global__ void __launch_bounds__(32 * kWarps, 4) wgrad_dw3_mma_kernel(const WgMmaArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T* xring = smem + warp * kWarpElems;
  T* dyring = xring + kXStages * kXStage;

  const int o = int(blockIdx.x % unsigned(a.O)), split = int(blockIdx.x / unsigned(a.O));
  const int c = o / a.Og;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const i64 sHW = i64(a.sd[1]) * a.sd[2], oHW = i64(a.od[1]) * a.od[2];
  // staged dy row: global columns base .. base + 39, base = s0 + P2 - 2 - off (a multiple of 4), off in 0..3
  const int off = (a.P[2] + 2) & 3;  // (P2 - 2) mod 4
  // A: staged dy rows from row 0, element shift off (mma16.cuh's packed form)
  int aword[2];
  unsigned asel[2];
  packed_a_setup(aword, asel, lane, 0, kDyStride, off);
  // B (ldmatrix.x4): lane l names x row (l % 8) of a group, columns 8 (l / 8): windows 0 and 1, k halves 0 and 1
  const int boff = (lane & 7) * kStride + 8 * (lane >> 3);
  // copies: x copy i of a lane is row 4 i + l / 8, chunk l % 8; dy copy i row 3 i + l / 10, chunk l % 10 (l < 30)
  const unsigned xsm = unsigned(__cvta_generic_to_shared(xring)) +
                       2u * ((lane / kXChunks) * kStride + 4 * (lane % kXChunks));
  const unsigned dsm = unsigned(__cvta_generic_to_shared(dyring)) +
                       2u * ((lane / kDyChunks) * kDyStride + 4 * (lane % kDyChunks));

  float acc[3][4];
#pragma unroll
  for (int kd = 0; kd < 3; ++kd)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[kd][i] = 0.0f;

  UnitWalk walk(a.units, a.per_split, split, warp, kWarps);
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
#pragma unroll 1
  while (walk.next(a.od[0], a.nhb, a.nwb, kRows, kCols)) {
    const int z = walk.z, len = walk.len, xs0 = walk.col0, oy0 = walk.row0;
    const i64 n = walk.n;
    const T* xc = x + (n * a.C + c) * (sHW * a.sd[0]);
    const T* dc = dy + (n * a.O + o) * (oHW * a.od[0]);
    const int dbase = xs0 + a.P[2] - 2 - off;

    // offsets in the plane (0 outside it: nothing is read there) and in-plane bits, fixed per column
    int xoff[kXCopies], doff[kDyCopies];
    unsigned xin = 0, din = 0;
#pragma unroll
    for (int i = 0; i < kXCopies; ++i) {
      const int y = oy0 - a.P[1] + 4 * i + lane / kXChunks, xx = xs0 + 4 * (lane % kXChunks);
      const bool in = 4 * i + lane / kXChunks < kXRows && unsigned(y) < unsigned(a.sd[1]) &&
                      unsigned(xx) < unsigned(a.sd[2]);
      xoff[i] = in ? y * a.sd[2] + xx : 0;
      xin |= unsigned(in) << i;
    }
#pragma unroll
    for (int i = 0; i < kDyCopies; ++i) {
      const int y = oy0 + 3 * i + lane / kDyChunks, xx = dbase + 4 * (lane % kDyChunks);
      const bool in = lane < 3 * kDyChunks && unsigned(y) < unsigned(a.od[1]) && unsigned(xx) < unsigned(a.od[2]);
      doff[i] = in ? y * a.od[2] + xx : 0;
      din |= unsigned(in) << i;
    }
    auto issue_x = [&](int js) {  // x plane js (depth z - P0 + js) into stage js % 3, zeros outside the volume
      const int sz = z - a.P[0] + js;
      const bool pin = unsigned(sz) < unsigned(a.sd[0]);
      const T* pl = xc + i64(pin ? sz : 0) * sHW;
      const unsigned dst = xsm + 2u * (js % kXStages) * kXStage;
#pragma unroll
      for (int i = 0; i < kXCopies; ++i)
        if (i + 1 < kXCopies || 4 * i + lane / kXChunks < kXRows)
          cp_async_shared<8>(dst + 2u * 4 * i * kStride, pl + xoff[i], pin && (xin >> i & 1u));
    };
    auto issue_dy = [&](int p) {  // dy plane z + p into stage p % 3
      const T* pl = dc + i64(z + p) * oHW;
      const unsigned dst = dsm + 2u * (p % kDyStages) * kDyStage;
      if (lane < 3 * kDyChunks) {
#pragma unroll
        for (int i = 0; i < kDyCopies; ++i)
          cp_async_shared<8>(dst + 2u * 3 * i * kDyStride, pl + doff[i], din >> i & 1u);
      }
    };

    // B fragments held in registers: slot js % 3 holds x plane js's three groups (two windows each), loaded once
    // when the plane arrives and used by the three dy planes that meet it (kd = 0, 1, 2)
    unsigned bx[3][kGroups][4];
    auto load_b = [&](int js, auto slot) {
      const T* xs = xring + (js % kXStages) * kXStage + boff;
#pragma unroll
      for (int gi = 0; gi < kGroups; ++gi) ldmatrix_x4(bx[decltype(slot)::value][gi], xs + gi * 5 * kStride);
    };
    issue_x(0);
    issue_x(1);
    cp_async_commit();
    issue_x(2);
    issue_dy(0);
    cp_async_commit();
    cp_async_wait<1>();
    __syncwarp();  // x planes 0 and 1 are in
    load_b(0, IC<0>{});
    load_b(1, IC<1>{});
    __syncwarp();  // x plane 3's copies go into plane 0's stage
    if (3 < len + 2) issue_x(3);
    if (1 < len) issue_dy(1);
    cp_async_commit();
    // dy plane p: x plane p + 2 is in its stage (its B into slot (p + 2) % 3), planes p and p + 1 already in
    // registers; copies two planes ahead (x plane p + 4 into the stage of x plane p + 1, whose B was taken and used
    // at step p - 1; dy plane p + 2 into dy plane p - 1's)
    auto step = [&](int p, auto phase) {
      constexpr int PH = decltype(phase)::value;  // p % 3
      cp_async_wait<1>();
      __syncwarp();  // x plane p + 2 and dy plane p are in for every lane
      load_b(p + 2, IC<(PH + 2) % 3>{});
      if (p + 4 < len + 2) issue_x(p + 4);
      if (p + 2 < len) issue_dy(p + 2);
      cp_async_commit();
      const unsigned* dw32 = reinterpret_cast<const unsigned*>(dyring + (p % kDyStages) * kDyStage);
#pragma unroll
      for (int gi = 0; gi < kGroups; ++gi) {
        unsigned av[2][4];
        packed_a(av, dw32 + gi * 5 * (kDyStride / 2), aword, asel);
#pragma unroll
        for (int kd = 0; kd < 3; ++kd) {
          const unsigned* bv = bx[(PH + kd) % 3][gi];
          const unsigned b0[2] = {bv[0], bv[1]}, b1[2] = {bv[2], bv[3]};
          mma(acc[kd], av[0], b0, static_cast<T*>(nullptr));
          mma(acc[kd], av[1], b1, static_cast<T*>(nullptr));
        }
      }
    };
#pragma unroll 1
    for (int p = 0; p < len; p += 3) {
      step(p, IC<0>{});
      if (p + 1 < len) step(p + 1, IC<1>{});
      if (p + 2 < len) step(p + 2, IC<2>{});
    }
    cp_async_wait<0>();
    __syncwarp();  // the next column's first copies overwrite stages this one read
  }
  pdl_release();

  // C fragment: c0, c1 at (m = g, j = 2 t, 2 t + 1), c2, c3 at (m = g + 8, ...); m = 5 kw + r', kh = j - r'
  __syncthreads();  // every warp is done with its ring: the reduction reuses it
  const float s = packed_tap_sum<kWarps>(reinterpret_cast<float*>(smem_raw), acc, warp, lane);
  if (threadIdx.x < 27) store_split_sum<T>(a.out, a.S, split, i64(a.O) * 27, i64(o) * 27 + threadIdx.x, s);
}

template <typename T>
std::string launch(const ConvProblem& p, const WgPlan& pl, const void* x, const void* dy, void* dw, void* ws,
                   cudaStream_t st) {
  WgMmaArgs a;
  a.x = x; a.dy = dy; a.out = pl.mma_S > 1 ? ws : dw;
  a.O = int(p.out_channels); a.C = int(p.in_channels); a.Og = int(p.out_per_group()); a.S = pl.mma_S;
  a.units = pl.mma_units; a.per_split = pl.mma_per_split;
  for (int d = 0; d < 3; ++d) {
    a.od[d] = int(p.out[d]); a.sd[d] = int(p.in[d]); a.P[d] = int(p.pad_lo[d]);
  }
  a.nhb = int((p.out[1] + kRows - 1) / kRows);
  a.nwb = int((p.in[2] + kCols - 1) / kCols);
  const int64_t blocks = int64_t(pl.mma_S) * p.out_channels;
  if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (tensor-core depthwise 3x3x3 wgrad)";
  if (blocks == 0) return "";
  static std::atomic<uint64_t> smem_set{0};
  if (allow_smem(wgrad_dw3_mma_kernel<T>, kSmemBytes, smem_set) != cudaSuccess)
    return launch_error("tensor-core depthwise 3x3x3 wgrad (shared memory)");
  launch_dependent(wgrad_dw3_mma_kernel<T>, dim3(unsigned(blocks)), dim3(32 * kWarps), kSmemBytes, st, a);
  return launch_error("tensor-core depthwise 3x3x3 wgrad");
}

}  // namespace

bool wgrad_dw3_mma_aligned(const void* x, const void* dy) {
  return reinterpret_cast<uintptr_t>(x) % 8 == 0 && reinterpret_cast<uintptr_t>(dy) % 8 == 0;
}

std::string wgrad_dw3_mma(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw,
                          void* workspace, void* stream) {
  if (!pl.mma) return "jaxconv3d cuda: the tensor-core depthwise 3x3x3 grad-weight does not apply to this problem";
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t == DType::kBF16) return launch<__nv_bfloat16>(p, pl, x, dy, dw, workspace, st);
  if (t == DType::kF16) return launch<__half>(p, pl, x, dy, dw, workspace, st);
  return "jaxconv3d cuda: the tensor-core depthwise 3x3x3 grad-weight takes bfloat16 and float16";
}

}  // namespace sm80
}  // namespace jaxconv3d
