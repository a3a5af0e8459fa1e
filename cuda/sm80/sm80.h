// The sm80 family (today's CUDA kernels: pre-Hopper GPUs and the fallback everywhere): NCDHW / OIDHW tensors,
// every dtype. The caller (conv_cuda.cu) has validated the problem and chosen `k` with sm80::choose() (plan.h);
// each function launches on `stream` only, allocates nothing and is deterministic. Plain C++ declarations.
#pragma once

#include <cstddef>
#include <string>

#include "conv_problem.h"
#include "sm80/plan.h"

namespace jaxconv3d {
namespace sm80 {

std::string fwd(const ConvProblem& p, DType t, Kernel k, const void* x, const void* w, const void* bias, void* y,
                void* stream);
std::string dgrad(const ConvProblem& p, DType t, Kernel k, const void* dy, const void* w, void* dx, void* stream);
// `workspace` holds the split partials: at least wg_plan(p, t).ws_bytes bytes.
std::string wgrad(const ConvProblem& p, DType t, Kernel k, const void* x, const void* dy, void* dw, void* workspace,
                  size_t workspace_bytes, void* stream);
std::string bgrad(const ConvProblem& p, DType t, const void* dy, void* db, void* stream);

// The depthwise stencil behind fwd / dgrad when choose() says Kernel::kStencil (stencil.cu).
std::string stencil(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                    void* out, void* stream);
// Its 3x3x3 stride-1 form when choose() says Kernel::kStencil3 (stencil3.cu), and that form's grad-weight
// (Kernel::kWgradDw3, wgrad_dw3.cu: per-split sums in the workspace when the caller's wg_plan() has S > 1).
std::string stencil3(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                     void* out, void* stream);
// The streaming form of the same stencil when choose() says Kernel::kStencil3Stream (stencil3_stream.cu).
std::string stencil3_stream(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w,
                            const void* bias, void* out, void* stream);
// Its tensor-core form for 16-bit tensors when choose() says Kernel::kStencil3Mma (stencil3_mma.cu); tensors not
// aligned for its copies and stores run stencil3_stream.
std::string stencil3_mma(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                         void* out, void* stream);
std::string wgrad_dw3(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw,
                      void* workspace, void* stream);
// Its tensor-core form for 16-bit tensors when choose() says Kernel::kWgradDw3Mma (wgrad_dw3_mma.cu: per-split sums
// in the workspace when pl.mma_S > 1); wgrad_dw3_mma_aligned() says whether x and dy allow its 8-byte copies (if
// not, wgrad_dw3 runs with pl.S).
std::string wgrad_dw3_mma(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw,
                          void* workspace, void* stream);
bool wgrad_dw3_mma_aligned(const void* x, const void* dy);
// Its streaming form for float32 tensors whose x and dy have the same extents when choose() says
// Kernel::kWgradDw3Stream (dw3_bwd_stream.cu: per-split sums in the workspace when pl.stream_S > 1).
std::string wgrad_dw3_stream(const ConvProblem& p, DType t, const WgPlan& pl, const void* x, const void* dy, void* dw,
                             void* workspace, void* stream);
// Adds the S partial sums of each dw element (the workspace's [S][w_elements] float / double rows) in split order
// into dw, as a dependent launch (wgrad.cu); the grad-weight kernels' second pass.
std::string splits_reduce(const ConvProblem& p, DType t, const void* workspace, void* dw, int S, void* stream);

// Grad-input and grad-weight of one backward together where fused_grads(p, t) (Kernel::kDw3BwdMma,
// dw3_bwd_mma.cu): the results are bitwise those of dgrad(kStencil3Mma) and wgrad(kWgradDw3Mma), which run instead
// where the tensors are off its copies' alignment. `workspace`: at least wg_plan(p, t).ws_bytes bytes.
std::string dw3_bwd_mma(const ConvProblem& p, DType t, const void* x, const void* w, const void* dy, void* dx,
                        void* dw, void* workspace, size_t workspace_bytes, void* stream);
// The same for float32 (Kernel::kDw3BwdStream, dw3_bwd_stream.cu): bitwise dgrad(kStencil3Stream) and
// wgrad(kWgradDw3Stream), which is this kernel without the grad-input.
std::string dw3_bwd_stream(const ConvProblem& p, DType t, const void* x, const void* w, const void* dy, void* dx,
                           void* dw, void* workspace, size_t workspace_bytes, void* stream);

}  // namespace sm80
}  // namespace jaxconv3d
