// CPU forward, grad-input, grad-weight and grad-bias of a 3D convolution.
//
// Work is split into independent output planes (forward: one (n, o) plane; grad-input: one (n, c) plane;
// grad-weight: one (o, c) filter slice; grad-bias: one channel), each owned by one thread and summed in a fixed
// loop order, so results are bitwise reproducible for any thread count. Inner loops run along W with the valid
// range of each tap computed up front, so there is no bounds test per element. 16-bit inputs are widened to float
// once, computed in float and rounded once at the end.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "conv_kernels.h"
#include "half_convert.h"

namespace jaxconv3d {
namespace {

// JAXCONV3D_CPU_THREADS: a positive integer (default: the hardware's thread count), capped at kThreadsPerCore per
// hardware thread (each thread costs a stack: 100000 of them would exhaust the address space). Anything else is
// ignored with a warning that names the variable (once per process).
constexpr int kThreadsPerCore = 4;

int cpu_threads() {
  // Read once: glibc answers hardware_concurrency() by reading /sys on every call (a few microseconds, more than a
  // tiny problem's whole kernel).
  static const unsigned hw_count = std::thread::hardware_concurrency();
  const int hw = hw_count == 0 ? 1 : static_cast<int>(std::min<unsigned>(hw_count, 1u << 16));
  const char* env = std::getenv("JAXCONV3D_CPU_THREADS");
  if (env == nullptr || *env == '\0') return hw;
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(env, &end, 10);
  if (errno != 0 || end == env || *end != '\0' || n <= 0) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      std::fprintf(stderr,
                   "jaxconv3d: warning: ignoring JAXCONV3D_CPU_THREADS='%s' (not a positive integer); using %d "
                   "threads\n",
                   env, hw);
    }
    return hw;
  }
  return static_cast<int>(std::min<long long>(n, static_cast<long long>(hw) * kThreadsPerCore));
}

// Runs body(i) for i in [0, count) on a few threads; items are handed out dynamically but each is computed
// entirely by one thread, so the schedule never changes a result. `item_cost` (multiply-adds per item) keeps tiny
// problems on the calling thread, where starting threads would cost more than the work. A thread that cannot be
// started (no memory for its stack, a pid limit) is simply not used: the threads already running and the calling
// thread take all items.
template <typename Body>
void parallel_for(int64_t count, int64_t item_cost, const Body& body) {
  constexpr int64_t kMinWorkPerThread = int64_t{1} << 18;
  const int64_t by_work = std::max<int64_t>(1, count * std::max<int64_t>(item_cost, 1) / kMinWorkPerThread);
  const int64_t n_threads = std::min<int64_t>({cpu_threads(), count, by_work});
  if (n_threads <= 1) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) body(i);
  };
  std::vector<std::thread> threads;
  try {
    threads.reserve(n_threads - 1);
    for (int64_t t = 1; t < n_threads; ++t) threads.emplace_back(worker);
  } catch (const std::exception&) {  // std::system_error (EAGAIN) or bad_alloc: run with what started
  }
  worker();
  for (auto& th : threads) th.join();
}

// Output indices o in [lo, hi] whose input index o*stride + offset lies in [0, extent).
struct Range {
  int64_t lo, hi;  // inclusive; empty when lo > hi
};

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

inline Range valid_range(int64_t offset, int64_t stride, int64_t extent, int64_t out_extent) {
  // 0 <= o*stride + offset <= extent - 1
  const int64_t lo = std::max<int64_t>(0, floor_div(-offset + stride - 1, stride));
  const int64_t hi = std::min<int64_t>(out_extent - 1, floor_div(extent - 1 - offset, stride));
  return {lo, hi};
}

// One filter tap (t, r, s) and the output positions it touches: for output row (z, p) the input row is
// (z*sd + off[0], p*sh + off[1]) and output column q reads input column q*sw + off[2], for q in [rq.lo, rq.hi].
struct Tap {
  int64_t index;  // (t*R + r)*S + s
  int64_t off[3];
  Range rz, rp, rq;
};

template <typename F>
void for_each_tap(const ConvProblem& p, F&& f) {
  for (int64_t t = 0; t < p.kernel[0]; ++t) {
    for (int64_t r = 0; r < p.kernel[1]; ++r) {
      for (int64_t s = 0; s < p.kernel[2]; ++s) {
        Tap tap;
        tap.index = (t * p.kernel[1] + r) * p.kernel[2] + s;
        const int64_t k[3] = {t, r, s};
        for (int a = 0; a < 3; ++a) tap.off[a] = k[a] * p.dilation[a] - p.pad_lo[a];
        tap.rz = valid_range(tap.off[0], p.stride[0], p.in[0], p.out[0]);
        tap.rp = valid_range(tap.off[1], p.stride[1], p.in[1], p.out[1]);
        tap.rq = valid_range(tap.off[2], p.stride[2], p.in[2], p.out[2]);
        f(tap);
      }
    }
  }
}

