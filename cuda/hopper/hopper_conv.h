// The Hopper (sm_90a) kernel family: implicit GEMM on `wgmma` tensor cores, operands staged in 128-byte-swizzled
// shared memory by a multi-stage asynchronous-copy pipeline. It runs only on compute capability 9.0 (the caller
// checks the device) and only on channels-last tensors:
//   activations NDHWC: x (N, D, H, W, C), y / dy (N, Do, Ho, Wo, O), dx like x;
//   weights ODHWI:     w / dw (O, kd, kh, kw, C/groups)  (the memory order of a torch channels_last_3d weight).
// Every function is a pure function of its arguments; `accepts_*` says whether the family can run the problem
// (dtype, math mode, alignment, groups, sizes), `*_workspace_bytes` how much scratch it needs (the caller
// provides it: XLA allocates it as an extra result, torch through a callback), `tile_*` names the tile it would use.
// The run functions launch on `stream` only: no allocation, no synchronisation, deterministic (grad-weight splits
// its reduction over positions and adds the partial sums in a fixed order, no atomics).
#pragma once

#include <cstddef>
#include <string>

#include "conv_problem.h"

namespace jaxconv3d {
namespace hopper {

bool accepts_fwd(const ConvProblem& p, DType t, MathMode m);
bool accepts_dgrad(const ConvProblem& p, DType t, MathMode m);
bool accepts_wgrad(const ConvProblem& p, DType t, MathMode m);

size_t fwd_workspace_bytes(const ConvProblem& p, DType t, MathMode m);
size_t dgrad_workspace_bytes(const ConvProblem& p, DType t, MathMode m);
size_t wgrad_workspace_bytes(const ConvProblem& p, DType t, MathMode m);

std::string tile_fwd(const ConvProblem& p, DType t, MathMode m);
std::string tile_dgrad(const ConvProblem& p, DType t, MathMode m);
std::string tile_wgrad(const ConvProblem& p, DType t, MathMode m);

std::string fwd(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* bias, void* y,
                void* workspace, size_t workspace_bytes, void* stream);
std::string dgrad(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                  void* workspace, size_t workspace_bytes, void* stream);
std::string wgrad(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                  void* workspace, size_t workspace_bytes, void* stream);

// The family's second member, "hopper_smallc": a first layer (few input channels): forward and grad-weight with its
// im2col gathered straight into wgmma's registers (conv_smallc.cuh, conv_smallc_wgrad.cuh), grad-input (stride 1)
// with dy in wgmma's registers and the filter's taps summed from shared memory (conv_smallc_dgrad.cuh). Either
// layout (p.layout); forward and grad-input need no workspace, grad-weight its per-split partial sums.
bool accepts_fwd_smallc(const ConvProblem& p, DType t, MathMode m);
bool accepts_wgrad_smallc(const ConvProblem& p, DType t, MathMode m);
bool accepts_dgrad_smallc(const ConvProblem& p, DType t, MathMode m);
size_t smallc_wgrad_workspace_bytes(const ConvProblem& p, DType t, MathMode m);
std::string tile_fwd_smallc(const ConvProblem& p, DType t, MathMode m);
std::string tile_wgrad_smallc(const ConvProblem& p, DType t, MathMode m);
std::string tile_dgrad_smallc(const ConvProblem& p, DType t, MathMode m);
std::string fwd_smallc(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* bias,
                       void* y, void* stream);
std::string wgrad_smallc(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                         void* workspace, size_t workspace_bytes, void* stream);
std::string dgrad_smallc(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                         void* stream);

// The stencil family's tensor-core forward (dgrad false) / grad-input of a channels-last 16-bit depthwise 3x3x3 layer
// (depthwise_band.cu; stencil::band_takes says when, 16-byte aligned src and out).
std::string depthwise_band(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                           void* out, void* stream);

}  // namespace hopper
}  // namespace jaxconv3d
