// sm80 depthwise 3x3x3 grad-weight on tensor cores, for 16-bit NCDHW tensors (stride 1, dilation 1):
//   dw[o][kd][kh][kw] = sum over samples and positions q of dy[o][q] x[o / Og][q + (kd, kh, kw) - P].
// For one dy row r of a dy plane p and a 16-column window of x columns X0 + 16 w + k (k = 0..15),
//   C[(kd, kh)][kw] += sum_k x[p + kd - P0][r + kh - P1][X0 + 16 w + k] * dy[p][r][X0 + 16 w + k - kw + P2]
// is one mma.sync.m16n8k16: A = the 9 (kd, kh) taps' x rows (rows 9..15 read zeros), B = the dy row shifted by kw
// (columns 0..2 of the 8; the rest zeros); 27 of its 128 outputs are taps. Every (dy column, kw) product is taken
// exactly once: a warp's dy columns are its own 32 (staged inside zeros) and its three x windows (48 columns from
// X0 = ox0 - S, S = P2 rounded up to a multiple of 4 for aligned copies) cover every x column they reach.
//   warp  = one (sample, 16-row H block, 32-column W block) column of channel o through a run of dy planes: x planes
//           (18 rows x 48 columns, rows of 56) in a four-stage cp.async ring (x planes p .. p + 2 read while p + 3
//           is copied), dy planes (16 rows, the 32 columns inside zero margins) in two stages, and a copy of the
//           current dy plane shifted by one element, so each lane's B pairs are aligned 32-bit loads;
//   block = (channel o, split): four warps share the split's (column, dy plane) pairs in four contiguous runs; the
//           three windows' accumulators are added in order, then the warps' 27 sums in warp order, written to dw
//           (S = 1) or the split's row of the workspace, which splits_reduce_kernel adds in split order. The splits
//           depend on the problem alone (wg_plan): deterministic on every device.
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

constexpr int kRows = 16, kCols = 32;        // a warp's dy window (rows x columns) of a plane
constexpr int kXRows = kRows + 2;            // staged x rows
constexpr int kXChunks = 12;                 // 8-byte copies an x row: 48 columns, three 16-column windows
constexpr int kRowElems = 56;                // staged row stride: 112 bytes, so ldmatrix rows hit every bank
constexpr int kXStages = 4;
constexpr int kXStage = kXRows * kRowElems;
constexpr int kDyMargin = 8;                 // staged dy row: 8 zero columns, the warp's 32, 16 zero columns
constexpr int kDyStage = kRows * kRowElems;
constexpr int kDyChunks = kCols / 4;
constexpr int kWarps = 4;
constexpr int kXCopies = (kXRows * kXChunks + 31) / 32;
constexpr int kDyCopies = kRows * kDyChunks / 32;
constexpr int kQWords = 17;                  // shifted-copy words a row that can be non-zero: columns 6 .. 39
// per warp: x ring, two dy stages, the shifted dy copy; per block: a zero block A's rows 9..15 read
constexpr int kWarpElems = kXStages * kXStage + 3 * kDyStage;
constexpr int kZeroElems = kRows * kRowElems + 48;
constexpr int kSmemBytes = (kWarps * kWarpElems + kZeroElems) * 2 + kWarps * 27 * 4;
static_assert(kRows * kDyChunks % 32 == 0, "whole dy copies a lane");

struct WgMmaArgs {
  const void* x;
  const void* dy;
  void* out;  // dw (S == 1) or the float workspace [S][O * 27]
  int O, C, Og, S;
  i64 units, per_split;  // (column, dy plane) pairs of a channel; a split's share
  int nhb, nwb;          // H blocks, W blocks of a dy plane
  int od[3], sd[3], P[3];
};

