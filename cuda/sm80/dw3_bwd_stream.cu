// The float32 depthwise 3x3x3 grad-weight where x and dy have the same extents (Kernel::kWgradDw3Stream), and the
// same kernel with the grad-input added: the whole backward in one pass over dy (Kernel::kDw3BwdStream):
//   dw[c][kd][kh][kw] = sum over samples and dy positions q of dy[c][q] x[c][q + (kd, kh, kw) - P]
//   dx[c][q]          = stencil3_stream.cu's grad-input (dy through the flipped filter, padding P' = 2 - P)
// (P: the forward's padding before; a channel multiplier of 1). The geometry is the grad-input stream's: a unit is
// one strip of 32 (W) x 4 RY (H, RY = 7 or 8: plan.h's stream_rows_f32) positions through a chunk of up to 16 D
// planes of one (sample, channel), and the dy positions whose grad-weight terms a unit sums are the dx positions of
// its strip (x and dy share their extents).
//   block  = (channel, split): a contiguous run of the channel's units (sample, chunk, H strip, W strip; wg_plan's
//            stream_per_split), summed in order into 27 sums a thread; the block's sums then go through a fixed tree
//            (warp shuffles, the four warps in order) to dw itself (one split) or the split's row of the workspace,
//            which splits_reduce adds in split order. Deterministic, and from the problem alone.
//   step   = source plane s of the grad-input stream (dy depth oz0 - P'0 + s, plane_ring.cuh's three stages), with
//            the x plane at depth oz0 - P'0 - P0 + s in a second ring filled in the same copy groups. The unit takes
//            steps 0 .. zc + P'0 + 1: the grad-input's zc + 2, and P'0 more for x planes past the last dy plane.
//   thread = a lane per W column of RY H rows, as the grad-input stream. Where the grad-input runs, its products and
//            stores are stencil3_ring_kernel's (StreamBlock::plane on the same stage), so dx is bitwise that
//            kernel's. For the grad-weight the thread keeps its RY dy values of the last three dy planes in
//            registers (zero outside the chunk's planes 0 .. zc - 1, so every dy position is counted by exactly one
//            unit), and each x plane meets them through D taps 0, 1, 2 (the newest dy plane, the one before, the one
//            before that): for each of its RY + 2 x rows, 3 shared reads feed RY rows x 3 H taps (of those that
//            exist) x 3 D taps x 3 W taps of products. Fixed order of each sum: unit, step, x row, dy row.
// The fused kernel holds both stencils' registers (168, three blocks an SM); the grad-weight alone 96 (five).
#include <climits>
#include <string>

#include "sm80/sm80.h"

#include "launch_common.cuh"
#include "sm80/stencil3_stream.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

using namespace stream3;

struct Dw3StreamArgs {
  Stencil3Args g;  // the grad-input stream: src dy, wt w, out dx (with kDx); od = x's extents, sd = dy's, P = 2 - pad
  const float* x;
  void* dw_out;  // dw (S == 1) or the workspace's [S][C * 27] floats
  int S;
  i64 units, per_split;
  int P[3];  // the forward's padding before: dy position q meets x position q + t - P through tap t
};

template <int V, bool kDx, int RY>
__global__ void __launch_bounds__(kThreads, kDx ? 3 : 5) dw3_stream_kernel(const Dw3StreamArgs a) {
  using G = Strip<RY>;
  __shared__ __align__(16) float dring[kRingStages][kStageFloats];
  __shared__ __align__(16) float xring[kRingStages][kStageFloats];
  __shared__ float red[kWarps][27];
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
  const Stencil3Args& g = a.g;
  const int c = int(blockIdx.x % unsigned(g.OC)), split = int(blockIdx.x / unsigned(g.OC));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const i64 xHW = i64(g.od[1]) * g.od[2];
  const int Q0 = g.P[0];  // the grad-input's padding in D: the chunk's first dy plane is step Q0
  float sums[27];
#pragma unroll
  for (int t = 0; t < 27; ++t) sums[t] = 0.0f;

  const i64 u0 = i64(split) * a.per_split, u1 = min(u0 + a.per_split, a.units);
  for (i64 u = u0; u < u1; ++u) {
    const Dw3Unit unit = dw3_unit(u, g.ntile);
    const Stencil3Block blk{unit.n, c, unit.bz * kZ, unit.by * G::Y, unit.bx * kX};
    const StreamBlock<float, RY> b(g, blk, kDx);
    if (u > u0) __syncthreads();  // the previous unit's last stages are still being read
    const RingWindow<V, G::TY> dwin(&dring[0][0], b.s1, b.s2, g.sd[1], g.sd[2]);
    const RingWindow<V, G::TY> xwin(&xring[0][0], blk.oy0 - a.P[1], blk.ox0 - a.P[2], g.od[1], g.od[2]);
    const char* dyb = reinterpret_cast<const char*>(b.chan);
    const char* xb = reinterpret_cast<const char*>(a.x + (blk.n * g.OC + c) * (xHW * g.od[0]));
    const int xz0 = blk.oz0 - Q0 - a.P[0];  // step s's x plane: xz0 + s
    auto issue = [&](int s, auto stage) {
      constexpr int ST = decltype(stage)::value;
      if (s < b.planes) {
        const int gz = b.sz0 + s;
        const bool zin = unsigned(gz) < unsigned(g.sd[0]);
        dwin.template issue<ST>(dyb + (zin ? i64(gz) * (b.sHW * 4) : i64(0)), zin);
      }
      if (s >= Q0 && s < b.planes + Q0) {
        const int gz = xz0 + s;
        const bool zin = unsigned(gz) < unsigned(g.od[0]);
        xwin.template issue<ST>(xb + (zin ? i64(gz) * (xHW * 4) : i64(0)), zin);
      }
      cp_async_commit();
    };
    float acc[3][RY];  // grad-input: output plane z accumulates in acc[z % 3] (no bias)
    float d[3][RY];    // this thread's dy values of steps s, s - 1, s - 2 in d[s % 3] ...
#pragma unroll
    for (int k = 0; k < 3; ++k)
#pragma unroll
      for (int r = 0; r < RY; ++r) acc[k][r] = d[k][r] = 0.0f;
    const int col = RY * warp * kRingRow + dwin.e + lane;  // the grad-input's source column, stage row RY warp
    const int dcol = col + g.P[1] * kRingRow + g.P[2];    // this thread's dy position of row 0
    const int xcol = RY * warp * kRingRow + xwin.e + lane;  // x's column through W tap 0, x row RY warp
    plane_ring(b.zc + Q0, [] { __syncthreads(); }, issue, [&](int s, auto phase) {
      constexpr int PH = decltype(phase)::value;  // s % 3: the stages and both rotations
      if constexpr (kDx)
        b.template plane<kRingRow>(g, dring[PH] + col, s, acc[PH], acc[(PH + 2) % 3], acc[(PH + 1) % 3]);
      const bool interior = unsigned(s - Q0) < unsigned(b.zc);
#pragma unroll
      for (int r = 0; r < RY; ++r) d[PH][r] = interior ? dring[PH][dcol + r * kRingRow] : 0.0f;
      if (s < Q0) return;  // no x plane in this stage yet
      const float* xc = xring[PH] + xcol;
#pragma unroll
      for (int qx = 0; qx < RY + 2; ++qx) {
        const float v[3] = {xc[qx * kRingRow], xc[qx * kRingRow + 1], xc[qx * kRingRow + 2]};
#pragma unroll
        for (int r = 0; r < RY; ++r) {
          const int ky = qx - r;
          if (ky < 0 || ky > 2) continue;
#pragma unroll
          for (int kz = 0; kz < 3; ++kz)
#pragma unroll
            for (int kx = 0; kx < 3; ++kx)
              sums[(kz * 3 + ky) * 3 + kx] = fmaf(d[(PH + 3 - kz) % 3][r], v[kx], sums[(kz * 3 + ky) * 3 + kx]);
        }
      }
    });
  }
  block_sum27<float>(sums, red, a.dw_out, a.S, split, i64(g.OC) * 27, i64(c) * 27);
  pdl_release();
}

