// The XLA FFI door (JAX): buffers + attributes -> ConvProblem -> the kernel entry points of conv_kernels.h.
//
// Every handler decodes the problem from its buffers' shapes and the static attributes, validates it and the
// dtypes, and returns ffi::Error::InvalidArgument on any inconsistency before touching memory. One template per
// operation serves both platforms; `Cpu` and `Cuda` below say how each launches. Nothing here allocates. The CUDA stream travels as void*,
// so this file needs no CUDA headers and the same code builds with or without nvcc.
#include "ffi_handlers.h"

#include <string>

#include "conv_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace jaxconv3d {
namespace {

using Ints = ffi::Span<const int64_t>;

std::string to_dtype(ffi::DataType t, DType* out) {
  switch (t) {
    case ffi::DataType::F32: *out = DType::kF32; return "";
    case ffi::DataType::F64: *out = DType::kF64; return "";
    case ffi::DataType::BF16: *out = DType::kBF16; return "";
    case ffi::DataType::F16: *out = DType::kF16; return "";
    default: return "unsupported element type (expected float32, float64, bfloat16 or float16)";
  }
}

std::string read_triple(Ints values, const char* name, int64_t out[3]) {
  if (values.size() != 3) return std::string(name) + " must have 3 entries";
  for (int a = 0; a < 3; ++a) out[a] = values[a];
  return "";
}

std::string dims5(const ffi::AnyBuffer& b, const char* name, int64_t out[5]) {
  auto d = b.dimensions();
  if (d.size() != 5) return std::string(name) + " must be rank 5, got rank " + std::to_string(d.size());
  for (int i = 0; i < 5; ++i) out[i] = d[i];
  return "";
}

// Static attributes shared by every operation.
struct Attrs {
  Ints stride, pad_lo, pad_hi, dilation;
  int64_t groups;
  int64_t math;
  int64_t layout;  // 0: NCDHW / OIDHW, 1: NDHWC / ODHWI
};

std::string decode_problem(const int64_t xs[5], const int64_t ws[5], const int64_t ys[5], const Attrs& a,
                           ConvProblem* p) {
  int64_t stride[3], pad_lo[3], pad_hi[3], dilation[3];
  std::string err;
  if (!(err = read_triple(a.stride, "stride", stride)).empty()) return err;
  if (!(err = read_triple(a.pad_lo, "pad_lo", pad_lo)).empty()) return err;
  if (!(err = read_triple(a.pad_hi, "pad_hi", pad_hi)).empty()) return err;
  if (!(err = read_triple(a.dilation, "dilation", dilation)).empty()) return err;
  if (a.math != 0 && a.math != 1) return "math must be 0 (accurate) or 1 (tf32)";
  if (a.layout != 0 && a.layout != 1) return "layout must be 0 (NCDHW) or 1 (NDHWC)";
  return make_problem(xs, ws, ys, stride, pad_lo, pad_hi, dilation, a.groups, static_cast<Layout>(a.layout), p);
}

std::string same_dtype(std::initializer_list<const ffi::AnyBuffer*> bufs, DType* t) {
  ffi::DataType first = (*bufs.begin())->element_type();
  for (const ffi::AnyBuffer* b : bufs)
    if (b->element_type() != first) return "all operands must have the same element type";
  return to_dtype(first, t);
}

ffi::Error fail(const std::string& msg) { return ffi::Error::InvalidArgument("jaxconv3d: " + msg); }
ffi::Error status(const std::string& msg) {
  return msg.empty() ? ffi::Error::Success() : ffi::Error::Internal("jaxconv3d: " + msg);
}

// ---- per-operation bodies, templated on how the platform launches. Every convolution has a second, discarded
// result: its workspace, sized in Python by plan(...).workspace_bytes, which XLA allocates with the call's other
// buffers, so the handler never allocates (the CPU ignores it).

template <typename Exec>
ffi::Error fwd(const Exec& ex, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> y,
               ffi::Result<ffi::AnyBuffer> workspace, const Attrs& a) {
  int64_t xs[5], ws[5], ys[5];
  std::string err;
  if (!(err = dims5(x, "x", xs)).empty() || !(err = dims5(w, "w", ws)).empty() ||
      !(err = dims5(*y, "y", ys)).empty())
    return fail(err);
  ConvProblem p;
  if (!(err = decode_problem(xs, ws, ys, a, &p)).empty()) return fail(err);
  DType t;
  if (!(err = same_dtype({&x, &w, &b, &*y}, &t)).empty()) return fail(err);
  const bool has_bias = b.element_count() != 0;
  if (has_bias && (b.dimensions().size() != 1 || b.dimensions()[0] != p.out_channels))
    return fail("bias must have shape (out_channels,) or be empty");
  return status(ex.fwd(p, t, static_cast<MathMode>(a.math), x.untyped_data(), w.untyped_data(),
                       has_bias ? b.untyped_data() : nullptr, y->untyped_data(), workspace->untyped_data(),
                       workspace->size_bytes()));
}

template <typename Exec>
ffi::Error dgrad(const Exec& ex, ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                 ffi::Result<ffi::AnyBuffer> workspace, const Attrs& a) {
  int64_t xs[5], ws[5], ys[5];
  std::string err;
  if (!(err = dims5(*dx, "dx", xs)).empty() || !(err = dims5(w, "w", ws)).empty() ||
      !(err = dims5(dy, "dy", ys)).empty())
    return fail(err);
  ConvProblem p;
  if (!(err = decode_problem(xs, ws, ys, a, &p)).empty()) return fail(err);
  DType t;
  if (!(err = same_dtype({&dy, &w, &*dx}, &t)).empty()) return fail(err);
  return status(ex.dgrad(p, t, static_cast<MathMode>(a.math), dy.untyped_data(), w.untyped_data(),
                         dx->untyped_data(), workspace->untyped_data(), workspace->size_bytes()));
}

template <typename Exec>
ffi::Error wgrad(const Exec& ex, ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                 ffi::Result<ffi::AnyBuffer> workspace, const Attrs& a) {
  int64_t xs[5], ws[5], ys[5];
  std::string err;
  if (!(err = dims5(x, "x", xs)).empty() || !(err = dims5(*dw, "dw", ws)).empty() ||
      !(err = dims5(dy, "dy", ys)).empty())
    return fail(err);
  ConvProblem p;
  if (!(err = decode_problem(xs, ws, ys, a, &p)).empty()) return fail(err);
  DType t;
  if (!(err = same_dtype({&x, &dy, &*dw}, &t)).empty()) return fail(err);
  return status(ex.wgrad(p, t, static_cast<MathMode>(a.math), x.untyped_data(), dy.untyped_data(),
                         dw->untyped_data(), workspace->untyped_data(), workspace->size_bytes()));
}

// Grad-input and grad-weight of one backward (x, w, dy -> dx, dw): the fused kernel on CUDA (the front calls this
// only where plan_grads() names one), the two operations one after the other on the CPU.
template <typename Exec>
ffi::Error grads(const Exec& ex, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dx,
                 ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> workspace, const Attrs& a) {
  int64_t xs[5], ws[5], ys[5], dxs[5], dws[5];
  std::string err;
  if (!(err = dims5(x, "x", xs)).empty() || !(err = dims5(w, "w", ws)).empty() ||
      !(err = dims5(dy, "dy", ys)).empty() || !(err = dims5(*dx, "dx", dxs)).empty() ||
      !(err = dims5(*dw, "dw", dws)).empty())
    return fail(err);
  for (int i = 0; i < 5; ++i)
    if (dxs[i] != xs[i] || dws[i] != ws[i]) return fail("dx must have x's shape and dw w's");
  ConvProblem p;
  if (!(err = decode_problem(xs, ws, ys, a, &p)).empty()) return fail(err);
  DType t;
  if (!(err = same_dtype({&x, &w, &dy, &*dx, &*dw}, &t)).empty()) return fail(err);
  return status(ex.grads(p, t, static_cast<MathMode>(a.math), x.untyped_data(), w.untyped_data(), dy.untyped_data(),
                         dx->untyped_data(), dw->untyped_data(), workspace->untyped_data(), workspace->size_bytes()));
}

template <typename Exec>
ffi::Error bgrad(const Exec& ex, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> db) {
  int64_t ys[5];
  std::string err;
  if (!(err = dims5(dy, "dy", ys)).empty()) return fail(err);
  if (db->dimensions().size() != 1 || db->dimensions()[0] != ys[1])
    return fail("db must have shape (channels of dy,)");
  ConvProblem p;
  if (!(err = make_bias_problem(ys, &p)).empty()) return fail(err);
  DType t;
  if (!(err = same_dtype({&dy, &*db}, &t)).empty()) return fail(err);
  return status(ex.bgrad(p, t, dy.untyped_data(), db->untyped_data()));
}

struct Cpu {
  std::string fwd(const ConvProblem& p, DType t, MathMode, const void* x, const void* w, const void* b, void* y,
                  void*, size_t) const {
    return conv_fwd_cpu(p, t, x, w, b, y);
  }
  std::string dgrad(const ConvProblem& p, DType t, MathMode, const void* dy, const void* w, void* dx, void*,
                    size_t) const {
    return conv_dgrad_cpu(p, t, dy, w, dx);
  }
  std::string wgrad(const ConvProblem& p, DType t, MathMode, const void* x, const void* dy, void* dw, void*,
                    size_t) const {
    return conv_wgrad_cpu(p, t, x, dy, dw);
  }
  std::string bgrad(const ConvProblem& p, DType t, const void* dy, void* db) const {
    return conv_bgrad_cpu(p, t, dy, db);
  }
  std::string grads(const ConvProblem& p, DType t, MathMode, const void* x, const void* w, const void* dy, void* dx,
                    void* dw, void*, size_t) const {
    const std::string e = conv_dgrad_cpu(p, t, dy, w, dx);
    return e.empty() ? conv_wgrad_cpu(p, t, x, dy, dw) : e;
  }
};

#ifdef JAXCONV3D_WITH_CUDA
struct Cuda {
  void* stream;
  std::string fwd(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* b, void* y,
                  void* ws, size_t ws_bytes) const {
    return conv_fwd_cuda(p, t, m, x, w, b, y, ws, ws_bytes, stream);
  }
  std::string dgrad(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx, void* ws,
                    size_t ws_bytes) const {
    return conv_dgrad_cuda(p, t, m, dy, w, dx, ws, ws_bytes, stream);
  }
  std::string wgrad(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw, void* ws,
                    size_t ws_bytes) const {
    return conv_wgrad_cuda(p, t, m, x, dy, dw, ws, ws_bytes, stream);
  }
  std::string bgrad(const ConvProblem& p, DType t, const void* dy, void* db) const {
    return conv_bgrad_cuda(p, t, dy, db, stream);
  }
  std::string grads(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* dy, void* dx,
                    void* dw, void* ws, size_t ws_bytes) const {
    return conv_grads_cuda(p, t, m, x, w, dy, dx, dw, ws, ws_bytes, stream);
  }
};
#endif

}  // namespace
}  // namespace jaxconv3d

