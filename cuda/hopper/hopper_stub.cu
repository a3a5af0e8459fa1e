// TEMPORARY stand-in for the Hopper family until its kernels land in cuda/hopper/*.cu: it accepts nothing, so the
// dispatcher always falls back to sm80, and its run functions refuse. Delete this file when the real
// implementation of hopper_conv.h is added.
#include "hopper/hopper_conv.h"

namespace jaxconv3d {
namespace hopper {
namespace {
const char* kAbsent = "the hopper family is not implemented yet (hopper_stub.cu)";
}

bool accepts_fwd(const ConvProblem&, DType, MathMode) { return false; }
bool accepts_dgrad(const ConvProblem&, DType, MathMode) { return false; }
bool accepts_wgrad(const ConvProblem&, DType, MathMode) { return false; }

size_t fwd_workspace_bytes(const ConvProblem&, DType, MathMode) { return 0; }
size_t dgrad_workspace_bytes(const ConvProblem&, DType, MathMode) { return 0; }
size_t wgrad_workspace_bytes(const ConvProblem&, DType, MathMode) { return 0; }

std::string tile_fwd(const ConvProblem&, DType, MathMode) { return "stub"; }
std::string tile_dgrad(const ConvProblem&, DType, MathMode) { return "stub"; }
std::string tile_wgrad(const ConvProblem&, DType, MathMode) { return "stub"; }

std::string fwd(const ConvProblem&, DType, MathMode, const void*, const void*, const void*, void*, void*, size_t,
                void*) {
  return kAbsent;
}
std::string dgrad(const ConvProblem&, DType, MathMode, const void*, const void*, void*, void*, size_t, void*) {
  return kAbsent;
}
std::string wgrad(const ConvProblem&, DType, MathMode, const void*, const void*, void*, void*, size_t, void*) {
  return kAbsent;
}

}  // namespace hopper
}  // namespace jaxconv3d
