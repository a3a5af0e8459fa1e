// The plane loop both depthwise streams share (stencil/depthwise_ndhwc.cu, sm80/stencil3_mma.cu): source planes
// js = 0 .. len + 1 of a run of len output planes through a three-stage cp.async ring, the plane loop unrolled by
// three so each plane's stage and accumulator slot (js % 3) are compile-time constants.
#pragma once

#include <type_traits>

#include "device_common.cuh"

namespace jaxconv3d {

template <int V>
using IC = std::integral_constant<int, V>;

constexpr int kRingStages = 3;  // = the accumulator rotation, so stage and slot indices are both js % 3

// step(js, IC<js % 3>) for js = 0 .. n - 1, unrolled by three so each step's slot index is a compile-time constant.
template <typename Step>
__device__ __forceinline__ void each_plane_by_three(int n, Step&& step) {
#pragma unroll 1
  for (int js = 0; js < n; js += 3) {
    step(js, IC<0>{});
    if (js + 1 < n) step(js + 1, IC<1>{});
    if (js + 2 < n) step(js + 2, IC<2>{});
  }
}

// Planes 0 and 1 issued, then for each js: wait for its copies, `sync()` (everyone's copies are in, and plane
// js - 1's stage is free: __syncthreads for a block's shared stages, __syncwarp for a warp's own), issue plane js + 2
// into that stage, and run body(js, IC<js % 3>); nothing left in flight at the end. issue(j, IC<stage>) must commit
// one group a call, even past the last plane: the waits count groups.
template <typename Sync, typename Issue, typename Body>
__device__ __forceinline__ void plane_ring(int len, Sync&& sync, Issue&& issue, Body&& body) {
  auto step = [&](int js, auto phase) {
    constexpr int PH = decltype(phase)::value;
    cp_async_wait<kRingStages - 2>();
    sync();
    issue(js + kRingStages - 1, IC<(PH + kRingStages - 1) % kRingStages>{});
    body(js, phase);
  };
  issue(0, IC<0>{});
  issue(1, IC<1>{});
  each_plane_by_three(len + 2, step);
  cp_async_wait<0>();
}

}  // namespace jaxconv3d