// Calls f(input row start, output row start) for every output row the tap touches; the input row start already
// includes the tap's W offset, so element q of the row is at [q * stride_w].
template <typename F>
void for_each_row(const ConvProblem& p, const Tap& tap, F&& f) {
  for (int64_t z = tap.rz.lo; z <= tap.rz.hi; ++z) {
    const int64_t id = z * p.stride[0] + tap.off[0];
    for (int64_t pp = tap.rp.lo; pp <= tap.rp.hi; ++pp) {
      const int64_t ih = pp * p.stride[1] + tap.off[1];
      f((id * p.in[1] + ih) * p.in[2] + tap.off[2], (z * p.out[1] + pp) * p.out[2]);
    }
  }
}

template <typename Acc>
void fwd_typed(const ConvProblem& p, const Acc* x, const Acc* w, const Acc* bias, Acc* y) {
  const int64_t Cg = p.in_per_group(), Og = p.out_per_group(), sw = p.stride[2];
  parallel_for(p.batch * p.out_channels, Cg * p.taps() * p.out_spatial(), [&](int64_t task) {
    const int64_t n = task / p.out_channels, o = task % p.out_channels;
    const int64_t c0 = (o / Og) * Cg;
    Acc* yplane = y + task * p.out_spatial();
    std::fill(yplane, yplane + p.out_spatial(), bias ? bias[o] : Acc(0));
    for (int64_t c = 0; c < Cg; ++c) {
      const Acc* xplane = x + (n * p.in_channels + c0 + c) * p.in_spatial();
      const Acc* wtaps = w + (o * Cg + c) * p.taps();
      for_each_tap(p, [&](const Tap& tap) {
        const Acc wv = wtaps[tap.index];
        for_each_row(p, tap, [&](int64_t xrow, int64_t yrow) {
          const Acc* xr = xplane + xrow;
          Acc* yr = yplane + yrow;
          if (sw == 1) {
            for (int64_t q = tap.rq.lo; q <= tap.rq.hi; ++q) yr[q] += wv * xr[q];
          } else {
            for (int64_t q = tap.rq.lo; q <= tap.rq.hi; ++q) yr[q] += wv * xr[q * sw];
          }
        });
      });
    }
  });
}

// Each dy plane of the group is scattered into the owned dx plane: only taps that hit the input contribute,
// which handles stride > 1 without testing divisibility.
template <typename Acc>
void dgrad_typed(const ConvProblem& p, const Acc* dy, const Acc* w, Acc* dx) {
  const int64_t Cg = p.in_per_group(), Og = p.out_per_group(), sw = p.stride[2];
  parallel_for(p.batch * p.in_channels, Og * p.taps() * p.out_spatial(), [&](int64_t task) {
    const int64_t n = task / p.in_channels, ci = task % p.in_channels;
    const int64_t g = ci / Cg, c = ci % Cg;
    Acc* xplane = dx + task * p.in_spatial();
    std::fill(xplane, xplane + p.in_spatial(), Acc(0));
    for (int64_t oo = 0; oo < Og; ++oo) {
      const int64_t o = g * Og + oo;
      const Acc* yplane = dy + (n * p.out_channels + o) * p.out_spatial();
      const Acc* wtaps = w + (o * Cg + c) * p.taps();
      for_each_tap(p, [&](const Tap& tap) {
        const Acc wv = wtaps[tap.index];
        for_each_row(p, tap, [&](int64_t xrow, int64_t yrow) {
          Acc* xr = xplane + xrow;
          const Acc* yr = yplane + yrow;
          if (sw == 1) {
            for (int64_t q = tap.rq.lo; q <= tap.rq.hi; ++q) xr[q] += wv * yr[q];
          } else {
            for (int64_t q = tap.rq.lo; q <= tap.rq.hi; ++q) xr[q * sw] += wv * yr[q];
          }
        });
      });
    }
  });
}

