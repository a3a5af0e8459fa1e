// Internal tile and split choices of the Hopper family, shared by its rules (hopper_rules.cc) and launchers.
#pragma once

#include <cstdint>

#include "hopper/hopper_conv.h"

namespace jaxconv3d {
namespace hopper {

int fwd_bn(const ConvProblem& p, bool split);    // result-channel tile of the forward GEMM: 64 or 128
int dgrad_bn(const ConvProblem& p, bool split);  // input-channel tile of the grad-input GEMM (3xTF32: 64)
int wgrad_bn(const ConvProblem& p);  // output-channel tile of the grad-weight GEMM
// Taps per forward / grad-input K-tile (`source_channels` is C for the forward pass, O for grad-input): 2 taps of
// 64 bytes for 16-bit sources of at most 32 channels, else 1 tap (128 bytes per channel block).
int tap_group(DType t, MathMode m, int64_t source_channels);
// A forward or stride-1 grad-input on tap pairs whose whole filter stays in shared memory for every tile a block
// computes (conv_tma.cuh, RES): at most 64 result channels (one column tile) and 28 taps (a 3 x 3 x 3 filter).
bool resident_filter(DType t, MathMode m, int64_t source_channels, int64_t result_channels, int64_t taps);

// A first layer (fewer than 16 bytes of channels per pixel, e.g. RGB) with its W filter taps, and its H taps too
// where they fit, folded into the channels: x is gathered into
//   xf[n][d][h'][w'][(i * kw + j) * C + c] = x[n][d][h][w][c],  w = w' * sw - pad_w + j * dw (h likewise when folded),
// zeros outside x and past the folded channels (padded: 16 bytes for 16-bit, 128 bytes for float32), and w's rows
// are padded alike; what is left is the convolution `folded` of xf by a filter of 1 tap along each folded axis.
// Forward runs it on xf; grad-weight runs its grad-weight on xf and keeps each row's first `raw` channels;
// grad-input runs its grad-input and sums each element of x's gradient over the copies xf made of it. The folded
// copies live in the workspace.
struct Fold {
  bool h = false;         // the H taps are folded too (else W only)
  int64_t raw = 0;        // folded channels C * kw (* kh)
  ConvProblem folded;     // the convolution that remains (its in_channels: raw padded to 16 bytes)
};
bool first_layer_fold(const ConvProblem& p, DType t, MathMode m, Fold* f);
// A first layer's workspace holds the folded source (or its gradient) first, then the folded filter (or its
// gradient), then the folded operation's own workspace; these are the first two sizes.
size_t folded_source_bytes(const Fold& f, DType t);
size_t folded_filter_bytes(const Fold& f, DType t);

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

// TF32 grad-weight from bfloat16 parts (conv_wgrad_bf16x3.cuh): float32 with TF32 allowed, C a multiple of 64 (64
// bf16 channels fill a 128-byte row), a brick for the 16-bit TMA kernel, and at least 1000 FLOPs per element of x
// and dy (the split's pass over them must pay); elsewhere TF32 grad-weight transposes its stages in shared memory
// (conv_wgrad_tf32.cuh). Its workspace holds the split partial sums, then x_hi, x_lo,
// dy_hi and dy_lo (bfloat16, each 256-byte aligned): `bf16x3_parts` says where.
bool wgrad_bf16x3(const ConvProblem& p, DType t, MathMode m);
struct Bf16x3Parts {
  void* x_hi;
  void* x_lo;
  void* dy_hi;
  void* dy_lo;
};
Bf16x3Parts bf16x3_parts(const ConvProblem& p, void* workspace);

struct WgradSplit {
  int64_t ktiles = 0;           // 64-position K-tiles in all (bricks on the TMA path)
  int64_t tiles_per_split = 0;  // contiguous K-tiles per split
  int64_t splits = 0;
};
WgradSplit wgrad_split(const ConvProblem& p, DType t);

// A first layer's forward on registers (conv_smallc.cuh): the whole (channel, tap) reduction in at most
// kSmallCSteps wgmma k-steps (K <= 96 for float32, <= 192 for 16-bit), the filter resident in shared memory as
// 64-wide N blocks of kSmallCBlockBytes (64 rows x kSmallCSteps 32-byte k-steps; twice that for 3xTF32), at most
// kSmallCFilterBytes of them.
constexpr int kSmallCSteps = 12;
constexpr int kSmallCBlockBytes = 64 * kSmallCSteps * 32;  // 24 KB
constexpr int kSmallCFilterBytes = 96 << 10;
constexpr int kSmallCMaxBlocks = kSmallCFilterBytes / kSmallCBlockBytes;  // 64-wide N blocks, single part
struct SmallC {
  int steps = 0;    // k-steps of the reduction
  int nblocks = 0;  // 64-wide blocks of output channels
  bool split = false;  // 3xTF32
};
bool smallc_plan(const ConvProblem& p, DType t, MathMode m, SmallC* s);
size_t smallc_filter_bytes(const SmallC& s);

// A first layer's grad-weight on registers (conv_smallc_wgrad.cuh): (channel, tap) rows in rb blocks of 64 (1-3),
// at most 64 output channels (a second block's accumulators and dy tile spilled registers), positions in tiles of
// `tile` split into at most kSmallCWgradSplits contiguous ranges: a pure function of the problem, so the summation
// order never depends on the card.
// Channels-last layers with unit W stride and dy's channel rows a multiple of 16 bytes take the halo'd form
// instead (conv_smallc_wgrad_halo.cuh): tiles are bh x kSmallCHaloBW bricks of one output plane (bh =
// kSmallCHaloBH for 16-bit, half that for float32; 16-bit splits walk them along D), dy's rows copied 16 bytes at
// a time, x's halo'd brick in shared memory (16-bit: a ring of D planes, only a brick's new planes copied) and the
// fragments read from it, while the halo holds at most kSmallCHaloElems elements.
constexpr int64_t kSmallCWgradSplits = 512;
constexpr int kSmallCHaloBH = 4, kSmallCHaloBW = 32;
constexpr int64_t kSmallCHaloElems = 4096;
struct SmallCWgrad {
  int rb = 0, tile = 0;
  int64_t tiles = 0, tiles_per_split = 0, splits = 0;
  bool split = false;  // 3xTF32
  bool halo = false;   // the halo'd form, with its brick grid and halo extents (H, W padded to even, D = span)
  int64_t tiles_h = 0, tiles_w = 0;
  int bh = 0, hh = 0, hw = 0, hd = 0;
};
// `halo`: whether the halo'd form may be chosen (its launcher falls back to the register form for a dy that is not
// 16-byte aligned, so the workspace covers both).
bool smallc_wgrad_plan(const ConvProblem& p, DType t, MathMode m, SmallCWgrad* s, bool halo = true);

// A first layer's grad-input on registers (conv_smallc_dgrad.cuh), stride 1: per plane of dy, the tensor cores form
// P = dy^T W (dy positions x (channel, tap) columns, the whole 64-channel reduction, columns padded to nr) over a
// halo'd th x tw brick of dx positions, and threads sum P's shifted entries into a ring of dx planes. The brick
// (at most kSmallCDgradRows dy positions per plane, one 64-row warpgroup tile each), the D chunks (each block walks
// dz planes of dx) and nr are pure functions of the problem, and each element of dx is summed in one fixed order.
constexpr int kSmallCDgradWarpgroups = 3;
constexpr int kSmallCDgradRows = 64 * kSmallCDgradWarpgroups;
constexpr int kSmallCDgradItems = 2 * 128 * kSmallCDgradWarpgroups;  // dx items (channel, h, w): two a thread
constexpr int64_t kSmallCDgradTargetBlocks = 264;  // two waves of 132 multiprocessors before D is chunked
constexpr int kSmallCDgradSmemLimit = 226 << 10;   // dynamic: the 227 KB a block may opt into, less its static table
struct SmallCDgrad {
  int nr = 0;             // P's columns: 32, 64, 88 or 128 (C * taps rounded up)
  int ps = 0;             // P's row stride (floats): smallc_dgrad_p_stride
  int th = 0, tw = 0;     // dx brick (H, W)
  int64_t tiles_h = 0, tiles_w = 0;
  int64_t dz = 0, dchunks = 0;  // dx planes per block, chunks along D
  int64_t blocks = 0;
  int pbufs = 0;          // P buffers: 2 where they fit (16-bit: the next plane's products overlap the tap sums)
  size_t smem = 0;        // dynamic shared memory (bytes, with the alignment slack)
  bool split = false;     // 3xTF32
};
bool smallc_dgrad_plan(const ConvProblem& p, DType t, MathMode m, SmallCDgrad* s);
// P's row stride, in floats: odd, so the fragment stores (a warp's 8 row groups x 4 column pairs) fall in 32 banks.
// 16-bit channels-last with an odd C > 1 takes the odd stride = C (mod 32): a warp's tap-sum reads, 32 consecutive
// (w, c) items of a W row, then land in consecutive banks (nr + 1 left C = 3 two-way conflicted). Measured on kb54
// (docs/perf.md v14): bf16 -5 %, float32 (3xTF32, not bound on these reads) no gain, so float32 keeps nr + 1.
int smallc_dgrad_p_stride(int nr, int64_t channels, bool channels_last, int64_t esize);
// Its shared memory: the filter (big, and small for 3xTF32: 64 channels of K, 128-byte swizzled rows, nr rows per
// 128 bytes of K), then P (pbufs x kSmallCDgradRows rows of ps floats), then the ring of dx planes.
inline size_t smallc_dgrad_filter_bytes(int nr, bool split, int64_t esize) {
  return size_t(split ? 2 : 1) * size_t(esize == 2 ? 1 : 2) * size_t(nr) * 128;
}
inline size_t smallc_dgrad_p_bytes(int ps) { return size_t(kSmallCDgradRows) * size_t(ps) * 4; }

}  // namespace hopper
}  // namespace jaxconv3d
