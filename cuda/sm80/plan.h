// The sm80 family's own choices, as host C++ shared by the dispatcher (which reports them) and the launchers
// (which obey them): depthwise stencil or implicit GEMM (WMMA or FFMA tiles) for forward and grad-input, and the
// grad-weight kernel with its split reduction and workspace. Nothing here needs nvcc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "conv_problem.h"

namespace jaxconv3d {
namespace sm80 {

constexpr int kTargetBlocks = 1056;  // 8 blocks x 132 SMs (fixed: results must not depend on the card)
constexpr int kDwMaxT = 32;          // depthwise grad-weight: taps held in registers
constexpr int kSTX = 32, kSTY = 8, kSTZ = 8;  // stencil output tile (x, y, z)
constexpr int kS3X = 32, kS3Y = 16, kS3Z = 8;  // 3x3x3 stencil output brick (x, y, z)
constexpr int kS3SX = 32, kS3SY = 16, kS3SZ = 16;  // streaming 3x3x3 stencil: output strip (x, y), D chunk
// The streaming stencil's strip height in float32 for an output of h rows: four warps of 7 or 8 rows a thread (28
// or 32), whichever computes fewer rows over h (32 on a tie: 8 rows a thread carry less halo). The float32 streaming
// kernels take both (stencil3_stream.cuh's Strip<7>, Strip<8>).
inline int stream_rows_f32(int64_t h) {
  const int64_t waste7 = (h + 27) / 28 * 28, waste8 = (h + 31) / 32 * 32;
  return waste7 < waste8 ? 28 : 32;
}
constexpr int kS3MX = 32, kS3MY = 16;  // tensor-core 3x3x3 stencil: a warp's output window (x, y)
constexpr int kWgMX = 32, kWgMY = 15;  // tensor-core 3x3x3 grad-weight: a warp's x columns, dy rows a plane

// Path switches (each false restores the previous kernel for that path).
constexpr bool kWgradPipeF32 = true;   // float32 accurate grad-weight (Og > 32): pipelined FFMA kernel
constexpr bool kWgradPipeTF32 = true;  // float32 TF32 grad-weight (Og > 32): WMMA tf32 kernel
constexpr bool kWgradPipe16 = true;    // bf16/f16 grad-weight (Og > 32): WMMA kernel

// The kernel an operation runs (Plan::variant of the sm80 family).
enum class Kernel : int {
  kStencil = 0,      // depthwise direct stencil (forward; stride-1 grad-input of C/groups <= 4)
  kGemmWmma = 1,     // implicit GEMM 128x64, WMMA tensor cores (tf32 / bf16 / f16)
  kGemmFfma64 = 2,   // implicit GEMM 128x64 / 128x32 / 128x16, FFMA
  kGemmFfma32 = 3,
  kGemmFfma16 = 4,
  kWgradDepthwise = 5,  // depthwise grad-weight (C/groups == 1, taps <= 32)
  kWgradPipeWmma = 6,   // pipelined grad-weight 64x128, WMMA
  kWgradPipeFfma = 7,   // pipelined grad-weight 64x128, FFMA (float32 accurate)
  kWgrad64 = 8,         // grad-weight GEMM with BMO = 64 / 32 / 16
  kWgrad32 = 9,
  kWgrad16 = 10,
  kStencil3 = 11,       // depthwise 3x3x3 stencil, stride 1, dilation 1 (forward; grad-input of C/groups == 1)
  kWgradDw3 = 12,       // its grad-weight: bricks of positions, 27 sums a thread, fixed-order splits
  kStencil3Stream = 13,  // depthwise 3x3x3 stencil streaming along D (forward; grad-input of a multiplier of 1)
  kStencil3Mma = 14,     // the same on tensor cores (16-bit; banded tap matrices), where its copies align
  kWgradDw3Mma = 15,     // kWgradDw3 on tensor cores (16-bit, rows of 4k elements; wgrad_dw3_mma.cu)
  kDw3BwdMma = 16,       // kStencil3Mma's grad-input and kWgradDw3Mma together, one pass over dy (dw3_bwd_mma.cu)
  kWgradDw3Stream = 17,  // kWgradDw3 in float32 where x and dy have the same extents: kStencil3Stream's strips
                         // and plane ring (dw3_bwd_stream.cu)
  kDw3BwdStream = 18,    // kStencil3Stream's grad-input and kWgradDw3Stream together, one pass over dy (the same file)
};

const char* kernel_name(Kernel k);

// Arguments of the depthwise stencil kernel (the launcher adds the pointers).
struct StencilArgs {
  const void* src;
  const void* wt;
  const void* bias;
  void* out;
  int OC, OCB, SC, nsrc, Og;
  int dgrad;
  int od[3], sd[3], k[3], st[3], base[3], tstep[3], E[3], lo[3], ntile[3];
};

// Fills `s` (all but the pointers), the dynamic shared memory and the block count when the stencil applies.
bool stencil_plan(const ConvProblem& p, bool dgrad, DType t, StencilArgs* s, int64_t* smem, int64_t* blocks);

// Arguments of the 3x3x3 stencil (stencil3.cu): output q, tap t (0..2 per axis, flipped for grad-input) reads
// source position q + t - P.
struct Stencil3Args {
  const void* src;
  const void* wt;
  const void* bias;
  void* out;
  int OC, SC, Og;
  int dgrad;
  int vec;  // four W outputs per aligned store (set by the launcher)
  int od[3], sd[3], P[3], ntile[3];
};
// Fills `s` (all but the pointers and `vec`) and the block count when the 3x3x3 stencil applies: float32 / 16-bit,
// kernel 3x3x3, stride 1, dilation 1, one input channel per group.
bool stencil3_plan(const ConvProblem& p, bool dgrad, DType t, Stencil3Args* s, int64_t* blocks);
// The same for the streaming form (stencil3_stream.cu): where stencil3_plan applies, except a grad-input that sums
// several dy channels (a channel multiplier above 1), which stays on the brick kernel; ntile[0] counts D chunks.
bool stencil3_stream_plan(const ConvProblem& p, bool dgrad, DType t, Stencil3Args* s, int64_t* blocks);
// The same for the tensor-core form (stencil3_mma.cu): bfloat16 / float16, a channel multiplier of 1, source rows a
// multiple of 4 elements and output rows of an even count (8-byte copies, 4-byte stores); `units` counts (column,
// output plane) pairs, a column being one (sample, channel, 16-row H block, 32-column W block).
bool stencil3_mma_plan(const ConvProblem& p, bool dgrad, DType t, Stencil3Args* s, int64_t* units);

// The float32 streaming grad-weight's geometry (dw3_bwd_stream.cu): where the grad-input stream applies (float32,
// a channel multiplier of 1) and x and dy have the same extents (padding totals 2 an axis, as "same" gives), `s` is
// that grad-input's stencil (its strips of dx are the strips of dy positions whose grad-weight terms a block sums)
// and `units` counts a channel's strips: batch x D chunks x H strips x W strips.
bool dw3_stream_plan(const ConvProblem& p, DType t, Stencil3Args* s, int64_t* units);

// Grad-weight plan (shared by the workspace query and the launch).
struct WgPlan {
  bool depthwise;
  bool dw3;              // depthwise 3x3x3 stride 1 dilation 1 (wgrad_dw3.cu): S splits of a channel's bricks
  int64_t bricks = 0;    // dw3: 8 x 16 x 32 bricks of dy positions a channel (batch included)
  int64_t per_split = 0;  // dw3: contiguous bricks a split
  // dw3 on tensor cores (16-bit, x and dy rows a multiple of 4 elements): mma_S splits of the channel's mma_units
  // ((15 dy rows x 32 x columns) blocks x D planes), mma_per_split each; tensors off 8-byte alignment run dw3 with
  // S (the workspace holds either)
  bool mma = false;
  int mma_S = 1;
  int64_t mma_units = 0, mma_per_split = 0;
  // dw3 streaming (float32, x and dy of the same extents; dw3_stream_plan): stream_S splits of the channel's
  // stream_units (the grad-input stream's (sample, D chunk, strip) triples), stream_per_split each (the workspace
  // holds any form's splits)
  bool stream = false;
  int stream_S = 1;
  int64_t stream_units = 0, stream_per_split = 0;
  int bmo;  // generic: 64 / 32 / 16
  int S;    // splits
  int64_t blocks_per_split;
  size_t ws_bytes;
};
WgPlan wg_plan(const ConvProblem& p, DType t);

// Whether grad-input and grad-weight of one backward run as one kernel: Kernel::kDw3BwdMma where grad-input would
// be kStencil3Mma and grad-weight kWgradDw3Mma, and x and dy have the same extents (padding totals 2 an axis, as
// "same" gives); there its grad-weight walks wg_plan's units and splits in wgrad_dw3_mma's order and its grad-input
// makes stencil3_mma's products. Kernel::kDw3BwdStream where grad-weight would be kWgradDw3Stream (float32), which
// is that kernel with the grad-input stream's work added. Either way the fused results are bitwise the two kernels'.
bool fused_grads(const ConvProblem& p, DType t);
// The same, given the problem's grad-weight plan (the fused doors plan it once for both).
bool fused_grads(const ConvProblem& p, DType t, const WgPlan& pl);

struct Choice {
  Kernel kernel;
  size_t workspace_bytes;
};
Choice choose(Op op, const ConvProblem& p, DType t, MathMode m);

}  // namespace sm80
}  // namespace jaxconv3d