// Each row of the reduction is summed in Acc (vectorisable), rows are added in double: the reduction over
// N*Do*Ho*Wo can have millions of terms, which float alone would not keep float32-accurate.
template <typename Acc>
void wgrad_typed(const ConvProblem& p, const Acc* x, const Acc* dy, Acc* dw) {
  const int64_t Cg = p.in_per_group(), Og = p.out_per_group(), sw = p.stride[2];
  parallel_for(p.out_channels * Cg, p.batch * p.taps() * p.out_spatial(), [&](int64_t task) {
    const int64_t o = task / Cg, c = task % Cg;
    const int64_t ci = (o / Og) * Cg + c;
    Acc* wtaps = dw + task * p.taps();
    for_each_tap(p, [&](const Tap& tap) {
      double total = 0.0;
      for (int64_t n = 0; n < p.batch; ++n) {
        const Acc* xplane = x + (n * p.in_channels + ci) * p.in_spatial();
        const Acc* yplane = dy + (n * p.out_channels + o) * p.out_spatial();
        for_each_row(p, tap, [&](int64_t xrow, int64_t yrow) {
          const Acc* xr = xplane + xrow;
          const Acc* yr = yplane + yrow;
          Acc row = 0;
          for (int64_t q = tap.rq.lo; q <= tap.rq.hi; ++q) row += yr[q] * xr[q * sw];
          total += static_cast<double>(row);
        });
      }
      wtaps[tap.index] = static_cast<Acc>(total);
    });
  });
}

template <typename Acc>
void bgrad_typed(const ConvProblem& p, const Acc* dy, Acc* db) {
  const int64_t Q = p.out[2];
  const int64_t rows = p.out[0] * p.out[1];
  parallel_for(p.out_channels, p.batch * p.out_spatial(), [&](int64_t o) {
    double total = 0.0;
    for (int64_t n = 0; n < p.batch; ++n) {
      const Acc* yplane = dy + (n * p.out_channels + o) * p.out_spatial();
      for (int64_t row = 0; row < rows; ++row) {
        Acc part = 0;
        for (int64_t q = 0; q < Q; ++q) part += yplane[row * Q + q];
        total += static_cast<double>(part);
      }
    }
    db[o] = static_cast<Acc>(total);
  });
}

// XLA runs CPU custom calls on threads that flush subnormals to zero (FTZ/DAZ); torch's threads do not. Kernels
// run with both off, so a subnormal input or result is kept whichever front calls, and the fronts agree bitwise.
// Threads started inside inherit the setting; the caller's is restored on return.
class GradualUnderflow {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  GradualUnderflow() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~kFlushBits); }
  ~GradualUnderflow() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushBits = 0x8040;  // MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6)
  unsigned saved_;
#endif
};

// 16-bit storage <-> float working copies.
std::vector<float> widen(DType t, const void* src, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (t == DType::kBF16) {
    for (int64_t i = 0; i < count; ++i) out[i] = bf16_to_float(s[i]);
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = f16_to_float(s[i]);
  }
  return out;
}

void narrow(DType t, const std::vector<float>& src, void* dst) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const int64_t count = static_cast<int64_t>(src.size());
  if (t == DType::kBF16) {
    for (int64_t i = 0; i < count; ++i) d[i] = float_to_bf16(src[i]);
  } else {
    for (int64_t i = 0; i < count; ++i) d[i] = float_to_f16(src[i]);
  }
}

// Dispatches an operation with `inputs` (pointer, element count) and one output of `out_count` elements to the
// typed implementation: float and double run in place, 16-bit types through float working copies.
template <typename Op>
std::string dispatch(const ConvProblem& p, DType t, std::initializer_list<std::pair<const void*, int64_t>> inputs,
                     void* out, int64_t out_count, const Op& op) {
  const std::string err = p.check();
  if (!err.empty()) return err;
  const GradualUnderflow gradual_underflow;
  std::vector<const void*> ptrs;
  for (const auto& in : inputs) ptrs.push_back(in.first);
  switch (t) {
    case DType::kF32:
      op(reinterpret_cast<const float* const*>(ptrs.data()), static_cast<float*>(out));
      return "";
    case DType::kF64:
      op(reinterpret_cast<const double* const*>(ptrs.data()), static_cast<double*>(out));
      return "";
    case DType::kBF16:
    case DType::kF16: {
      std::vector<std::vector<float>> wide;
      std::vector<const float*> wptrs;
      for (const auto& in : inputs) {
        wide.push_back(in.first ? widen(t, in.first, in.second) : std::vector<float>());
        wptrs.push_back(in.first ? wide.back().data() : nullptr);
      }
      std::vector<float> result(static_cast<size_t>(out_count));
      op(wptrs.data(), result.data());
      narrow(t, result, out);
      return "";
    }
  }
  return "unsupported dtype";
}

// ---- channels-last problems: transpose into channels-first host temporaries and back.

