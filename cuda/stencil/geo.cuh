// What the stencil family's kernels share (stencil/depthwise_ndhwc.cu: FFMA, hopper/depthwise_band.cu: tensor
// cores): one launch's geometry, where a column lies, the walk of a block's share of (column, plane) pairs, and the
// host-side geometry of a forward or grad-input launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "conv_problem.h"

namespace jaxconv3d {
namespace stencil {

using i64 = long long;

// One stencil launch: output q (per axis), tap t in 0..2 reads source q + t - P with tap weight w[t] (forward) or
// w[2 - t] (grad-input: the filter flipped).
struct Geo {
  int C;
  int sd[3], od[3], P[3];
  int flip;
  int wstrips, hblocks, cgroups;  // a column's place: W strip, H block, channel group, then the batch entry
  i64 columns, per;               // columns (each all D planes) and output planes a block
};

// Where a column lies: its first W output, first H row, first channel, batch entry.
struct Place {
  int ox0, oy0, c0;
  i64 n;
};

// Column index b -> its W strip (`cols` outputs wide), H block (`rows` high), channel group (`ch` channels, of
// `groups`; grad-weight's columns are one group's: 1) and batch entry, fastest first.
__device__ __forceinline__ Place place(const Geo& g, i64 b, int groups, int cols, int rows, int ch) {
  Place pl;
  pl.ox0 = int(b % g.wstrips) * cols;
  b /= g.wstrips;
  pl.oy0 = int(b % g.hblocks) * rows;
  b /= g.hblocks;
  pl.c0 = int(b % groups) * ch;
  pl.n = b / groups;
  return pl;
}

// A block's share of a sequence of (column, output plane) pairs, planes [b * per, (b + 1) * per): one segment per
// column it meets (each segment reads two halo planes more than it writes). Calls f(column, first plane, planes).
template <typename F>
__device__ __forceinline__ void for_segments(i64 b, i64 per, i64 columns, int planes, F&& f) {
  i64 cur = b * per;
  const i64 end = min(columns * planes, cur + per);
#pragma unroll 1
  while (cur < end) {
    const int z = int(cur % planes), len = int(min(i64(planes - z), end - cur));
    f(cur / planes, z, len);
    cur += len;
    __syncthreads();  // the next segment's first copies overwrite stages this one's last plane may still be read from
  }
}

inline int ceil_div(i64 a, i64 b) { return int((a + b - 1) / b); }

// A forward (dgrad false) or grad-input (the stencil dy -> dx, filter flipped, pad' = 2 - pad) launch's extents,
// padding and H blocks of `rows`; the caller sets the strips, groups, columns and share.
inline Geo geo_of(const ConvProblem& p, bool dgrad, int rows) {
  Geo g{};
  g.C = int(p.out_channels);
  for (int a = 0; a < 3; ++a) {
    g.sd[a] = int(dgrad ? p.out[a] : p.in[a]);
    g.od[a] = int(dgrad ? p.in[a] : p.out[a]);
    g.P[a] = int(dgrad ? 2 - p.pad_lo[a] : p.pad_lo[a]);
  }
  g.flip = dgrad ? 1 : 0;
  g.hblocks = ceil_div(g.od[1], rows);
  return g;
}

}  // namespace stencil
}  // namespace jaxconv3d
