// The backward of a 16-bit NCDHW depthwise 3x3x3 layer (stride 1, dilation 1, channel multiplier 1) in one pass over
// dy: grad-input and grad-weight together (sm80::fused_grads() says where; Kernel::kDw3BwdMma):
//   dx[c][z][h][w]       = sum over taps of dy[c][z - kd + P0][h - kh + P1][w - kw + P2] w[c][kd][kh][kw]
//   dw[c][kd][kh][kw]    = sum over samples and dy positions q of dy[c][q] x[c][q + (kd, kh, kw) - P]
// (P: padding before). Each staged dy plane serves both: the grad-input as stencil3_mma.cu's banded stencil (flipped
// taps, source window from w0 - P', P' = 2 - P), the grad-weight as wgrad_dw3_mma.cu's packed form (16 x columns
// as K against (kw, dy row) pairs; its A rows are the same staged dy rows, read at the shift e + 2 - kw).
//   warp  = one (sample, channel, 15-row dx block h0, 32-column dx block w0) column through a run of dx planes z..:
//           dy planes (18 rows from h0 - P'1, 40 columns from w0 - S) in a three-stage cp.async ring, x planes (18
//           rows from h0 - P1, 32 columns from w0) in a five-stage one, x two planes ahead of dy; step js (dy plane js,
//           depth z - P'0 + js): the stencil's 12 A tiles x 3 kd into three rotating dx planes (the store of dx plane
//           js - 2: rows h0 .. h0 + 14 of the mma's 16), and, for js in a0 .. a0 + len - 1 (a0 = 2 - P0), the grad-
//           weight's 3 groups of five dy rows (stage rows a1 + 5 gi + r', a1 = 2 - P1) x the x planes js .. js + 2;
//   block = (channel, split) as wgrad_dw3_mma: wg_plan()'s units ((15-row, 32-column block, plane) of one sample)
//           and splits; the splits' sums go to the workspace and splits_reduce adds them in split order.
// Where x and dy have the same extents (fused_grads()), a warp's dy rows h0 .. h0 + 14 and planes z .. z + len - 1
// are wgrad_dw3_mma's units, summed in its order (plane, row group, kd, column half), and each dx element is the
// same mma products as stencil3_mma's: both results are bitwise the separate kernels' (13 shapes, docs/perf.md v27).
// Registers: the band fragments and the grad-weight's x fragments are read from shared memory at each use, so three
// blocks fit an SM (168 registers, 16 bytes spilled): 72.1 us for the suite's layer against 73.3 with both in
// registers at two blocks (246 registers) and 79.5 for the separate kernels (H100, same run; docs/perf.md v27).
// The stencil's four A tiles of a kh share column blocks, so they come from five 8-column blocks (mma16.cuh's
// band_a_tiles: 9 ldmatrix a plane for 12): the kernel is L1-bound, and this took 1-2 % (docs/perf.md v31). The
// forward stencil (stencil3_mma.cu) keeps one ldmatrix.x4 a tile: it is latency-bound, and the register moves the
// shared blocks need made it slower.
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>

#include "sm80/sm80.h"