template <typename T>
__global__ void __launch_bounds__(32 * kWarps, 4) wgrad_dw3_mma_kernel(const WgMmaArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T* xring = smem + warp * kWarpElems;
  T* dyp = xring + kXStages * kXStage;  // two stages
  T* dyq = dyp + 2 * kDyStage;          // dyq[r][i] = dyp[r][i + 1] of the current plane
  T* zeros = smem + kWarps * kWarpElems;
  float(*red)[27] = reinterpret_cast<float(*)[27]>(smem_raw + (kWarps * kWarpElems + kZeroElems) * 2);
  // zero margins, shifted copy and zero block: written once, never copied over
  for (int i = threadIdx.x; i < kWarps * kWarpElems + kZeroElems; i += 32 * kWarps) smem[i] = cvt<T>(0.0f);
  __syncthreads();

  const int o = int(blockIdx.x % unsigned(a.O)), split = int(blockIdx.x / unsigned(a.O));
  const int c = o / a.Og;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const i64 sHW = i64(a.sd[1]) * a.sd[2], oHW = i64(a.od[1]) * a.od[2];
  const int S = (a.P[2] + 3) & ~3, e = S - a.P[2];
  const int g = lane >> 2, t = lane & 3;
  // A (ldmatrix.x4): lane l names row m = l % 8 + 8 (l / 8 % 2), columns 8 (l / 16) of a window; m = 3 kd + kh
  const int m = (lane & 7) + 8 * ((lane >> 3) & 1), kb = lane >> 4;
  const int kd = m < 9 ? m / 3 : 0, kh = m < 9 ? m % 3 : 0;
  // B: lane (kw = g, t) holds dy columns j0 + {0, 1} and j0 + 8 + {0, 1} of the staged row, j0 = 8 - e + 2 t - kw;
  // an odd j0 reads the shifted copy at j0 - 1
  const bool b_live = g < 3;
  const int j0 = kDyMargin - e + 2 * t - g;
  const bool b_odd = (j0 & 1) != 0;

  float acc[3][4];
#pragma unroll
  for (int w = 0; w < 3; ++w)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[w][i] = 0.0f;

  const i64 s0 = i64(split) * a.per_split, s1 = min(a.units, s0 + a.per_split);
  const i64 per_warp = (s1 - s0 + kWarps - 1) / kWarps;
  i64 cur = s0 + warp * per_warp;
  const i64 end = min(s1, cur + per_warp);
#pragma unroll 1
  while (cur < end) {
    const int z = int(cur % a.od[0]), len = int(min(i64(a.od[0] - z), end - cur));
    i64 col = cur / a.od[0];
    cur += len;
    const int ox0 = int(col % a.nwb) * kCols;
    col /= a.nwb;
    const int oy0 = int(col % a.nhb) * kRows;
    const i64 n = col / a.nhb;
    const T* xc = x + (n * a.C + c) * (sHW * a.sd[0]);
    const T* dc = dy + (n * a.O + o) * (oHW * a.od[0]);

    // this lane's copies: x chunk q = lane + 32 i (row q / 12, chunk q % 12) lands at row stride 56; dy chunk
    // q (row q / 8, chunk q % 8) at column 8 + 4 (q % 8); offsets in the plane and in-plane bits fixed per column
    int xoff[kXCopies], doff[kDyCopies];
    unsigned xin = 0, din = 0;
#pragma unroll
    for (int i = 0; i < kXCopies; ++i) {
      const int q = lane + 32 * i, y = oy0 - a.P[1] + q / kXChunks, xx = ox0 - S + 4 * (q % kXChunks);
      xoff[i] = y * a.sd[2] + xx;
      if (q < kXRows * kXChunks && unsigned(y) < unsigned(a.sd[1]) && unsigned(xx) < unsigned(a.sd[2])) xin |= 1u << i;
    }
#pragma unroll
    for (int i = 0; i < kDyCopies; ++i) {
      const int q = lane + 32 * i, y = oy0 + q / kDyChunks, xx = ox0 + 4 * (q % kDyChunks);
      doff[i] = y * a.od[2] + xx;
      if (unsigned(y) < unsigned(a.od[1]) && unsigned(xx) < unsigned(a.od[2])) din |= 1u << i;
    }
    auto issue_x = [&](int js) {  // x plane js (depth z - P0 + js) into stage js % 4, zeros outside the volume
      const int sz = z - a.P[0] + js;
      const bool pin = unsigned(sz) < unsigned(a.sd[0]);
      const T* pl = xc + i64(pin ? sz : 0) * sHW;
      T* dst = xring + (js & 3) * kXStage;
#pragma unroll
      for (int i = 0; i < kXCopies; ++i) {
        const int q = lane + 32 * i;
        if (i + 1 < kXCopies || q < kXRows * kXChunks) {
          const bool in = pin && (xin >> i & 1u);
          cp_async<8>(dst + (q / kXChunks) * kRowElems + 4 * (q % kXChunks), in ? pl + xoff[i] : pl, in);
        }
      }
    };
    auto issue_dy = [&](int p) {  // dy plane z + p into stage p % 2
      const T* pl = dc + i64(z + p) * oHW;
      T* dst = dyp + (p & 1) * kDyStage + kDyMargin;
#pragma unroll
      for (int i = 0; i < kDyCopies; ++i) {
        const int q = lane + 32 * i;
        const bool in = din >> i & 1u;
        cp_async<8>(dst + (q / kDyChunks) * kRowElems + 4 * (q % kDyChunks), in ? pl + doff[i] : pl, in);
      }
    };

    issue_x(0);
    issue_x(1);
    issue_x(2);
    issue_dy(0);
    cp_async_commit();
#pragma unroll 1
    for (int p = 0; p < len; ++p) {
      cp_async_wait<0>();
      __syncwarp();  // x planes p .. p + 2 and dy plane p are in for every lane
      const T* dcur = dyp + (p & 1) * kDyStage;
      // the shifted copy: words 3 .. 19 of each row (columns 6 .. 39), the only ones a non-zero can reach
#pragma unroll
      for (int q = lane; q < kRows * kQWords; q += 32) {
        const int r = q / kQWords, wi = 3 + q % kQWords;
        const unsigned* src = reinterpret_cast<const unsigned*>(dcur + r * kRowElems) + wi;
        reinterpret_cast<unsigned*>(dyq + r * kRowElems)[wi] = __byte_perm(src[0], src[1], 0x5432);
      }
      __syncwarp();
      if (p + 3 < len + 2) issue_x(p + 3);  // into plane p - 1's stage
      if (p + 1 < len) issue_dy(p + 1);
      cp_async_commit();

      const T* arow = m < 9 ? xring + ((p + kd) & 3) * kXStage + kh * kRowElems + 8 * kb : zeros + 8 * kb;
      const T* brow = b_odd ? dyq + (j0 - 1) : dcur + j0;
#pragma unroll 4
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int w = 0; w < 3; ++w) {
          unsigned av[4], bv[2] = {0u, 0u};
          ldmatrix_x4(av, arow + r * kRowElems + 16 * w);
          if (b_live) {
            const unsigned* bp = reinterpret_cast<const unsigned*>(brow + r * kRowElems + 16 * w);
            bv[0] = bp[0];
            bv[1] = bp[4];
          }
          mma(acc[w], av, bv, static_cast<T*>(nullptr));
        }
      }
    }
    cp_async_wait<0>();
    __syncwarp();  // the next column's first copies overwrite stages this one read
  }

  // C fragment: c0, c1 at (m = g, n = 2 t, 2 t + 1), c2, c3 at (m = g + 8, ...); tap = 3 m + n for m < 9, n < 3
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = acc[0][i] + acc[1][i] + acc[2][i];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int mm = g + 8 * (i >> 1), nn = 2 * t + (i & 1);
    if (mm < 9 && nn < 3) red[warp][3 * mm + nn] = v[i];
  }
  __syncthreads();
  if (threadIdx.x < 27) {
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[w][threadIdx.x];
    const i64 idx = i64(o) * 27 + threadIdx.x;
    if (a.S == 1)
      static_cast<T*>(a.out)[idx] = cvt<T>(s);
    else
      static_cast<float*>(a.out)[i64(split) * a.O * 27 + idx] = s;
  }
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
  a.nwb = int((p.out[2] + kCols - 1) / kCols);
  const int64_t blocks = int64_t(pl.mma_S) * p.out_channels;
  if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (tensor-core depthwise 3x3x3 wgrad)";
  if (blocks == 0) return "";
  static std::atomic<uint64_t> smem_set{0};
  if (allow_smem(wgrad_dw3_mma_kernel<T>, kSmemBytes, smem_set) != cudaSuccess)
    return launch_error("tensor-core depthwise 3x3x3 wgrad (shared memory)");
  wgrad_dw3_mma_kernel<T><<<unsigned(blocks), 32 * kWarps, kSmemBytes, st>>>(a);
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