using jaxconv3d::Attrs;

// Attribute binding shared by the three convolution operations.
#define JAXCONV3D_CONV_ATTRS                    \
  .Attr<jaxconv3d::Ints>("stride")              \
      .Attr<jaxconv3d::Ints>("pad_lo")          \
      .Attr<jaxconv3d::Ints>("pad_hi")          \
      .Attr<jaxconv3d::Ints>("dilation")        \
      .Attr<int64_t>("groups")                  \
      .Attr<int64_t>("math")                    \
      .Attr<int64_t>("layout")

#define JAXCONV3D_ATTR_PARAMS \
  jaxconv3d::Ints stride, jaxconv3d::Ints pad_lo, jaxconv3d::Ints pad_hi, jaxconv3d::Ints dilation, \
      int64_t groups, int64_t math, int64_t layout
#define JAXCONV3D_ATTRS Attrs{stride, pad_lo, pad_hi, dilation, groups, math, layout}

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_fwd_cpu,
    [](ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> y,
       ffi::Result<ffi::AnyBuffer> ws, JAXCONV3D_ATTR_PARAMS) {
      return jaxconv3d::fwd(jaxconv3d::Cpu{}, x, w, b, y, ws, JAXCONV3D_ATTRS);
    },
    ffi::Ffi::Bind()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>() JAXCONV3D_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_dgrad_cpu,
    [](ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> ws,
       JAXCONV3D_ATTR_PARAMS) { return jaxconv3d::dgrad(jaxconv3d::Cpu{}, dy, w, dx, ws, JAXCONV3D_ATTRS); },
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
        JAXCONV3D_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_wgrad_cpu,
    [](ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> ws,
       JAXCONV3D_ATTR_PARAMS) { return jaxconv3d::wgrad(jaxconv3d::Cpu{}, x, dy, dw, ws, JAXCONV3D_ATTRS); },
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
        JAXCONV3D_CONV_ATTRS);