#include "launch_common.cuh"
#include "plane_ring.cuh"
#include "sm80/common.cuh"
#include "sm80/mma16.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr int kRows = 15, kCols = 32;  // dx rows and columns a warp; dy rows the grad-weight takes
constexpr int kSrcRows = 18;           // staged dy rows (the mma reads 16 from kh = 0, 1, 2)
constexpr int kPitch = 40;             // staged rows (dy: 40 columns; x: 32 of 40): ldmatrix rows hit every bank
constexpr int kDyChunks = kPitch / 4, kXChunks = kCols / 4;
constexpr int kXRows = 18;             // x rows: the last group's eight (5 x 2 + 7)
constexpr int kDyCopies = (kSrcRows * kDyChunks + 31) / 32;  // 6 (the last for lanes < 20)
constexpr int kXCopies = (kXRows * kXChunks + 31) / 32;      // 5 (the last for lanes < 16)
constexpr int kStage = kSrcRows * kPitch;                    // elements a stage (dy and x alike)
constexpr int kWarps = 4;
constexpr int kXStages = 5;  // x plane xi lives from its issue (step xi - 4) to its last use (step xi)
constexpr int kWarpElems = (3 + kXStages) * kStage;  // three dy stages, kXStages x stages
constexpr int kBandAt = kWarps * kWarpElems * 2;   // the band fragments, [q][lane]
constexpr int kSmemBytes = kBandAt + 9 * 32 * 8;
constexpr int kRedFloats = 3 * 16 * 8;
static_assert(kWarps * kRedFloats * 4 <= kSmemBytes, "the reduction reuses the rings");
static_assert(kStage % 8 == 0, "16-byte aligned stages");

struct BwdArgs {
  const void* x;
  const void* w;
  const void* dy;
  void* dx;
  void* dw_out;  // dw (S = 1) or the workspace's [S][C * 27] floats
  int C, S;
  i64 units, per_split;  // wg_plan's (column, plane) pairs of a channel; a split's share
  int nhb, nwb;
  int xd[3], od[3], P[3];  // x / dx extents, dy extents, padding before
};

