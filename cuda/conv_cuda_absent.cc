// Stand-ins for the CUDA entry points when the extension is built without nvcc: the CPU path works and any
// attempt to run on a GPU says why it cannot.
#include "conv_kernels.h"

namespace jaxconv3d {
namespace {
const char* kNoCuda = "jaxconv3d was built without CUDA support";
}

bool cuda_available() { return false; }
std::string conv_fwd_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, const void*, void*, void*) {
  return kNoCuda;
}
std::string conv_dgrad_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, void*, void*) {
  return kNoCuda;
}
size_t conv_wgrad_cuda_workspace_bytes(const ConvProblem&, DType, MathMode) { return 0; }
std::string conv_wgrad_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, void*, void*, size_t,
                            void*) {
  return kNoCuda;
}
std::string conv_bgrad_cuda(const ConvProblem&, DType, const void*, void*, void*) { return kNoCuda; }
int cuda_exchange_device(int) { return -1; }

}  // namespace jaxconv3d
