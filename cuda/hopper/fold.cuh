// A first layer's folded copies (hopper_rules.h, Fold): the gathers into and out of the folded convolution that
// its forward, grad-input and grad-weight run on. Each launches on `stream` only and returns "" or a message.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "hopper/hopper_rules.h"

namespace jaxconv3d {
namespace hopper {

// A first layer's workspace, carved as hopper_rules.h lays it out: the folded source (or its gradient), the folded
// filter (or its gradient), then the folded operation's own workspace.
struct FoldSpace {
  char* source;
  char* filter;
  char* inner;
};
inline FoldSpace fold_space(const Fold& f, DType t, void* workspace) {
  char* source = static_cast<char*>(workspace);
  char* filter = source + folded_source_bytes(f, t);
  return FoldSpace{source, filter, filter + folded_filter_bytes(f, t)};
}

// xf (f.folded's source, NDHWC, f.folded.in_channels channels) from x (NDHWC, p.in_channels channels).
std::string fold_source(const ConvProblem& p, DType t, const Fold& f, const void* x, void* xf, cudaStream_t stream);
// The folded filter wf (ODHWI, f.folded.in_channels channels, zeros past f.raw) from w (ODHWI).
std::string fold_filter(DType t, const Fold& f, const void* w, void* wf, cudaStream_t stream);
// dw (ODHWI) from the folded filter's gradient dwf: the first f.raw channels of each row.
std::string unfold_filter(DType t, const Fold& f, const void* dwf, void* dw, cudaStream_t stream);
// dx (NDHWC) from the folded source's gradient dxf: each element the sum, in tap order, of the folded elements that
// copied it (a gather: deterministic, no atomics).
std::string unfold_source(const ConvProblem& p, DType t, const Fold& f, const void* dxf, void* dx, cudaStream_t stream);

}  // namespace hopper
}  // namespace jaxconv3d