// (outer, spatial, channels) <-> (outer, channels, spatial) for elements of `esize` bytes.
template <typename E>
void transpose_typed(const E* src, E* dst, int64_t outer, int64_t spatial, int64_t channels, bool to_first) {
  for (int64_t n = 0; n < outer; ++n) {
    const int64_t base = n * spatial * channels;
    for (int64_t s = 0; s < spatial; ++s)
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t last = base + s * channels + c, first = base + c * spatial + s;
        if (to_first) dst[first] = src[last];
        else dst[last] = src[first];
      }
  }
}

void transpose(const void* src, void* dst, int64_t outer, int64_t spatial, int64_t channels, DType t, bool to_first) {
  switch (dtype_size(t)) {
    case 2: return transpose_typed(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), outer, spatial,
                                   channels, to_first);
    case 4: return transpose_typed(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), outer, spatial,
                                   channels, to_first);
    default: return transpose_typed(static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), outer, spatial,
                                    channels, to_first);
  }
}

// One tensor's channels-first copy: activations (N, spatial, C) and weights (O, taps, C/g).
struct Shape3 {
  int64_t outer, spatial, channels;
  int64_t elements() const { return outer * spatial * channels; }
};
Shape3 x_shape(const ConvProblem& p) { return {p.batch, p.in_spatial(), p.in_channels}; }
Shape3 y_shape(const ConvProblem& p) { return {p.batch, p.out_spatial(), p.out_channels}; }
Shape3 w_shape(const ConvProblem& p) { return {p.out_channels, p.taps(), p.in_per_group()}; }

std::vector<char> channels_first(const void* src, Shape3 s, DType t) {
  std::vector<char> out(static_cast<size_t>(s.elements() * dtype_size(t)));
  transpose(src, out.data(), s.outer, s.spatial, s.channels, t, true);
  return out;
}

// Runs `op(problem, in0, in1, out)` on channels-first data whatever the problem's layout.
template <typename Op>
std::string channels_first_call(const ConvProblem& p, DType t, const void* a, Shape3 as, const void* b, Shape3 bs,
                                void* out, Shape3 os, const Op& op) {
  if (p.layout == Layout::kNCDHW) return op(p, a, b, out);
  const std::string err = p.check();
  if (!err.empty()) return err;
  ConvProblem q = p;
  q.layout = Layout::kNCDHW;
  const std::vector<char> a1 = channels_first(a, as, t), b1 = channels_first(b, bs, t);
  std::vector<char> out1(static_cast<size_t>(os.elements() * dtype_size(t)));
  const std::string e = op(q, a1.data(), b1.data(), out1.data());
  if (e.empty()) transpose(out1.data(), out, os.outer, os.spatial, os.channels, t, false);
  return e;
}

}  // namespace

std::string conv_fwd_cpu(const ConvProblem& p, DType t, const void* x, const void* w, const void* bias, void* y) {
  return channels_first_call(p, t, x, x_shape(p), w, w_shape(p), y, y_shape(p),
                             [&](const ConvProblem& q, const void* x1, const void* w1, void* y1) {
                               return dispatch(q, t, {{x1, q.x_elements()}, {w1, q.w_elements()},
                                                      {bias, q.out_channels}},
                                               y1, q.y_elements(),
                                               [&](auto in, auto out) { fwd_typed(q, in[0], in[1], in[2], out); });
                             });
}

std::string conv_dgrad_cpu(const ConvProblem& p, DType t, const void* dy, const void* w, void* dx) {
  return channels_first_call(p, t, dy, y_shape(p), w, w_shape(p), dx, x_shape(p),
                             [&](const ConvProblem& q, const void* dy1, const void* w1, void* dx1) {
                               return dispatch(q, t, {{dy1, q.y_elements()}, {w1, q.w_elements()}}, dx1,
                                               q.x_elements(),
                                               [&](auto in, auto out) { dgrad_typed(q, in[0], in[1], out); });
                             });
}

std::string conv_wgrad_cpu(const ConvProblem& p, DType t, const void* x, const void* dy, void* dw) {
  return channels_first_call(p, t, x, x_shape(p), dy, y_shape(p), dw, w_shape(p),
                             [&](const ConvProblem& q, const void* x1, const void* dy1, void* dw1) {
                               return dispatch(q, t, {{x1, q.x_elements()}, {dy1, q.y_elements()}}, dw1,
                                               q.w_elements(),
                                               [&](auto in, auto out) { wgrad_typed(q, in[0], in[1], out); });
                             });
}

std::string conv_bgrad_cpu(const ConvProblem& p, DType t, const void* dy, void* db) {
  return dispatch(p, t, {{dy, p.y_elements()}}, db, p.out_channels,
                  [&](auto in, auto out) { bgrad_typed(p, in[0], out); });
}

}  // namespace jaxconv3d
