// The stencil family's host-side answers (see stencil.h): which problems it takes, its kernel names, the shape of
// its grad-weight grid and workspace.
#include <algorithm>

#include "stencil/stencil.h"

namespace jaxconv3d {
namespace stencil {

bool accepts(Op, const ConvProblem& p, DType t) {
  if (p.layout != Layout::kNDHWC) return false;
  if (t != DType::kF32 && t != DType::kBF16 && t != DType::kF16) return false;
  if (p.in_per_group() != 1 || p.out_per_group() != 1) return false;  // depthwise, channel multiplier 1
  for (int a = 0; a < 3; ++a) {
    if (p.kernel[a] != 3 || p.stride[a] != 1 || p.dilation[a] != 1) return false;
    if (p.pad_lo[a] < 0 || p.pad_lo[a] > 2 || p.pad_hi[a] < 0 || p.pad_hi[a] > 2) return false;  // grad-input: 2 - pad
    if (p.in[a] >= (int64_t(1) << 30) || p.out[a] >= (int64_t(1) << 30)) return false;
  }
  // 32-bit offsets along a row: (W + 2) * C elements
  return p.out_channels < (int64_t(1) << 30) && (std::max(p.in[2], p.out[2]) + 2) * p.out_channels < (int64_t(1) << 31);
}

bool band_takes(Op op, const ConvProblem& p, DType t, int cc) {
  if (cc != 90 || op == Op::kWgrad || (t != DType::kBF16 && t != DType::kF16)) return false;
  const int64_t planes = std::max(p.in[1] * p.in[2], p.out[1] * p.out[2]);
  return p.out_channels % 16 == 0 && planes * p.out_channels < (int64_t(1) << 31);
}

const char* tile(Op op, const ConvProblem& p, DType t, int cc) {
  const bool band = band_takes(op, p, t, cc);
  switch (op) {
    case Op::kFwd: return band ? "depthwise3_ndhwc_band_tma" : "depthwise3_ndhwc_staged";
    case Op::kDgrad: return band ? "depthwise3_ndhwc_band_tma_flipped" : "depthwise3_ndhwc_staged_flipped";
    case Op::kWgrad: return "depthwise3_ndhwc_staged_27sums";
  }
  return "";
}

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

int run_for(int vec, int64_t width) {
  if (vec == 2) return 4;
  return (7 - width % 7) % 7 < (8 - width % 8) % 8 ? 7 : 8;
}

int wgrad_blocks(DType t) { return t == DType::kF32 ? 640 : 512; }

WgradShape wgrad_shape(const ConvProblem& p, int vec, DType t) {
  WgradShape s{};
  s.vec = vec;
  s.run = run_for(vec, p.out[2]);
  s.cgroups = int(ceil_div(p.out_channels, kLanes * vec));
  s.columns = ceil_div(p.out[2], s.run) * ceil_div(p.out[1], kRows) * p.batch;
  const int64_t planes = s.columns * p.out[0];
  const int64_t per_group = ceil_div(wgrad_blocks(t), s.cgroups);
  s.blocks = int(std::max<int64_t>(1, std::min<int64_t>(per_group, ceil_div(planes, kMinPlanes))));
  s.per = ceil_div(planes, s.blocks);
  s.slots = wgrad_slots(dtype_size(t));
  return s;
}

size_t wgrad_part_bytes(const WgradShape& s) {
  return size_t(s.cgroups) * size_t(s.blocks) * size_t(s.slots) * 27 * kLanes * size_t(s.vec) * sizeof(float);
}

size_t workspace_bytes(Op op, const ConvProblem& p, DType t) {
  if (op != Op::kWgrad) return 0;
  // 16-bit tensors run two channels a lane where they are aligned and one where not: room for either
  const size_t one = wgrad_part_bytes(wgrad_shape(p, 1, t));
  return t == DType::kF32 ? one : std::max(one, wgrad_part_bytes(wgrad_shape(p, 2, t)));
}

}  // namespace stencil
}  // namespace jaxconv3d
