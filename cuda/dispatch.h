// The dispatcher: which kernel family runs an operation, with which tile, on which memory layout, and how much
// workspace it needs. `plan()` is one pure function of (operation, problem, dtype, math mode, compute capability)
// and the JAXCONV3D_FAMILY environment variable, written as an ordered table of rules (dispatch.cc). Plain C++ (no
// CUDA types): it builds and answers without nvcc and without a GPU, so `jaxconv3d.explain` works anywhere.
//
// Families:
//   cpu    the host kernels (conv_cpu.cc); either layout (channels-last goes through host temporaries).
//   sm80   today's CUDA kernels (cuda/sm80/): pre-Hopper GPUs and the fallback everywhere; NCDHW / OIDHW.
//   hopper the sm_90a wgmma kernels (cuda/hopper/); NDHWC / ODHWI only.
//   hopper_smallc  the same family's first-layer forward (cuda/hopper/conv_smallc.cuh): either layout.
#pragma once

#include <cstddef>
#include <string>

#include "conv_problem.h"

namespace jaxconv3d {

struct Plan {
  std::string family;          // "cpu", "sm80", "hopper", "hopper_smallc"
  std::string tile;            // the family's kernel / tile, e.g. "stencil", "gemm_wmma_128x64"
  std::string rule;            // the rule of the table that chose the family (for explain())
  Layout layout = Layout::kNCDHW;  // the layout the family's kernels read and write
  size_t workspace_bytes = 0;  // scratch the caller provides (XLA: an extra result; torch: a callback)
  int variant = 0;             // the family's internal kernel choice; opaque outside the family
};

// `cc`: compute capability as 10 * major + minor (80, 86, 90, ...); 0 means the CPU.
// The problem must have passed ConvProblem::check(). The cpu family answers with the problem's own layout.
// `fixed_layout`: the tensors already lie in p.layout (the doors: a JAX program traced under another
// JAXCONV3D_FAMILY, or for another device, keeps its layout), so only families that read that layout are
// considered; the fronts ask with false, to learn which layout to hand over.
Plan plan(Op op, const ConvProblem& p, DType t, MathMode m, int cc, bool fixed_layout = false);

// Grad-input and grad-weight of one backward as one launch: where the two plans above are sm80's
// stencil_3x3x3_mma and wgrad_depthwise_3x3x3_mma (16-bit), or stencil_3x3x3_stream and
// wgrad_depthwise_3x3x3_stream (float32), and sm80::fused_grads() holds, the fused kernel (family sm80, tile
// depthwise_3x3x3_backward_mma or _stream, grad-weight's workspace), whose results are bitwise theirs; elsewhere a
// Plan with an empty family (the two operations run apart) and the reason in `rule`.
Plan plan_grads(const ConvProblem& p, DType t, MathMode m, int cc, bool fixed_layout = false);

}  // namespace jaxconv3d
