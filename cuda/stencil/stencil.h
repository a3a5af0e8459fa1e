// The stencil family: forward, grad-input and grad-weight of depthwise 3x3x3 layers (stride 1, dilation 1, one
// input and one output channel per group) read and written channels-last (NDHWC / ODHWI), as channels_last_3d torch
// tensors and layout="NDHWC" JAX arrays hold them, so such a layer runs with no layout transposes. Any GPU from
// sm_80 (cp.async): float32 FFMA throughout, and on compute capability 9.0 16-bit forward / grad-input on tensor
// cores where C is a multiple of 16 (hopper/depthwise_band.cu: sm80's banded W taps on planes that TMA stages and a
// block turns channel-planar in shared memory); otherwise FFMA:
//   forward     y = x (*) w + b: a warp's lanes are 32 (float32) or 64 (16-bit, two a lane) consecutive channels,
//               a block's 4 warps 4 output rows; a thread owns RUN outputs along W (7 or 8; 16-bit pairs 4). Each
//               source plane's (4 + 2) x (RUN + 2) x channels box is copied into shared memory with cp.async, three
//               planes in flight, and every warp reads its three rows from there; accumulators of the three output
//               planes a source plane meets rotate by unrolling (no moves). The grid is one wave of blocks sharing
//               every column's (W strip, H block, channel group, batch entry) D planes evenly;
//   grad-input  the same stencil on dy with the filter flipped (pad' = 2 - pad);
//   grad-weight the same walk over x planes, dy's planes staged too, a thread summing its channels' 27 taps; each
//               warp's sums (float32: a block's four warps' sums added in order) to a workspace slot, the slots then
//               added up in a fixed order by a second kernel (deterministic;
//               the block count comes from the problem alone, not the device).
// This header is plain C++ (the dispatcher includes it without nvcc); the kernels are in depthwise_ndhwc.cu (and
// hopper/depthwise_band.cu).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "conv_problem.h"

namespace jaxconv3d {
namespace stencil {

constexpr int kLanes = 32;  // a warp's lanes: channels (two a lane for 16-bit pairs)
constexpr int kRows = 4;    // H rows a block covers (one warp each)
constexpr int kMinPlanes = 8;  // output planes a block at least (a column segment reads two halo planes more)

// The run a thread owns along W: 4 for 16-bit pairs (vec = 2); else of 7 and 8, the one leaving fewer idle outputs.
int run_for(int vec, int64_t width);

// Grad-weight's grid: blocks per channel group from the problem and dtype alone (the workspace is sized before the
// launch, and the order of the sums must not depend on the device), at least kMinPlanes planes each; about
// wgrad_blocks(t) in all: one wave at the blocks an SM its kernel is compiled for on a 132-SM H100 (float32 five,
// 16-bit four).
int wgrad_blocks(DType t);
// Workspace slots a grad-weight block writes, by element size: float32 blocks sum their kRows warps in order first
// (one slot: the reduction 8.0 -> 5.3 us on the suite layer); 16-bit blocks write a slot per warp (the same epilogue
// slowed their 128-register kernel 62.9 -> 67.9 us, eating the gain; perf.md v23). The kernel and wgrad_shape both
// read this.
constexpr int wgrad_slots(int64_t elem_bytes) { return elem_bytes == 4 ? 1 : kRows; }
struct WgradShape {
  int vec, run, cgroups, blocks;  // channels a lane, W outputs a thread, channel groups, blocks per group
  int slots;                      // workspace slots a block writes: wgrad_slots()
  int64_t columns, per;           // (W strip, H block, batch entry) columns of a group; dy planes a block
};
WgradShape wgrad_shape(const ConvProblem& p, int vec, DType t);
size_t wgrad_part_bytes(const WgradShape& s);  // the workspace: a float per (group, block, slot, tap, channel)

// Whether the tensor-core forward / grad-input (hopper/depthwise_band.cu) runs `op` on p in dtype t on a device of
// compute capability cc: 9.0 (TMA), 16-bit, C a multiple of 16, and planes whose H x W x C stay under 2^31. A
// launch whose tensors are not 16-byte aligned (TMA's rule) takes the FFMA kernel instead.
bool band_takes(Op op, const ConvProblem& p, DType t, int cc);

// Whether the family runs `op` on p in dtype t (layout, shape, strides, groups and extents; any math mode: every
// kernel accumulates in float32 from exact products, accurate in every mode).
bool accepts(Op op, const ConvProblem& p, DType t);
// Its kernel's name for explain(), and its workspace (grad-weight's partial sums; the others none).
const char* tile(Op op, const ConvProblem& p, DType t, int cc);
size_t workspace_bytes(Op op, const ConvProblem& p, DType t);

// The launches (depthwise_ndhwc.cu; an error string, empty on success). Tensors are NDHWC / ODHWI. `band`: the plan
// chose the tensor-core forward / grad-input (band_takes).
std::string fwd(const ConvProblem& p, DType t, bool band, const void* x, const void* w, const void* bias, void* y,
                void* stream);
std::string dgrad(const ConvProblem& p, DType t, bool band, const void* dy, const void* w, void* dx, void* stream);
std::string wgrad(const ConvProblem& p, DType t, const void* x, const void* dy, void* dw, void* workspace,
                  size_t workspace_bytes, void* stream);

}  // namespace stencil
}  // namespace jaxconv3d