template <typename T>
__global__ void __launch_bounds__(32 * kWarps, 3) dw3_bwd_mma_kernel(const BwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T* dring = smem + warp * kWarpElems;
  T* xring = dring + 3 * kStage;
  const int c = int(blockIdx.x % unsigned(a.C)), split = int(blockIdx.x / unsigned(a.C));
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  T* __restrict__ dx = static_cast<T*>(a.dx);
  const i64 xHW = i64(a.xd[1]) * a.xd[2], oHW = i64(a.od[1]) * a.od[2];
  const int Pq[3] = {2 - a.P[0], 2 - a.P[1], 2 - a.P[2]};  // the grad-input stencil's padding
  const int S = (Pq[2] + 3) & ~3, e = S - Pq[2];           // its window shift: aligned copies and ldmatrix rows
  const int a0 = a.P[0] <= 2 ? 2 - a.P[0] : 0;              // the dy planes / rows the grad-weight takes (see top)
  const int a1 = 2 - a.P[1];
  const int g = lane >> 2, t = lane & 3, t2 = 2 * t;

  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  // grad-input B: the flipped taps' band fragments, (kd, kh) = 3 kd + kh
  const int kb = t2 - g - e;
  const T* wt = static_cast<const T*>(a.w);
  // in shared memory, [q][lane] (the block's channel is every warp's): 18 registers fewer, 9 LDS.64 a plane more
  uint2* band = reinterpret_cast<uint2*>(smem_raw + kBandAt);
  if (warp == 0) {
#pragma unroll
    for (int q = 0; q < 9; ++q) {
      unsigned f[2];
      band_fragment(f, wt, c, q, kb, true);
      band[q * 32 + lane] = make_uint2(f[0], f[1]);
    }
  }
  __syncthreads();
  // grad-input A (ldmatrix): lane l names row l % 16, columns 8 (l / 16) of the (kh, 8 j) tile
  const int a_off = (lane & 15) * kPitch + 8 * (lane >> 4);
  // grad-weight A: staged dy rows from row a1, element shift e (mma16.cuh's packed form)
  int aword[2];
  unsigned asel[2];
  packed_a_setup(aword, asel, lane, a1, kPitch, e);
  // grad-weight B (ldmatrix.x4): lane l names x row l % 8 of a group, columns 8 (l / 8)
  const int boff = (lane & 7) * kPitch + 8 * (lane >> 3);
  // copies: dy copy i of a lane is q = lane + 32 i (row q / 10, chunk q % 10) at element 4 q; x copy i is row
  // l / 8 + 4 i, chunk l % 8, at element 40 (l / 8 + 4 i) + 4 (l % 8)
  const unsigned dsm = unsigned(__cvta_generic_to_shared(dring)) + 2u * 4 * lane;
  const unsigned xsm = unsigned(__cvta_generic_to_shared(xring)) + 2u * ((lane >> 3) * kPitch + 4 * (lane & 7));

  float accw[3][4];  // the grad-weight's C, [kd]
#pragma unroll
  for (int kd = 0; kd < 3; ++kd)
#pragma unroll
    for (int i = 0; i < 4; ++i) accw[kd][i] = 0.0f;

  UnitWalk walk(a.units, a.per_split, split, warp, kWarps);  // wgrad_dw3_mma's walk: its order of sums
#pragma unroll 1
  while (walk.next(a.xd[0], a.nhb, a.nwb, kRows, kCols)) {
    const int z = walk.z, len = walk.len, w0 = walk.col0, h0 = walk.row0;
    const i64 n = walk.n;
    const T* xc = x + (n * a.C + c) * (xHW * a.xd[0]);
    const T* dc = dy + (n * a.C + c) * (oHW * a.od[0]);
    T* dxc = dx + (n * a.C + c) * (xHW * a.xd[0]);

    int doff[kDyCopies], xoff[kXCopies];
    unsigned din = 0, xin = 0;
#pragma unroll
    for (int i = 0; i < kDyCopies; ++i) {
      const int q = lane + 32 * i, yy = h0 - Pq[1] + q / kDyChunks, xx = w0 - S + 4 * (q % kDyChunks);
      const bool in = q < kSrcRows * kDyChunks && unsigned(yy) < unsigned(a.od[1]) && unsigned(xx) < unsigned(a.od[2]);
      doff[i] = in ? yy * a.od[2] + xx : 0;
      din |= unsigned(in) << i;
    }
#pragma unroll
    for (int i = 0; i < kXCopies; ++i) {
      const int yy = h0 - a.P[1] + (lane >> 3) + 4 * i, xx = w0 + 4 * (lane & 7);
      const bool in = (lane >> 3) + 4 * i < kXRows && unsigned(yy) < unsigned(a.xd[1]) && unsigned(xx) < unsigned(a.xd[2]);
      xoff[i] = in ? yy * a.xd[2] + xx : 0;
      xin |= unsigned(in) << i;
    }
    // dy plane js: depth z - P'0 + js; x plane xi: depth z - 2 + xi; the grad-weight uses dy planes a0 .. a0 + len - 1
    // and x planes a0 .. a0 + len + 1
    auto dy_in = [&](int js) { return js < len + 2 && unsigned(z - Pq[0] + js) < unsigned(a.od[0]); };
    auto x_used = [&](int xi) { return xi >= a0 && xi <= a0 + len + 1; };
    auto issue_dy = [&](int js) {
      if (!dy_in(js)) return;
      const T* pl = dc + i64(z - Pq[0] + js) * oHW;
      const unsigned dst = dsm + 2u * (js % 3) * kStage;
#pragma unroll
      for (int i = 0; i < kDyCopies; ++i)
        if (i + 1 < kDyCopies || lane + 32 * i < kSrcRows * kDyChunks)
          cp_async_shared<8>(dst + 2u * 128 * i, pl + doff[i], din >> i & 1u);
    };
    auto issue_x = [&](int xi) {
      if (!x_used(xi)) return;
      const int sz = z - 2 + xi;
      const bool pin = unsigned(sz) < unsigned(a.xd[0]);
      const T* pl = xc + i64(pin ? sz : 0) * xHW;
      const unsigned dst = xsm + 2u * (xi % kXStages) * kStage;
#pragma unroll
      for (int i = 0; i < kXCopies; ++i)
        if (i + 1 < kXCopies || (lane >> 3) + 4 * i < kXRows)
          cp_async_shared<8>(dst + 2u * 4 * kPitch * i, pl + xoff[i], pin && (xin >> i & 1u));
    };

    float acc[3][4][4];  // grad-input: three rotating dx planes x four 8-column tiles
#pragma unroll
    for (int s = 0; s < 3; ++s)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[s][j][i] = 0.0f;
    T* orow = dxc + i64(h0 + g) * a.xd[2] + w0 + t2;
    unsigned store = 0;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (g + 8 * half < kRows && h0 + g + 8 * half < a.xd[1] && w0 + 8 * j + t2 < a.xd[2])
          store |= 1u << (4 * half + j);

    // prologue: three commit groups in flight, (x 0, x 1), (dy 0, x 2), (dy 1, x 3); step js commits (dy js + 2,
    // x js + 4) and waits for all but the newest group, so dy plane js and x planes .. js + 2 are in
    issue_x(0);
    issue_x(1);
    cp_async_commit();
    issue_dy(0);
    issue_x(2);
    cp_async_commit();
    issue_dy(1);
    issue_x(3);
    cp_async_commit();

    auto step = [&](int js, auto phase) {
      constexpr int PH = decltype(phase)::value;  // js % 3
      cp_async_wait<1>();
      __syncwarp();  // dy plane js and x plane js + 2 are in; everyone is done with step js - 1's stages
      issue_dy(js + 2);  // into dy plane js - 1's stage
      issue_x(js + 4);   // into x plane js - 1's stage (last read at step js - 1)
      cp_async_commit();
      const T* ds = dring + PH * kStage;
      if (dy_in(js)) {
        // grad-input: dx plane js's slot starts with its first product; js - 1 and js - 2 take kd = 1, 2
#pragma unroll
        for (int kh = 0; kh < 3; ++kh) {
          unsigned bk[3][2];  // taps (kd, kh), kd = 0, 1, 2
#pragma unroll
          for (int kd = 0; kd < 3; ++kd) {
            const uint2 f = band[(kd * 3 + kh) * 32 + lane];
            bk[kd][0] = f.x, bk[kd][1] = f.y;
          }
          unsigned av[4][4];
          band_a_tiles<4>(av, unsigned(__cvta_generic_to_shared(ds + a_off + kh * kPitch)));
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (kh == 0)
              mma_from(acc[PH][j], av[j], bk[0], 0.0f, static_cast<T*>(nullptr));
            else
              mma(acc[PH][j], av[j], bk[0], static_cast<T*>(nullptr));
#pragma unroll
            for (int kd = 1; kd < 3; ++kd)
              mma(acc[(PH - kd + 3) % 3][j], av[j], bk[kd], static_cast<T*>(nullptr));
          }
        }
        // grad-weight: dy plane js against x planes js + kd
        if (js >= a0 && js < a0 + len) {
          const unsigned* dw32 = reinterpret_cast<const unsigned*>(ds);
#pragma unroll
          for (int gi = 0; gi < 3; ++gi) {
            unsigned av[2][4];
            packed_a(av, dw32 + gi * 5 * (kPitch / 2), aword, asel);
#pragma unroll
            for (int kd = 0; kd < 3; ++kd) {
              unsigned bv[4];  // grad-weight B: x plane js + kd's group gi, read at each use
              ldmatrix_x4(bv, xring + ((js + kd) % kXStages) * kStage + boff + gi * 5 * kPitch);
              const unsigned b0[2] = {bv[0], bv[1]}, b1[2] = {bv[2], bv[3]};
              mma(accw[kd], av[0], b0, static_cast<T*>(nullptr));
              mma(accw[kd], av[1], b1, static_cast<T*>(nullptr));
            }
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[PH][j][i] = 0.0f;
      }
      // dx plane js - 2 is complete
      constexpr int SO = (PH + 1) % 3;
      if (js >= 2) store_plane(orow + i64(z + js - 2) * xHW, a.xd[2], store, acc[SO]);
    };
    each_plane_by_three(len + 2, step);
    cp_async_wait<0>();
    __syncwarp();
  }
  pdl_release();

  __syncthreads();  // every warp is done with its rings: the reduction reuses them
  const float s = packed_tap_sum<kWarps>(reinterpret_cast<float*>(smem_raw), accw, warp, lane);
  if (threadIdx.x < 27) store_split_sum<T>(a.dw_out, a.S, split, i64(a.C) * 27, i64(c) * 27 + threadIdx.x, s);
}

}  // namespace

