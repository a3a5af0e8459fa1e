// The kernel entry points. Both doors (ffi_handlers.cc for JAX, dlpack_adapter.cc for torch) call exactly these,
// which is why the two fronts give bitwise-identical results.
//
// Every tensor is dense row-major in the problem's layout (ConvProblem::layout): NCDHW x (N, C, D, H, W),
// w (O, C/groups, kd, kh, kw), y (N, O, Do, Ho, Wo); or NDHWC x (N, D, H, W, C), w (O, kd, kh, kw, C/groups),
// y (N, Do, Ho, Wo, O). Bias is (O) and may be null; grad-bias reads dy as NCDHW. All four operations overwrite their output completely.
// Each returns an empty string on success and a message otherwise. The problem must already have passed
// ConvProblem::check(); the entry points re-check it and refuse rather than index out of bounds.
//
// This header is plain C++ (no CUDA types) so that host-only translation units can include it; CUDA streams
// travel as void* (a cudaStream_t).
#pragma once

#include <cstddef>
#include <string>

#include "conv_problem.h"

namespace jaxconv3d {

// ---- CPU (conv_cpu.cc). Accumulates in float32 for float32/bfloat16/float16 and in float64 for float64;
// reductions over the batch (grad-weight, grad-bias) accumulate in float64. Multithreaded, deterministic
// (each output element is owned by one thread and summed in a fixed order). Channels-last problems are
// transposed into host temporaries, computed channels-first and transposed back (the CPU path may allocate).
std::string conv_fwd_cpu(const ConvProblem& p, DType t, const void* x, const void* w, const void* bias, void* y);
std::string conv_dgrad_cpu(const ConvProblem& p, DType t, const void* dy, const void* w, void* dx);
std::string conv_wgrad_cpu(const ConvProblem& p, DType t, const void* x, const void* dy, void* dw);
std::string conv_bgrad_cpu(const ConvProblem& p, DType t, const void* dy, void* db);

// ---- CUDA (conv_cuda.cu). Each entry point asks plan() (dispatch.h) for the family of the current device and
// runs it; the problem's layout must be that family's native layout (the fronts arrange it), else an error.
// Launch on `stream` only: no synchronisation, no allocation; deterministic. Every operation takes a
// caller-provided workspace of at least plan(op, p, t, m, cuda_device_cc(-1)).workspace_bytes bytes (taken from
// XLA's scratch as an extra result, or allocated by torch through a callback), so the call path never allocates.
bool cuda_available();  // compiled with CUDA support
// Compute capability (10 * major + minor) of CUDA device `device` (-1: the calling thread's current device);
// 0 without CUDA or on error.
int cuda_device_cc(int device);
std::string conv_fwd_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w,
                          const void* bias, void* y, void* workspace, size_t workspace_bytes, void* stream);
std::string conv_dgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                            void* workspace, size_t workspace_bytes, void* stream);
std::string conv_wgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                            void* workspace, size_t workspace_bytes, void* stream);
std::string conv_bgrad_cuda(const ConvProblem& p, DType t, const void* dy, void* db, void* stream);
// Grad-input and grad-weight together where plan_grads() names a family (an error elsewhere: run the two above);
// the workspace holds at least plan_grads(...).workspace_bytes bytes.
std::string conv_grads_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* dy,
                            void* dx, void* dw, void* workspace, size_t workspace_bytes, void* stream);

// dst[o][c][r] = src[o][r][c] for o < outer, r < rows, c < cols (elements of 2, 4 or 8 bytes), on `stream`:
// NCDHW -> NDHWC is (outer N, rows C, cols D*H*W), NDHWC -> NCDHW the reverse.
std::string cuda_transpose_batched(const void* src, void* dst, int64_t outer, int64_t rows, int64_t cols,
                                   int64_t elem_bytes, void* stream);

// Makes `device` current for the calling thread and returns the previous one (-1 on error); used by the torch
// door, whose tensors may live on any device.
int cuda_exchange_device(int device);

}  // namespace jaxconv3d