#define JAXCONV3D_GRADS_BINDING                                                                      \
  .Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>() \
      .Ret<ffi::AnyBuffer>() JAXCONV3D_CONV_ATTRS

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_grads_cpu,
    [](ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dx,
       ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> ws, JAXCONV3D_ATTR_PARAMS) {
      return jaxconv3d::grads(jaxconv3d::Cpu{}, x, w, dy, dx, dw, ws, JAXCONV3D_ATTRS);
    },
    ffi::Ffi::Bind() JAXCONV3D_GRADS_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_bgrad_cpu,
    [](ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> db) { return jaxconv3d::bgrad(jaxconv3d::Cpu{}, dy, db); },
    ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());

#ifdef JAXCONV3D_WITH_CUDA
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_fwd_cuda,
    [](void* stream, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> y,
       ffi::Result<ffi::AnyBuffer> ws, JAXCONV3D_ATTR_PARAMS) {
      return jaxconv3d::fwd(jaxconv3d::Cuda{stream}, x, w, b, y, ws, JAXCONV3D_ATTRS);
    },
    ffi::Ffi::Bind()
        .Ctx<ffi::PlatformStream<void*>>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>() JAXCONV3D_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_dgrad_cuda,
    [](void* stream, ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
       ffi::Result<ffi::AnyBuffer> ws, JAXCONV3D_ATTR_PARAMS) {
      return jaxconv3d::dgrad(jaxconv3d::Cuda{stream}, dy, w, dx, ws, JAXCONV3D_ATTRS);
    },
    ffi::Ffi::Bind()
        .Ctx<ffi::PlatformStream<void*>>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>() JAXCONV3D_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_wgrad_cuda,
    [](void* stream, ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
       ffi::Result<ffi::AnyBuffer> ws, JAXCONV3D_ATTR_PARAMS) {
      return jaxconv3d::wgrad(jaxconv3d::Cuda{stream}, x, dy, dw, ws, JAXCONV3D_ATTRS);
    },
    ffi::Ffi::Bind()
        .Ctx<ffi::PlatformStream<void*>>()
        .Arg<ffi::AnyBuffer>()
        .Arg<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>()
        .Ret<ffi::AnyBuffer>() JAXCONV3D_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_grads_cuda,
    [](void* stream, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dx,
       ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> ws, JAXCONV3D_ATTR_PARAMS) {
      return jaxconv3d::grads(jaxconv3d::Cuda{stream}, x, w, dy, dx, dw, ws, JAXCONV3D_ATTRS);
    },
    ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>() JAXCONV3D_GRADS_BINDING);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_bgrad_cuda,
    [](void* stream, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> db) {
      return jaxconv3d::bgrad(jaxconv3d::Cuda{stream}, dy, db);
    },
    ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());
#endif

// Registered under the target names of earlier versions: a program exported with an older jaxconv3d (whose handlers
// took other operands or attributes) fails with this message instead of running the wrong handler. It binds no
// attributes and takes any operands, so it accepts every old call.
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    jaxconv3d_stale,
    [](ffi::RemainingArgs, ffi::RemainingRets) {
      return ffi::Error::InvalidArgument(
          "jaxconv3d: this program was exported with an older jaxconv3d whose FFI targets (version 1, names "
          "without a _v suffix) this build no longer provides; re-export it with the installed jaxconv3d "
          "(see jaxconv3d.FFI_TARGET_VERSION)");
    },
    ffi::Ffi::Bind().RemainingArgs().RemainingRets());