template <typename T>
static std::string launch(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* w, const void* dy,
                          void* dx, void* dw, void* ws, cudaStream_t st) {
  BwdArgs a;
  a.x = x; a.w = w; a.dy = dy; a.dx = dx; a.dw_out = pl.mma_S > 1 ? ws : dw;
  a.C = int(p.in_channels); a.S = pl.mma_S;
  a.units = pl.mma_units; a.per_split = pl.mma_per_split;
  for (int d = 0; d < 3; ++d) {
    a.xd[d] = int(p.in[d]); a.od[d] = int(p.out[d]); a.P[d] = int(p.pad_lo[d]);
  }
  a.nhb = int((p.out[1] + kRows - 1) / kRows);  // wg_plan's units: dy's 15-row blocks, x's 32-column ones
  a.nwb = int((p.in[2] + kCols - 1) / kCols);
  const int64_t blocks = int64_t(pl.mma_S) * p.in_channels;
  if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (fused depthwise 3x3x3 backward)";
  if (blocks == 0) return "";
  static std::atomic<uint64_t> smem_set{0};
  if (allow_smem(dw3_bwd_mma_kernel<T>, kSmemBytes, smem_set) != cudaSuccess)
    return launch_error("fused depthwise 3x3x3 backward (shared memory)");
  launch_dependent(dw3_bwd_mma_kernel<T>, dim3(unsigned(blocks)), dim3(32 * kWarps), kSmemBytes, st, a);
  const std::string e = launch_error("fused depthwise 3x3x3 backward");
  if (!e.empty() || pl.mma_S == 1) return e;
  return splits_reduce(p, t, ws, dw, pl.mma_S, st);
}

