// The CUDA entry points (conv_kernels.h): validate the problem, ask the dispatcher (dispatch.h) which family runs
// it on the current device, check the layout and workspace, and hand over to the family: sm80 (cuda/sm80/),
// hopper or hopper_smallc (cuda/hopper/). Launches only on the caller's stream; allocates nothing.
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <string>

#include "conv_kernels.h"
#include "dispatch.h"
#include "hopper/hopper_conv.h"
#include "sm80/sm80.h"
#include "stencil/stencil.h"

namespace jaxconv3d {
namespace {

constexpr int64_t kAxisLimit = int64_t(1) << 27;

std::string validate(const ConvProblem& p) {
  const std::string msg = p.check();
  if (!msg.empty()) return "jaxconv3d cuda: invalid problem: " + msg;
  for (int a = 0; a < 3; ++a) {
    if (p.in[a] >= kAxisLimit || p.out[a] >= kAxisLimit || p.pad_lo[a] >= kAxisLimit ||
        p.pad_hi[a] >= kAxisLimit || p.stride[a] >= kAxisLimit || p.kernel[a] >= kAxisLimit ||
        p.dilation[a] * p.kernel[a] >= kAxisLimit)
      return "jaxconv3d cuda: a spatial extent, padding, stride or dilated kernel is 2^27 or larger";
  }
  if (p.in_per_group() * p.taps() >= (int64_t(1) << 30) || p.out_per_group() * p.taps() >= (int64_t(1) << 30))
    return "jaxconv3d cuda: (channels per group) x taps must be below 2^30";
  if (p.in_channels >= INT_MAX || p.out_channels >= INT_MAX) return "jaxconv3d cuda: too many channels";
  if (p.batch >= (int64_t(1) << 40)) return "jaxconv3d cuda: batch too large";
  return "";
}

// The plan `planned(cc)` gives for the current device, or an error: a family must take the problem (a plan with
// none says why in its rule, or names none), the layout must be the family's own, and the workspace at least what
// it needs.
template <typename Planned>
std::string checked_plan(Planned planned, const ConvProblem& p, size_t workspace_bytes, const void* workspace,
                         Plan* pl) {
  std::string e = validate(p);
  if (!e.empty()) return e;
  const int cc = cuda_device_cc(-1);
  if (cc <= 0) return "jaxconv3d cuda: could not read the current device's compute capability";
  *pl = planned(cc);
  if (pl->family.empty())
    return std::string("jaxconv3d cuda: no kernel family accepts this problem in ") + layout_name(p.layout) +
           " layout" + (pl->rule.empty() ? " (JAXCONV3D_FAMILY forced one that cannot read it?)" : ": " + pl->rule);
  if (pl->layout != p.layout)
    return std::string("jaxconv3d cuda: the ") + pl->family + " family runs on " + layout_name(pl->layout) +
           " tensors but the call passed " + layout_name(p.layout);
  if (p.batch > 0 && workspace_bytes < pl->workspace_bytes)
    return "jaxconv3d cuda: workspace too small (" + std::to_string(workspace_bytes) + " < " +
           std::to_string(pl->workspace_bytes) + " bytes)";
  if (p.batch > 0 && pl->workspace_bytes > 0 && workspace == nullptr) return "jaxconv3d cuda: workspace is null";
  return "";
}

// The family's plan for `op` on the current device, checked as above.
std::string prepare(Op op, const ConvProblem& p, DType t, MathMode m, size_t workspace_bytes, const void* workspace,
                    Plan* pl) {
  return checked_plan([&](int cc) { return plan(op, p, t, m, cc, /*fixed_layout=*/true); }, p, workspace_bytes,
                      workspace, pl);
}

bool is_hopper(const Plan& pl) { return pl.family == "hopper"; }
sm80::Kernel kernel_of(const Plan& pl) { return static_cast<sm80::Kernel>(pl.variant); }

}  // namespace

bool cuda_available() { return true; }

int cuda_device_cc(int device) {
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) return 0;
  static std::atomic<int> cache[64];  // per device; 0: not read yet
  const bool cached = device < 64;
  if (cached && cache[device].load() > 0) return cache[device].load();
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    return 0;
  const int cc = 10 * major + minor;
  if (cached) cache[device].store(cc);
  return cc;
}

