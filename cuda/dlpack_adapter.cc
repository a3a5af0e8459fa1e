// The torch door: DLPack capsules + a stream -> ConvProblem -> the same kernel entry points the FFI handlers call.
//
// torch hands us capsules from torch.utils.dlpack.to_dlpack (zero-copy, no stream hand-shake) and its current
// stream as an integer; we read pointer, shape, strides, dtype and device, check them, and launch. The capsules are
// only borrowed: their producer's deleter runs when Python drops them, after the call. torch allocates every
// output and each operation's workspace (sized from the same plan), so the launch path never allocates and can be
// captured in a torch CUDA graph. Tensors come as torch holds them: logical (N, C, D, H, W) activations and
// (O, C/g, kD, kH, kW) filters, compact in the memory order the call's layout names (0: NCDHW / OIDHW, row-major;
// 1: NDHWC / ODHWI, torch's channels_last_3d), so a channels-last tensor needs no permuted view on the way in. The
// torch front picks the layout the device's kernel family wants (jaxconv3d/_plan.py).
#include "dlpack_adapter.h"

#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include "conv_kernels.h"
#include "dispatch.h"
#include "dlpack_abi.h"

namespace py = pybind11;

namespace jaxconv3d {
namespace {

struct View {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int32_t device_type = 0;
  int32_t device_id = 0;
  std::vector<int64_t> shape;
  bool read_only = false;
  int64_t bytes = 0;
};

[[noreturn]] void bad(const std::string& msg) { throw py::value_error("jaxconv3d: " + msg); }

// `raw`: any element type (a byte workspace); otherwise one of the four floating types. `channels_last`: the tensor
// is logical (outer, C, spatial...) and must be compact in channels-last order (outer, spatial..., C); its View
// carries that memory order's shape, which is what the kernels and make_problem read for Layout::kNDHWC.
View view_of(py::handle obj, const char* name, bool raw = false, bool channels_last = false) {
  if (!PyCapsule_CheckExact(obj.ptr())) bad(std::string(name) + " must be a DLPack capsule");
  const char* cap_name = PyCapsule_GetName(obj.ptr());
  const dlpack::Tensor* t = nullptr;
  View v;
  if (cap_name && std::string(cap_name) == "dltensor") {
    auto* m = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(obj.ptr(), "dltensor"));
    if (m) t = &m->dl_tensor;
  } else if (cap_name && std::string(cap_name) == "dltensor_versioned") {
    auto* m = static_cast<dlpack::ManagedTensorVersioned*>(PyCapsule_GetPointer(obj.ptr(), "dltensor_versioned"));
    if (m) {
      if (m->version.major != 1) bad(std::string(name) + ": unsupported DLPack major version");
      t = &m->dl_tensor;
      v.read_only = (m->flags & dlpack::kFlagReadOnly) != 0;
    }
  } else {
    bad(std::string(name) + " is a consumed or foreign capsule (expected 'dltensor' or 'dltensor_versioned')");
  }
  if (!t) throw py::error_already_set();
  const auto& dt = t->dtype;
  if (dt.lanes != 1) bad(std::string(name) + " must have one lane per element");
  v.bytes = (dt.bits + 7) / 8;
  for (int i = 0; i < t->ndim; ++i) v.bytes *= t->shape[i];
  if (raw) {
    // element type irrelevant
  } else if (dt.code == dlpack::kFloat && dt.bits == 32) v.dtype = DType::kF32;
  else if (dt.code == dlpack::kFloat && dt.bits == 64) v.dtype = DType::kF64;
  else if (dt.code == dlpack::kFloat && dt.bits == 16) v.dtype = DType::kF16;
  else if (dt.code == dlpack::kBfloat && dt.bits == 16) v.dtype = DType::kBF16;
  else bad(std::string(name) + " must be float32, float64, bfloat16 or float16");
  v.device_type = t->device.device_type;
  v.device_id = t->device.device_id;
  if (v.device_type != dlpack::kCPU && v.device_type != dlpack::kCUDA)
    bad(std::string(name) + " must live on the CPU or a CUDA device");
  if (channels_last && t->ndim < 3)
    bad(std::string(name) + " must have a batch, a channel and a spatial axis to be channels-last");
  // Memory order: axis(i) is the i-th slowest; channels-last moves the channel axis (1) last.
  const int nd = t->ndim;
  auto axis = [&](int i) { return channels_last ? (i == 0 ? 0 : (i == nd - 1 ? 1 : i + 1)) : i; };
  v.shape.resize(nd);
  for (int i = 0; i < nd; ++i) v.shape[i] = t->shape[axis(i)];
  if (t->strides) {  // must be compact in that order; strides of size-1 axes do not matter
    int64_t expect = 1;
    for (int i = nd - 1; i >= 0; --i) {
      const int a = axis(i);
      if (t->shape[a] != 1 && t->strides[a] != expect)
        bad(std::string(name) + (channels_last ? " must be compact in channels-last (channels_last_3d) order"
                                               : " must be contiguous"));
      expect *= t->shape[a];
    }
  } else if (channels_last && t->ndim > 0) {  // no strides: row-major, channels-last only where that is the same
    int64_t inner = 1;
    for (int i = 2; i < t->ndim; ++i) inner *= t->shape[i];
    if (t->shape[1] != 1 && inner != 1)
      bad(std::string(name) + " must be compact in channels-last (channels_last_3d) order");
  }
  v.data = static_cast<char*>(t->data) + t->byte_offset;
  return v;
}

std::array<int64_t, 5> dims5(const View& v, const char* name) {
  if (v.shape.size() != 5) bad(std::string(name) + " must be rank 5, got rank " + std::to_string(v.shape.size()));
  return {v.shape[0], v.shape[1], v.shape[2], v.shape[3], v.shape[4]};
}

using Triple = std::array<int64_t, 3>;

struct Call {
  std::vector<View> views;
  bool cuda = false;
  int device = 0;
};

// All operands share dtype and device; outputs are writable.
Call check_operands(std::initializer_list<std::pair<View*, const char*>> ops, size_t n_inputs) {
  Call c;
  const View& first = *ops.begin()->first;
  size_t i = 0;
  for (const auto& [v, name] : ops) {
    if (v->dtype != first.dtype)
      bad(std::string(name) + " is " + dtype_name(v->dtype) + " but " + ops.begin()->second + " is " +
          dtype_name(first.dtype) + ": all tensors must share one dtype");
    if (v->device_type != first.device_type || v->device_id != first.device_id)
      bad(std::string(name) + " is on a different device than " + ops.begin()->second);
    if (i++ >= n_inputs && v->read_only) bad(std::string(name) + " is read-only");
  }
  c.cuda = first.device_type == dlpack::kCUDA;
  c.device = first.device_id;
  return c;
}

ConvProblem problem(const std::array<int64_t, 5>& xs, const std::array<int64_t, 5>& ws,
                    const std::array<int64_t, 5>& ys, const Triple& stride, const Triple& pad_lo,
                    const Triple& pad_hi, const Triple& dilation, int64_t groups, int64_t layout) {
  ConvProblem p;
  const std::string err =
      make_problem(xs.data(), ws.data(), ys.data(), stride.data(), pad_lo.data(), pad_hi.data(), dilation.data(),
                   groups, static_cast<Layout>(layout), &p);
  if (!err.empty()) bad(err);
  return p;
}

// Whether the call's tensors lie channels-last (layout 1) or row-major (layout 0); anything else is an error.
bool channels_last_layout(int64_t layout) {
  if (layout != 0 && layout != 1) bad("layout must be 0 (NCDHW) or 1 (NDHWC)");
  return layout == 1;
}

MathMode math_mode(int64_t math) {
  if (math != 0 && math != 1) bad("math must be 0 (accurate) or 1 (tf32)");
  return static_cast<MathMode>(math);
}

// Runs `launch` with the GIL released and, for CUDA tensors, their device current.
template <typename F>
void run(const Call& c, F&& launch) {
  std::string err;
  {
    py::gil_scoped_release unlocked;
    if (c.cuda) {
      if (!cuda_available()) {
        err = "jaxconv3d was built without CUDA support";
      } else {
        const int prev = cuda_exchange_device(c.device);
        if (prev < 0) {
          err = "could not make CUDA device " + std::to_string(c.device) + " current";
        } else {
          err = launch(true);
          cuda_exchange_device(prev);
        }
      }
    } else {
      err = launch(false);
    }
  }
  if (!err.empty()) throw std::runtime_error("jaxconv3d: " + err);
}

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }

