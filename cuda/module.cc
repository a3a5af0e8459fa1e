// The extension module `jaxconv3d._ext`: FFI handler capsules for JAX (registrations()) and, in the submodule
// `torch_adapter`, the DLPack functions the torch front calls.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <string>

#include "conv_kernels.h"
#include "dispatch.h"
#include "dlpack_adapter.h"
#include "ffi_handlers.h"

namespace py = pybind11;

namespace {

template <typename Fn>
py::capsule handler_capsule(Fn* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, Fn, XLA_FFI_CallFrame*>, "not an FFI handler");
  return py::capsule(reinterpret_cast<void*>(fn));
}

}  // namespace

PYBIND11_MODULE(_ext, m) {
  m.doc() = "jaxconv3d kernels: XLA FFI handlers and the DLPack adapter";
  // Target names carry the version of the handlers' interface (operands, results, attributes): bump
  // kFfiTargetVersion when it changes, so that programs exported with jax.export against the old interface fail
  // with a clear message (the stale handler, registered under the old names) instead of misreading attributes.
  constexpr int kFfiTargetVersion = 2;
  m.attr("FFI_TARGET_VERSION") = kFfiTargetVersion;
#ifndef JAXCONV3D_BUILT_JAXLIB
#define JAXCONV3D_BUILT_JAXLIB "unknown"
#endif
  // The jaxlib whose XLA FFI headers this build used: the FFI refuses handlers built against a newer API.
  m.attr("BUILT_WITH_JAXLIB") = JAXCONV3D_BUILT_JAXLIB;
  m.def("registrations", []() {
    const std::string v = "_v" + std::to_string(kFfiTargetVersion);
    py::dict cpu, cuda;
    cpu[py::str("jaxconv3d_fwd" + v)] = handler_capsule(jaxconv3d_fwd_cpu);
    cpu[py::str("jaxconv3d_dgrad" + v)] = handler_capsule(jaxconv3d_dgrad_cpu);
    cpu[py::str("jaxconv3d_wgrad" + v)] = handler_capsule(jaxconv3d_wgrad_cpu);
    cpu[py::str("jaxconv3d_bgrad" + v)] = handler_capsule(jaxconv3d_bgrad_cpu);
    cpu[py::str("jaxconv3d_grads" + v)] = handler_capsule(jaxconv3d_grads_cpu);
#ifdef JAXCONV3D_WITH_CUDA
    cuda[py::str("jaxconv3d_fwd" + v)] = handler_capsule(jaxconv3d_fwd_cuda);
    cuda[py::str("jaxconv3d_dgrad" + v)] = handler_capsule(jaxconv3d_dgrad_cuda);
    cuda[py::str("jaxconv3d_wgrad" + v)] = handler_capsule(jaxconv3d_wgrad_cuda);
    cuda[py::str("jaxconv3d_bgrad" + v)] = handler_capsule(jaxconv3d_bgrad_cuda);
    cuda[py::str("jaxconv3d_grads" + v)] = handler_capsule(jaxconv3d_grads_cuda);
#endif
    // Version 1 had no suffix.
    for (const char* old : {"jaxconv3d_fwd", "jaxconv3d_dgrad", "jaxconv3d_wgrad", "jaxconv3d_bgrad"}) {
      cpu[py::str(old)] = handler_capsule(jaxconv3d_stale);
#ifdef JAXCONV3D_WITH_CUDA
      cuda[py::str(old)] = handler_capsule(jaxconv3d_stale);
#endif
    }
    py::dict out;
    out["cpu"] = cpu;
    out["CUDA"] = cuda;
    return out;
  }, "FFI handler capsules by platform: {'cpu': {name: capsule}, 'CUDA': {...}}; names end in _v<FFI_TARGET_VERSION>, "
     "older names map to a handler that refuses stale exported programs");
  m.def("built_with_cuda", []() { return jaxconv3d::cuda_available(); });
  m.def(
      "plan",
      [](const std::string& op, std::array<int64_t, 5> xs, std::array<int64_t, 5> ws, std::array<int64_t, 5> ys,
         std::array<int64_t, 3> stride, std::array<int64_t, 3> pad_lo, std::array<int64_t, 3> pad_hi,
         std::array<int64_t, 3> dilation, int64_t groups, int64_t math, int dtype, int64_t layout, int cc) {
        using namespace jaxconv3d;
        Op o = Op::kWgrad;
        const bool grads = op == "grads";
        if (op == "forward") o = Op::kFwd;
        else if (op == "grad_input") o = Op::kDgrad;
        else if (op != "grad_weight" && !grads)
          throw py::value_error("jaxconv3d: op must be 'forward', 'grad_input', 'grad_weight' or 'grads', got '" + op +
                                "'");
        if (dtype < 0 || dtype > 3) throw py::value_error("jaxconv3d: dtype code must be 0..3");
        if (math != 0 && math != 1) throw py::value_error("jaxconv3d: math must be 0 (accurate) or 1 (tf32)");
        if (cc < 0) throw py::value_error("jaxconv3d: cc must be >= 0 (0: the CPU)");
        ConvProblem p;
        const std::string err = make_problem(xs.data(), ws.data(), ys.data(), stride.data(), pad_lo.data(),
                                             pad_hi.data(), dilation.data(), groups, static_cast<Layout>(layout), &p);
        if (!err.empty()) throw py::value_error("jaxconv3d: " + err);
        const DType t = static_cast<DType>(dtype);
        const MathMode mm = static_cast<MathMode>(math);
        const Plan pl = grads ? plan_grads(p, t, mm, cc) : plan(o, p, t, mm, cc);
        py::dict out;
        out["family"] = pl.family;
        out["tile"] = pl.tile;
        out["layout"] = std::string(layout_name(pl.layout));
        out["workspace_bytes"] = static_cast<int64_t>(pl.workspace_bytes);
        out["rule"] = pl.rule;
        return out;
      },
      "The dispatcher's choice for one operation: {family, tile, layout, workspace_bytes, rule}; 'grads' (grad-input "
      "and grad-weight as one launch) answers family '' where they run apart. Shapes are in "
      "`layout` (0: NCDHW, 1: NDHWC); cc = 10*major+minor of the GPU, 0 for the CPU. Needs no GPU.");
  py::module_ adapter = m.def_submodule("torch_adapter", "DLPack entry points for the torch front");
  jaxconv3d::bind_torch_adapter(adapter);
}
