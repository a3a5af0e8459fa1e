// The stencil family: forward and grad-input of depthwise 3x3x3 layers (stride 1, dilation 1, one input and one
// output channel per group) read and written channels-last (NDHWC / ODHWI), as channels_last_3d torch tensors and
// layout="NDHWC" JAX arrays hold them, so such a layer runs with no layout transposes. Plain CUDA (no tensor cores:
// a depthwise layer is memory-bound), any compute capability the extension is built for.
//   forward     y = x (*) w + b: a warp's lanes are 32 consecutive channels, a thread owns kRun outputs along W of
//               one H row and walks its block's D chunk source plane by source plane, each plane's three rows
//               feeding the three output planes it meets (accumulators shifted every plane), the next plane's rows
//               loaded while the current one is multiplied, the 27 taps in shared memory;
//   grad-input  the same stencil on dy with the filter flipped (pad' = 2 - pad).
// Grad-weight is not the family's: a channels-last kernel (27 sums a thread, each output row walked along W) ran
// 2-2.6x slower than sm80's NCDHW one and lost to it even with the two transposes (docs/perf.md v11), so it was
// removed and the rule table hands channels-last grad-weight to sm80.
// This header is plain C++ (the dispatcher includes it without nvcc); the kernels are in depthwise_ndhwc.cu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "conv_problem.h"

namespace jaxconv3d {
namespace stencil {

constexpr int kLanes = 32;   // channels a block covers (a warp's lanes)
constexpr int kRows = 4;     // H rows a block covers (one warp each)
constexpr int kRun = 8;      // W outputs a thread owns
constexpr int kChunk = 16;   // D output planes a block walks

// Whether the family runs `op` (forward or grad-input) on p in dtype t (layout, shape, strides, groups and extents;
// any math mode: the kernels are float32 FFMA, accurate in every mode). No workspace.
bool accepts(Op op, const ConvProblem& p, DType t);
// Its kernel's name for explain().
const char* tile(Op op);

// The launches (depthwise_ndhwc.cu; an error string, empty on success). Tensors are NDHWC / ODHWI.
std::string fwd(const ConvProblem& p, DType t, const void* x, const void* w, const void* bias, void* y, void* stream);
std::string dgrad(const ConvProblem& p, DType t, const void* dy, const void* w, void* dx, void* stream);

}  // namespace stencil
}  // namespace jaxconv3d