// An operation's CUDA workspace: a DLPack capsule of at least the planned number of bytes on the operands' device
// (the torch front allocates it from the same plan; see jaxconv3d/torch/_ops.py), or None where the planned
// family needs no scratch. Checked against this door's own plan, so a short or misplaced workspace is an error.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

Workspace workspace(const Call& c, const View& like, Op op, const ConvProblem& p, MathMode m, py::handle ws_cap) {
  Workspace w;
  if (!c.cuda || !cuda_available()) return w;
  const size_t need = plan(op, p, like.dtype, m, cuda_device_cc(c.device), /*fixed_layout=*/true).workspace_bytes;
  if (ws_cap.is_none()) {
    if (need > 0 && p.batch > 0) bad("workspace: this operation needs " + std::to_string(need) + " bytes, got None");
    return w;
  }
  View wv = view_of(ws_cap, "workspace", /*raw=*/true);
  if (wv.device_type != like.device_type || wv.device_id != like.device_id) bad("workspace is on the wrong device");
  if (wv.bytes < static_cast<int64_t>(need)) bad("workspace is smaller than the " + std::to_string(need) + " bytes planned");
  w.data = wv.data;
  w.bytes = static_cast<size_t>(wv.bytes);
  return w;
}

// The static arguments every convolution entry takes, in the order the torch front passes them.
struct Attrs {
  Triple stride, pad_lo, pad_hi, dilation;
  int64_t groups, math, layout;
};

