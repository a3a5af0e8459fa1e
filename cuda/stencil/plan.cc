// The stencil family's host-side answers (see stencil.h): which problems it takes and its kernel names.
#include <algorithm>

#include "stencil/stencil.h"

namespace jaxconv3d {
namespace stencil {

bool accepts(Op op, const ConvProblem& p, DType t) {
  if (op == Op::kWgrad) return false;  // sm80's (stencil.h says why)
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

const char* tile(Op op) {
  switch (op) {
    case Op::kFwd: return "depthwise3_ndhwc_32x4x8_d16";
    case Op::kDgrad: return "depthwise3_ndhwc_32x4x8_d16_flipped";
    case Op::kWgrad: return "";
  }
  return "";
}

}  // namespace stencil
}  // namespace jaxconv3d