// Launches the kernel (with the grad-input where dx is given); S > 1: the splits' sums into `ws`, for the caller to
// reduce.
std::string launch(const ConvProblem& p, const WgPlan& pl, const void* x, const void* w, const void* dy, void* dx,
                   void* dw, void* ws, cudaStream_t st) {
  Dw3StreamArgs a{};
  int64_t units = 0;
  if (!pl.stream || !dw3_stream_plan(p, DType::kF32, &a.g, &units))
    return "jaxconv3d cuda: the streaming 3x3x3 depthwise grad-weight does not apply to this problem";
  if (pl.stream_S > 1 && ws == nullptr) return "jaxconv3d cuda: wgrad workspace is null";
  a.g.src = dy; a.g.wt = w; a.g.bias = nullptr; a.g.out = dx;
  a.x = static_cast<const float*>(x);
  a.S = pl.stream_S; a.units = pl.stream_units; a.per_split = pl.stream_per_split;
  a.dw_out = a.S > 1 ? ws : dw;
  for (int d = 0; d < 3; ++d) a.P[d] = int(p.pad_lo[d]);
  const int64_t blocks = int64_t(a.S) * p.in_channels;
  if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (streaming depthwise 3x3x3 grad-weight)";
  if (blocks == 0) return "";
  const bool wide = wide_copies(p, {x, dy});
  using K = void (*)(const Dw3StreamArgs);
  const K kernel = with_f32_rows(p.in[1], [&](auto ry) -> K {
    constexpr int RY = decltype(ry)::value;
    if (dx != nullptr) return wide ? dw3_stream_kernel<4, true, RY> : dw3_stream_kernel<1, true, RY>;
    return wide ? dw3_stream_kernel<4, false, RY> : dw3_stream_kernel<1, false, RY>;
  });
  launch_dependent(kernel, dim3(unsigned(blocks)), dim3(kThreads), 0, st, a);
  return launch_error(dx != nullptr ? "streaming depthwise 3x3x3 backward" : "streaming depthwise 3x3x3 grad-weight");
}

}  // namespace

std::string wgrad_dw3_stream(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw,
                             void* workspace, void* stream) {
  if (t != DType::kF32) return "jaxconv3d cuda: the streaming 3x3x3 depthwise grad-weight takes float32";
  return launch(p, pl, x, nullptr, dy, nullptr, dw, workspace, static_cast<cudaStream_t>(stream));
}

std::string dw3_bwd_stream(const ConvProblem& p, DType t, const void* x, const void* w, const void* dy, void* dx,
                           void* dw, void* workspace, size_t workspace_bytes, void* stream) {
  const WgPlan pl = wg_plan(p, t);
  if (t != DType::kF32 || !fused_grads(p, t, pl))
    return "jaxconv3d cuda: the streaming depthwise 3x3x3 backward does not apply to this problem";
  if (workspace_bytes < pl.ws_bytes)
    return "jaxconv3d cuda: fused backward workspace too small (" + std::to_string(workspace_bytes) + " < " +
           std::to_string(pl.ws_bytes) + " bytes)";
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const std::string e = launch(p, pl, x, w, dy, dx, dw, workspace, st);
  if (!e.empty() || pl.stream_S == 1) return e;
  return splits_reduce(p, t, workspace, dw, pl.stream_S, st);
}

}  // namespace sm80
}  // namespace jaxconv3d
