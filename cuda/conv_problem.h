// One struct carries every size of a 3D convolution problem and the memory layout its tensors are in:
// NCDHW input / OIDHW weight / NCDHW output, or channels-last NDHWC input / ODHWI weight / NDHWC output.
// Both doors (XLA FFI for JAX, DLPack for torch) decode into it and validate it with `check()`; kernels only
// consume it and never recompute shape logic. Every extent is 64-bit so index arithmetic built from these
// fields cannot overflow on tensors of 2^31 elements or more.
#pragma once

#include <cstdint>
#include <string>

namespace jaxconv3d {

enum class DType : int { kF32 = 0, kF64 = 1, kBF16 = 2, kF16 = 3 };

// kAccurate: float32 inputs give float32-accurate results (FFMA or an equivalent split).
// kTF32: float32 inputs may use TF32 tensor-core math. Ignored for other dtypes and on the CPU.
enum class MathMode : int { kAccurate = 0, kTF32 = 1 };

// Memory layout of a problem's tensors. kNCDHW: x (N, C, D, H, W), w (O, C/g, kd, kh, kw), y (N, O, Do, Ho, Wo).
// kNDHWC (channels last): x (N, D, H, W, C), w (O, kd, kh, kw, C/g), y (N, Do, Ho, Wo, O). Bias is (O,) in both.
enum class Layout : int { kNCDHW = 0, kNDHWC = 1 };

inline const char* layout_name(Layout l) { return l == Layout::kNDHWC ? "NDHWC" : "NCDHW"; }

// The three convolution operations a kernel family implements (grad-bias is layout-free and family-free).
enum class Op : int { kFwd = 0, kDgrad = 1, kWgrad = 2 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kF64: return "float64";
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
  }
  return "unknown";
}

inline int64_t dtype_size(DType t) { return (t == DType::kF64) ? 8 : (t == DType::kF32 ? 4 : 2); }

struct ConvProblem {
  int64_t batch = 0;         // N
  int64_t in_channels = 0;   // C
  int64_t out_channels = 0;  // O
  int64_t groups = 1;
  int64_t in[3] = {0, 0, 0};       // D, H, W of the input
  int64_t kernel[3] = {0, 0, 0};   // kd, kh, kw
  int64_t out[3] = {0, 0, 0};      // Do, Ho, Wo
  int64_t stride[3] = {1, 1, 1};
  int64_t pad_lo[3] = {0, 0, 0};   // padding before the first element, per axis
  int64_t pad_hi[3] = {0, 0, 0};   // padding after the last element, per axis
  int64_t dilation[3] = {1, 1, 1};
  Layout layout = Layout::kNCDHW;  // how the tensors are laid out in memory (the extents above are logical)

  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
  int64_t in_spatial() const { return in[0] * in[1] * in[2]; }
  int64_t out_spatial() const { return out[0] * out[1] * out[2]; }
  int64_t taps() const { return kernel[0] * kernel[1] * kernel[2]; }
  int64_t x_elements() const { return batch * in_channels * in_spatial(); }
  int64_t y_elements() const { return batch * out_channels * out_spatial(); }
  int64_t w_elements() const { return out_channels * in_per_group() * taps(); }
  // Extent of the dilated kernel along `axis`: (kernel - 1) * dilation + 1.
  int64_t span(int axis) const { return dilation[axis] * (kernel[axis] - 1) + 1; }

  // Output extent along `axis` implied by the input, kernel, stride, padding and dilation (PyTorch rule).
  // Returns <= 0 when the dilated kernel does not fit the padded input.
  int64_t implied_out(int axis) const {
    const int64_t padded = in[axis] + pad_lo[axis] + pad_hi[axis];
    if (padded < span(axis)) return 0;
    return (padded - span(axis)) / stride[axis] + 1;
  }