// One operation, checked and ready to launch. Each entry point prepares all its operations before it launches any,
// so a bad call (whichever operation it concerns) is refused before a kernel runs.
struct Prepared {
  enum class Kind { kFwd, kDgrad, kWgrad, kBgrad, kGrads } kind = Kind::kFwd;
  Call call;
  ConvProblem p;
  DType dtype = DType::kF32;
  MathMode math = MathMode::kAccurate;
  const void* in0 = nullptr;  // x (forward, grad-weight) or dy (grad-input, grad-bias)
  const void* in1 = nullptr;  // w (forward, grad-input) or dy (grad-weight)
  const void* bias = nullptr;
  void* out = nullptr;
  const void* in2 = nullptr;  // grads: dy (in0: x, in1: w)
  void* out2 = nullptr;       // grads: dw (out: dx)
  Workspace ws;
};

std::string launch(const Prepared& o, bool cuda, void* stream) {
  const ConvProblem& p = o.p;
  switch (o.kind) {
    case Prepared::Kind::kFwd:
      return cuda ? conv_fwd_cuda(p, o.dtype, o.math, o.in0, o.in1, o.bias, o.out, o.ws.data, o.ws.bytes, stream)
                  : conv_fwd_cpu(p, o.dtype, o.in0, o.in1, o.bias, o.out);
    case Prepared::Kind::kDgrad:
      return cuda ? conv_dgrad_cuda(p, o.dtype, o.math, o.in0, o.in1, o.out, o.ws.data, o.ws.bytes, stream)
                  : conv_dgrad_cpu(p, o.dtype, o.in0, o.in1, o.out);
    case Prepared::Kind::kWgrad:
      return cuda ? conv_wgrad_cuda(p, o.dtype, o.math, o.in0, o.in1, o.out, o.ws.data, o.ws.bytes, stream)
                  : conv_wgrad_cpu(p, o.dtype, o.in0, o.in1, o.out);
    case Prepared::Kind::kBgrad:
      return cuda ? conv_bgrad_cuda(p, o.dtype, o.in0, o.out, stream) : conv_bgrad_cpu(p, o.dtype, o.in0, o.out);
    case Prepared::Kind::kGrads:  // only made for CUDA calls (fused())
      return conv_grads_cuda(p, o.dtype, o.math, o.in0, o.in1, o.in2, o.out, o.out2, o.ws.data, o.ws.bytes, stream);
  }
  return "unknown operation";
}

