// Stand-ins for the CUDA entry points when the extension is built without nvcc: the CPU path works and any
// attempt to run on a GPU says why it cannot. The Hopper family's kernels are absent too; its rules
// (hopper_rules.cc) are built everywhere, so jaxconv3d.explain answers for a GPU as a CUDA build would.
#include "conv_kernels.h"
#include "hopper/hopper_conv.h"

namespace jaxconv3d {
namespace {
const char* kNoCuda = "jaxconv3d was built without CUDA support";
}

bool cuda_available() { return false; }
int cuda_device_cc(int) { return 0; }
std::string conv_fwd_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, const void*, void*, void*,
                          size_t, void*) {
  return kNoCuda;
}
std::string conv_dgrad_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, void*, void*, size_t,
                            void*) {
  return kNoCuda;
}
std::string conv_wgrad_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, void*, void*, size_t,
                            void*) {
  return kNoCuda;
}
std::string conv_bgrad_cuda(const ConvProblem&, DType, const void*, void*, void*) { return kNoCuda; }
std::string conv_grads_cuda(const ConvProblem&, DType, MathMode, const void*, const void*, const void*, void*, void*,
                            void*, size_t, void*) {
  return kNoCuda;
}
int cuda_exchange_device(int) { return -1; }
std::string cuda_transpose_batched(const void*, void*, int64_t, int64_t, int64_t, int64_t, void*) { return kNoCuda; }

}  // namespace jaxconv3d

namespace {
const char* kHopperAbsent = "jaxconv3d was built without CUDA support";
}
#include "hopper/hopper_absent.inc"
