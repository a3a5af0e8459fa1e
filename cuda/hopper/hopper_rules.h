// Internal tile and split choices of the Hopper family, shared by its rules (hopper_rules.cc) and launchers.
#pragma once

#include <cstdint>

#include "hopper/hopper_conv.h"

namespace jaxconv3d {
namespace hopper {

int fwd_bn(const ConvProblem& p, bool split);    // result-channel tile of the forward GEMM: 64 or 128
int dgrad_bn(const ConvProblem& p, bool split);  // input-channel tile of the grad-input GEMM (3xTF32: 64)
int wgrad_bn(const ConvProblem& p);  // output-channel tile of the grad-weight GEMM
// Forward / grad-input K-tiles of two taps x 64 bytes (16-bit sources of at most 32 channels: `source_channels` is C
// for the forward pass, O for grad-input) instead of one tap padded to 128 bytes.
bool tap_pairs(DType t, MathMode m, int64_t source_channels);

// A brick of `rows` (a power of two) result positions, bw x bh x bd (W, H, D; powers of two), whose TMA box
// (extent times the traversal step, <= 256, step <= 8) fits the copy engine's limits. False when none does.
struct Brick {
  int bw_log = 0, bh_log = 0, bd_log = 0;
};
bool brick_for(const int out[3], const int step[3], Brick* b, int rows = 128);

// Grad-weight runs on TMA when each block of 128 bytes of (tap, channel) columns is one tap (C a multiple of 64
// for 16-bit dtypes, of 32 for float32) and a 64-position brick of output positions fits the copy engine; `b`
// receives that brick. TF32 grad-weight runs only there (its operands are transposed in shared memory).
bool wgrad_tma(const ConvProblem& p, DType t, Brick* b);

struct WgradSplit {
  int64_t ktiles = 0;           // 64-position K-tiles in all (bricks on the TMA path)
  int64_t tiles_per_split = 0;  // contiguous K-tiles per split
  int64_t splits = 0;
};
WgradSplit wgrad_split(const ConvProblem& p, DType t);

}  // namespace hopper
}  // namespace jaxconv3d