// Launches prepared operations in order on one device (one GIL release, one device switch); stops at the first
// error. Operations of one call must share the device (each was checked against its own operands already).
void run_all(std::initializer_list<const Prepared*> ops, uintptr_t stream) {
  const Prepared* first = nullptr;
  for (const Prepared* o : ops) {
    if (o == nullptr) continue;
    if (first == nullptr) first = o;
    else if (o->call.cuda != first->call.cuda || o->call.device != first->call.device)
      bad("all tensors must be on one device");
  }
  if (first == nullptr) return;
  run(first->call, [&](bool cuda) {
    for (const Prepared* o : ops) {
      if (o == nullptr) continue;
      std::string err = launch(*o, cuda, as_stream(stream));
      if (!err.empty()) return err;
    }
    return std::string();
  });
}

Prepared prepare_fwd(py::handle x_cap, py::handle w_cap, py::handle b_cap, py::handle y_cap, py::handle ws_cap,
                     const Attrs& a) {
  const bool cl = channels_last_layout(a.layout);
  View x = view_of(x_cap, "input", false, cl), w = view_of(w_cap, "weight", false, cl),
       y = view_of(y_cap, "output", false, cl);
  View b;
  const bool has_bias = !b_cap.is_none();
  if (has_bias) b = view_of(b_cap, "bias");
  Prepared o{Prepared::Kind::kFwd};
  o.call = has_bias ? check_operands({{&x, "input"}, {&w, "weight"}, {&b, "bias"}, {&y, "output"}}, 3)
                    : check_operands({{&x, "input"}, {&w, "weight"}, {&y, "output"}}, 2);
  o.p = problem(dims5(x, "input"), dims5(w, "weight"), dims5(y, "output"), a.stride, a.pad_lo, a.pad_hi, a.dilation,
                a.groups, a.layout);
  if (has_bias && (b.shape.size() != 1 || b.shape[0] != o.p.out_channels)) bad("bias must have shape (out_channels,)");
  o.math = math_mode(a.math);
  o.dtype = x.dtype;
  o.in0 = x.data;
  o.in1 = w.data;
  o.bias = has_bias ? b.data : nullptr;
  o.out = y.data;
  o.ws = workspace(o.call, x, Op::kFwd, o.p, o.math, ws_cap);
  return o;
}

// Grad-input (dy, w -> dx) and grad-weight (x, dy -> dw) take the same call: two inputs and an output in
// `a.layout`. They differ in which of the three carries make_problem's x, w and y shapes.
Prepared prepare_grad(Prepared::Kind kind, py::handle in0_cap, py::handle in1_cap, py::handle out_cap,
                      py::handle ws_cap, const Attrs& a) {
  const bool dgrad = kind == Prepared::Kind::kDgrad;
  const char* in0_name = dgrad ? "grad_output" : "input";
  const char* in1_name = dgrad ? "weight" : "grad_output";
  const char* out_name = dgrad ? "grad_input" : "grad_weight";
  const bool cl = channels_last_layout(a.layout);
  View in0 = view_of(in0_cap, in0_name, false, cl), in1 = view_of(in1_cap, in1_name, false, cl),
       out = view_of(out_cap, out_name, false, cl);
  Prepared o{kind};
  o.call = check_operands({{&in0, in0_name}, {&in1, in1_name}, {&out, out_name}}, 2);
  const auto x = dgrad ? dims5(out, out_name) : dims5(in0, in0_name);
  const auto w = dgrad ? dims5(in1, in1_name) : dims5(out, out_name);
  const auto y = dgrad ? dims5(in0, in0_name) : dims5(in1, in1_name);
  o.p = problem(x, w, y, a.stride, a.pad_lo, a.pad_hi, a.dilation, a.groups, a.layout);
  o.math = math_mode(a.math);
  o.dtype = in0.dtype;
  o.in0 = in0.data;
  o.in1 = in1.data;
  o.out = out.data;
  o.ws = workspace(o.call, in0, dgrad ? Op::kDgrad : Op::kWgrad, o.p, o.math, ws_cap);
  return o;
}

Prepared prepare_bgrad(py::handle dy_cap, py::handle db_cap) {
  View dy = view_of(dy_cap, "grad_output"), db = view_of(db_cap, "grad_bias");
  Prepared o{Prepared::Kind::kBgrad};
  o.call = check_operands({{&dy, "grad_output"}, {&db, "grad_bias"}}, 1);
  const auto ys = dims5(dy, "grad_output");
  if (db.shape.size() != 1 || db.shape[0] != ys[1]) bad("grad_bias must have shape (out_channels,)");
  const std::string err = make_bias_problem(ys.data(), &o.p);
  if (!err.empty()) bad(err);
  o.dtype = dy.dtype;
  o.in0 = dy.data;
  o.out = db.data;
  return o;
}