std::string conv_fwd_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* bias,
                          void* y, void* workspace, size_t workspace_bytes, void* stream) {
  Plan pl;
  std::string e = prepare(Op::kFwd, p, t, m, workspace_bytes, workspace, &pl);
  if (!e.empty()) return e;
  if (p.batch == 0) return "";
  if (x == nullptr || w == nullptr || y == nullptr) return "jaxconv3d cuda: null tensor pointer";
  if (is_hopper(pl)) return hopper::fwd(p, t, m, x, w, bias, y, workspace, workspace_bytes, stream);
  if (pl.family == "hopper_smallc") return hopper::fwd_smallc(p, t, m, x, w, bias, y, stream);
  if (pl.family == "stencil") return stencil::fwd(p, t, pl.variant == 1, x, w, bias, y, stream);
  return sm80::fwd(p, t, kernel_of(pl), x, w, bias, y, stream);
}

std::string conv_dgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                            void* workspace, size_t workspace_bytes, void* stream) {
  Plan pl;
  std::string e = prepare(Op::kDgrad, p, t, m, workspace_bytes, workspace, &pl);
  if (!e.empty()) return e;
  if (p.batch == 0) return "";
  if (dy == nullptr || w == nullptr || dx == nullptr) return "jaxconv3d cuda: null tensor pointer";
  if (is_hopper(pl)) return hopper::dgrad(p, t, m, dy, w, dx, workspace, workspace_bytes, stream);
  if (pl.family == "hopper_smallc") return hopper::dgrad_smallc(p, t, m, dy, w, dx, stream);
  if (pl.family == "stencil") return stencil::dgrad(p, t, pl.variant == 1, dy, w, dx, stream);
  return sm80::dgrad(p, t, kernel_of(pl), dy, w, dx, stream);
}

std::string conv_wgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                            void* workspace, size_t workspace_bytes, void* stream) {
  Plan pl;
  std::string e = prepare(Op::kWgrad, p, t, m, workspace_bytes, workspace, &pl);
  if (!e.empty()) return e;
  if (dw == nullptr) return "jaxconv3d cuda: null tensor pointer";
  if (p.batch > 0 && (x == nullptr || dy == nullptr)) return "jaxconv3d cuda: null tensor pointer";
  if (is_hopper(pl)) return hopper::wgrad(p, t, m, x, dy, dw, workspace, workspace_bytes, stream);
  if (pl.family == "hopper_smallc") return hopper::wgrad_smallc(p, t, m, x, dy, dw, workspace, workspace_bytes, stream);
  if (pl.family == "stencil") return stencil::wgrad(p, t, x, dy, dw, workspace, workspace_bytes, stream);
  return sm80::wgrad(p, t, kernel_of(pl), x, dy, dw, workspace, workspace_bytes, stream);
}

std::string conv_bgrad_cuda(const ConvProblem& p, DType t, const void* dy, void* db, void* stream) {
  std::string e = validate(p);
  if (!e.empty()) return e;
  if (db == nullptr) return "jaxconv3d cuda: null tensor pointer";
  if (p.batch > 0 && dy == nullptr) return "jaxconv3d cuda: null tensor pointer";
  return sm80::bgrad(p, t, dy, db, stream);
}

std::string conv_grads_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* dy,
                            void* dx, void* dw, void* workspace, size_t workspace_bytes, void* stream) {
  Plan pl;
  std::string e = checked_plan([&](int cc) { return plan_grads(p, t, m, cc, /*fixed_layout=*/true); }, p,
                               workspace_bytes, workspace, &pl);
  if (!e.empty()) return e;
  if (p.batch == 0) return "";
  if (x == nullptr || w == nullptr || dy == nullptr || dx == nullptr || dw == nullptr)
    return "jaxconv3d cuda: null tensor pointer";
  if (kernel_of(pl) == sm80::Kernel::kDw3BwdStream)
    return sm80::dw3_bwd_stream(p, t, x, w, dy, dx, dw, workspace, workspace_bytes, stream);
  return sm80::dw3_bwd_mma(p, t, x, w, dy, dx, dw, workspace, workspace_bytes, stream);
}

int cuda_exchange_device(int device) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) return -1;
  if (cudaSetDevice(device) != cudaSuccess) return -1;
  return prev;
}

}  // namespace jaxconv3d
