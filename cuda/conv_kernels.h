// The kernel entry points. Both doors (ffi_handlers.cc for JAX, dlpack_adapter.cc for torch) call exactly these,
// which is why the two fronts give bitwise-identical results.
//
// Every tensor is dense row-major: x (N, C, D, H, W), w (O, C/groups, kd, kh, kw), y (N, O, Do, Ho, Wo),
// bias (O). `bias` may be null. All four operations overwrite their output completely.
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
// (each output element is owned by one thread and summed in a fixed order).
std::string conv_fwd_cpu(const ConvProblem& p, DType t, const void* x, const void* w, const void* bias, void* y);
std::string conv_dgrad_cpu(const ConvProblem& p, DType t, const void* dy, const void* w, void* dx);
std::string conv_wgrad_cpu(const ConvProblem& p, DType t, const void* x, const void* dy, void* dw);
std::string conv_bgrad_cpu(const ConvProblem& p, DType t, const void* dy, void* db);

// ---- CUDA (conv_cuda.cu). Launch on `stream` only: no synchronisation, no allocation; deterministic.
bool cuda_available();  // compiled with CUDA support
std::string conv_fwd_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w,
                          const void* bias, void* y, void* stream);
std::string conv_dgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                            void* stream);
// Grad-weight splits its reduction over N*Do*Ho*Wo across blocks and combines the partial sums in a fixed
// order; the partials live in a caller-provided workspace of conv_wgrad_cuda_workspace_bytes() bytes (taken from
// XLA's scratch allocator or allocated by torch), so the call path never allocates.
size_t conv_wgrad_cuda_workspace_bytes(const ConvProblem& p, DType t, MathMode m);
std::string conv_wgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                            void* workspace, size_t workspace_bytes, void* stream);
std::string conv_bgrad_cuda(const ConvProblem& p, DType t, const void* dy, void* db, void* stream);

// Makes `device` current for the calling thread and returns the previous one (-1 on error); used by the torch
// door, whose tensors may live on any device.
int cuda_exchange_device(int device);

}  // namespace jaxconv3d