void fwd(py::handle x_cap, py::handle w_cap, py::object b_cap, py::handle y_cap, py::handle ws_cap, Triple stride,
         Triple pad_lo, Triple pad_hi, Triple dilation, int64_t groups, int64_t math, int64_t layout,
         uintptr_t stream) {
  const Prepared o =
      prepare_fwd(x_cap, w_cap, b_cap, y_cap, ws_cap, {stride, pad_lo, pad_hi, dilation, groups, math, layout});
  run_all({&o}, stream);
}

void dgrad(py::handle dy_cap, py::handle w_cap, py::handle dx_cap, py::handle ws_cap, Triple stride, Triple pad_lo,
           Triple pad_hi, Triple dilation, int64_t groups, int64_t math, int64_t layout, uintptr_t stream) {
  const Prepared o = prepare_grad(Prepared::Kind::kDgrad, dy_cap, w_cap, dx_cap, ws_cap,
                                  {stride, pad_lo, pad_hi, dilation, groups, math, layout});
  run_all({&o}, stream);
}

void wgrad(py::handle x_cap, py::handle dy_cap, py::handle dw_cap, py::handle ws_cap, Triple stride, Triple pad_lo,
           Triple pad_hi, Triple dilation, int64_t groups, int64_t math, int64_t layout, uintptr_t stream) {
  const Prepared o = prepare_grad(Prepared::Kind::kWgrad, x_cap, dy_cap, dw_cap, ws_cap,
                                  {stride, pad_lo, pad_hi, dilation, groups, math, layout});
  run_all({&o}, stream);
}

void bgrad(py::handle dy_cap, py::handle db_cap, uintptr_t stream) {
  const Prepared o = prepare_bgrad(dy_cap, db_cap);
  run_all({&o}, stream);
}

// Whether prepared grad-input `d` and grad-weight `w` of one backward run as one launch (plan_grads()): CUDA, one
// layout and one dy for both, and a fused kernel for the problem (its results are bitwise the pair's).
bool fused(const Prepared& d, const Prepared& w, int64_t input_layout, int64_t weight_layout) {
  if (!d.call.cuda || !cuda_available() || input_layout != weight_layout || d.in0 != w.in1) return false;
  if (d.call.device != w.call.device) return false;
  return !plan_grads(w.p, w.dtype, w.math, cuda_device_cc(w.call.device), /*fixed_layout=*/true).family.empty();
}

// A convolution's first-order backward in one crossing: grad-input (dy_input, w -> dx, in `input_layout`),
// grad-weight (x, dy_weight -> dw, in `weight_layout`) and grad-bias (dy_bias, row-major -> db), each skipped where
// its output is None. The two convolutions may read different layouts (their families may differ), hence a dy
// capsule each (the same capsule where the memory is the same). They run one after the other on the stream, so one
// workspace (of the larger planned size) serves both; where plan_grads() names a fused kernel (one layout, one dy),
// grad-input and grad-weight are one launch instead, with bitwise the same results. All three are checked before
// the first one launches.
void bwd(py::handle dy_input, py::handle w_cap, py::handle dx_cap, py::handle x_cap, py::handle dy_weight,
         py::handle dw_cap, py::handle dy_bias, py::handle db_cap, py::handle ws_cap, Triple stride, Triple pad_lo,
         Triple pad_hi, Triple dilation, int64_t groups, int64_t math, int64_t input_layout, int64_t weight_layout,
         uintptr_t stream) {
  const bool has_d = !dx_cap.is_none(), has_w = !dw_cap.is_none(), has_b = !db_cap.is_none();
  Prepared d, w, b;
  if (has_d)
    d = prepare_grad(Prepared::Kind::kDgrad, dy_input, w_cap, dx_cap, ws_cap,
                     {stride, pad_lo, pad_hi, dilation, groups, math, input_layout});
  if (has_w)
    w = prepare_grad(Prepared::Kind::kWgrad, x_cap, dy_weight, dw_cap, ws_cap,
                     {stride, pad_lo, pad_hi, dilation, groups, math, weight_layout});
  if (has_b) b = prepare_bgrad(dy_bias, db_cap);
  if (has_d && has_w && fused(d, w, input_layout, weight_layout)) {
    Prepared g = w;  // grad-weight's problem, call and workspace (the fused kernel's is grad-weight's)
    g.kind = Prepared::Kind::kGrads;
    g.in0 = w.in0;   // x
    g.in1 = d.in1;   // the weight
    g.in2 = d.in0;   // dy
    g.out = d.out;   // dx
    g.out2 = w.out;  // dw
    run_all({&g, has_b ? &b : nullptr}, stream);
    return;
  }
  run_all({has_d ? &d : nullptr, has_w ? &w : nullptr, has_b ? &b : nullptr}, stream);
}