std::string dw3_bwd_mma(const ConvProblem& p, DType t, const void* x, const void* w, const void* dy, void* dx,
                        void* dw, void* workspace, size_t workspace_bytes, void* stream) {
  const WgPlan pl = wg_plan(p, t);
  if (t == DType::kF32 || !fused_grads(p, t, pl))
    return "jaxconv3d cuda: the fused depthwise 3x3x3 backward does not apply to this problem";
  if (workspace_bytes < pl.ws_bytes || (pl.mma_S > 1 && workspace == nullptr))
    return "jaxconv3d cuda: fused backward workspace too small (" + std::to_string(workspace_bytes) + " < " +
           std::to_string(pl.ws_bytes) + " bytes)";
  // 8-byte copies of x and dy, 4-byte stores of dx: tensors off that alignment run the two kernels it fuses (each
  // with its own fallback), whose results it reproduces bit for bit
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 8 == 0 && reinterpret_cast<uintptr_t>(dy) % 8 == 0 &&
                       reinterpret_cast<uintptr_t>(dx) % 4 == 0;
  if (!aligned) {
    const std::string e = dgrad(p, t, Kernel::kStencil3Mma, dy, w, dx, stream);
    return e.empty() ? wgrad(p, t, Kernel::kWgradDw3Mma, x, dy, dw, workspace, workspace_bytes, stream) : e;
  }
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t == DType::kBF16) return launch<__nv_bfloat16>(p, t, pl, x, w, dy, dx, dw, workspace, st);
  if (t == DType::kF16) return launch<__half>(p, t, pl, x, w, dy, dx, dw, workspace, st);
  return "jaxconv3d cuda: the fused depthwise 3x3x3 backward takes bfloat16 and float16";
}

}  // namespace sm80
}  // namespace jaxconv3d