  // Empty string when consistent; otherwise a message naming the offending field and the rule.
  std::string check() const {
    if (batch < 0 || in_channels <= 0 || out_channels <= 0) return "batch must be >= 0 and channels > 0";
    if (groups <= 0) return "groups must be positive";
    if (in_channels % groups != 0) return "in_channels must be divisible by groups";
    if (out_channels % groups != 0) return "out_channels must be divisible by groups";
    static const char* axis_name[3] = {"depth", "height", "width"};
    for (int a = 0; a < 3; ++a) {
      const std::string ax = axis_name[a];
      if (in[a] <= 0) return "input " + ax + " must be positive";
      if (kernel[a] <= 0) return "kernel " + ax + " must be positive";
      if (stride[a] <= 0) return "stride along " + ax + " must be positive";
      if (dilation[a] <= 0) return "dilation along " + ax + " must be positive";
      if (pad_lo[a] < 0 || pad_hi[a] < 0) return "padding along " + ax + " must be non-negative";
      const int64_t want = implied_out(a);
      if (want <= 0) return "dilated kernel " + ax + " is larger than the padded input";
      if (out[a] != want)
        return "output " + ax + " is " + std::to_string(out[a]) + " but the convolution gives " +
               std::to_string(want);
    }
    return "";
  }
};

// Builds a problem from the x, w and y shapes in `layout` (NCDHW: x (N,C,D,H,W), w (O,C/g,kd,kh,kw),
// y (N,O,Do,Ho,Wo); NDHWC: x (N,D,H,W,C), w (O,kd,kh,kw,C/g), y (N,Do,Ho,Wo,O)) plus the static arguments, and
// checks every relation between them. Both doors call this, whichever buffers carry the shapes.
inline std::string make_problem(const int64_t xs_in[5], const int64_t ws_in[5], const int64_t ys_in[5],
                                const int64_t stride[3], const int64_t pad_lo[3], const int64_t pad_hi[3],
                                const int64_t dilation[3], int64_t groups, Layout layout, ConvProblem* p) {
  if (layout != Layout::kNCDHW && layout != Layout::kNDHWC) return "layout must be 0 (NCDHW) or 1 (NDHWC)";
  // Read every shape as (outer, channel, d, h, w): channels-last shapes carry the channel axis last.
  const int order[5] = {0, layout == Layout::kNDHWC ? 4 : 1, layout == Layout::kNDHWC ? 1 : 2,
                        layout == Layout::kNDHWC ? 2 : 3, layout == Layout::kNDHWC ? 3 : 4};
  int64_t xs[5], ws[5], ys[5];
  for (int i = 0; i < 5; ++i) {
    xs[i] = xs_in[order[i]];
    ws[i] = ws_in[order[i]];
    ys[i] = ys_in[order[i]];
  }
  p->layout = layout;
  p->batch = xs[0];
  p->in_channels = xs[1];
  p->out_channels = ws[0];
  p->groups = groups;
  for (int i = 0; i < 3; ++i) {
    p->in[i] = xs[2 + i];
    p->kernel[i] = ws[2 + i];
    p->out[i] = ys[2 + i];
    p->stride[i] = stride[i];
    p->pad_lo[i] = pad_lo[i];
    p->pad_hi[i] = pad_hi[i];
    p->dilation[i] = dilation[i];
  }
  std::string err = p->check();
  if (!err.empty()) return err;
  if (ws[1] * groups != xs[1]) return "weight in-channels times groups must equal input channels";
  if (ys[0] != xs[0]) return "output batch must equal input batch";
  if (ys[1] != ws[0]) return "output channels must equal weight out-channels";
  return "";
}

// The problem grad-bias runs on: only dy's shape matters, carried as a 1x1x1 convolution.
inline std::string make_bias_problem(const int64_t ys[5], ConvProblem* p) {
  p->batch = ys[0];
  p->in_channels = p->out_channels = ys[1];
  p->groups = 1;
  for (int i = 0; i < 3; ++i) {
    p->in[i] = p->out[i] = ys[2 + i];
    p->kernel[i] = 1;
  }
  return p->check();
}

}  // namespace jaxconv3d