// Copies a CUDA tensor into another of the same logical shape (outer, C, spatial...) whose memory moves the channel
// axis: `to_channels_last` row-major src -> channels-last dst, else the reverse; same dtype, device and element
// count (dst's shape is not read beyond that).
void convert_layout(py::handle src_cap, py::handle dst_cap, bool to_channels_last, uintptr_t stream) {
  View src = view_of(src_cap, "src", false, !to_channels_last), dst = view_of(dst_cap, "dst", false, to_channels_last);
  const Call c = check_operands({{&src, "src"}, {&dst, "dst"}}, 1);
  if (!c.cuda) bad("layout conversion runs on CUDA tensors only");
  if (src.shape.size() < 3) bad("src must have a batch, a channel and at least one spatial axis");
  if (src.bytes != dst.bytes) bad("dst must have as many elements as src");
  const int64_t outer = src.shape[0];
  const int64_t ch = to_channels_last ? src.shape[1] : src.shape.back();
  const int64_t spatial = outer == 0 || ch == 0 ? 0 : src.bytes / dtype_size(src.dtype) / outer / ch;
  run(c, [&](bool) {
    return to_channels_last
               ? cuda_transpose_batched(src.data, dst.data, outer, ch, spatial, dtype_size(src.dtype), as_stream(stream))
               : cuda_transpose_batched(src.data, dst.data, outer, spatial, ch, dtype_size(src.dtype), as_stream(stream));
  });
}

}  // namespace

void bind_torch_adapter(py::module_& m) {
  using namespace py::literals;
  m.def("fwd", &fwd, "x"_a, "w"_a, "b"_a, "y"_a, "workspace"_a, "stride"_a, "pad_lo"_a, "pad_hi"_a, "dilation"_a,
        "groups"_a, "math"_a, "layout"_a, "stream"_a,
        "Forward into the torch-allocated y (DLPack capsules; workspace: a byte capsule of the planned size, or None).");
  m.def("dgrad", &dgrad, "dy"_a, "w"_a, "dx"_a, "workspace"_a, "stride"_a, "pad_lo"_a, "pad_hi"_a, "dilation"_a,
        "groups"_a, "math"_a, "layout"_a, "stream"_a, "Grad-input into the torch-allocated dx.");
  m.def("wgrad", &wgrad, "x"_a, "dy"_a, "dw"_a, "workspace"_a, "stride"_a, "pad_lo"_a, "pad_hi"_a, "dilation"_a,
        "groups"_a, "math"_a, "layout"_a, "stream"_a, "Grad-weight into the torch-allocated dw.");
  m.def("bgrad", &bgrad, "dy"_a, "db"_a, "stream"_a, "Grad-bias into the torch-allocated db.");
  m.def("bwd", &bwd, "dy_input"_a, "w"_a, "dx"_a, "x"_a, "dy_weight"_a, "dw"_a, "dy_bias"_a, "db"_a, "workspace"_a,
        "stride"_a, "pad_lo"_a, "pad_hi"_a, "dilation"_a, "groups"_a, "math"_a, "input_layout"_a, "weight_layout"_a,
        "stream"_a,
        "Grad-input, grad-weight and grad-bias (each skipped where its output is None) in one call, all checked first; "
        "one workspace capsule (or None) serves both convolutions.");
  m.def("convert_layout", &convert_layout, "src"_a, "dst"_a, "to_channels_last"_a, "stream"_a,
        "Row-major <-> channels-last copy of a CUDA tensor (same logical shape) on the given stream.");
}

}  // namespace jaxconv3d
