// The Hopper family's kernel skeleton: persistent and warp-specialised.
//   warpgroup 0  the producer: one thread walks every tile this block owns and issues its K-tiles' TMA copies
//                into a ring of STAGES shared-memory stages, each stage guarded by a `full` mbarrier (the copies
//                landed) and an `empty` mbarrier (both consumer warpgroups retired the wgmmas that read it);
//   warpgroups 1-2  the consumers: wgmma on each landed stage (one group in flight), release the stage before,
//                and after a tile's last K-tile write its results while the producer already fills the next tile.
// Blocks take tiles blockIdx.x, blockIdx.x + gridDim.x, ...; a tile's result never depends on which block
// computes it, so the grid size (the number of SMs) does not change a bit of the output.
//
// `Op` supplies: `int tiles() const`, `int ktiles(int tile) const`; for the producer a `Cursor cursor(int tile)
// const` and `void issue(Cursor&, uint32_t stage, uint32_t bar) const` (issues the cursor's K-tile, bringing
// exactly STAGE_BYTES, and advances it); for the consumers `void mma(uint32_t stage, float* acc, int consumer,
// bool accumulate, int iter) const` (iter: the consumer's running K-tile count over all its tiles) and `void
// epilogue(int tile, const float* acc, int consumer, int ctid) const` (ctid: 0..127 inside the consumer
// warpgroup); and `static constexpr bool kStageFreeAfterMma`: true when mma() has finished reading the stage by
// the time it returns (it copied the stage, or waited for its wgmmas), so the stage is released at once instead of
// after the next K-tile's wgmmas; and `void finish(int consumer, int ctid) const`, run by every consumer thread after
// its last tile (outstanding asynchronous stores complete there).
#pragma once

#include "pipeline.cuh"
#include "tma.cuh"

namespace jaxconv3d {
namespace hopper {

constexpr int kPersistentThreads = 384;

template <int STAGES, int STAGE_BYTES, int NACC, typename Op>
__device__ __forceinline__ void persistent_gemm(const Op& op, uint32_t smem) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __shared__ alignas(8) uint64_t full[STAGES], empty[STAGES];
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(full));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(empty));
  const int tid = threadIdx.x;
  const int wg = tid >> 7;
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, 8);  // one arrival per consumer warp
    }
    mbar_fence_init();
  }
  __syncthreads();
  const int tiles = op.tiles();

  if (wg == 0) {  // producer
    if (tid != 0) return;
    int stage = 0;
    uint32_t phase = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const int kts = op.ktiles(tile);
      auto cur = op.cursor(tile);
      for (int kt = 0; kt < kts; ++kt) {
        mbar_wait(empty0 + 8 * stage, phase ^ 1);
        mbar_expect_tx(full0 + 8 * stage, STAGE_BYTES);
        op.issue(cur, smem + stage * STAGE_BYTES, full0 + 8 * stage);
        if (++stage == STAGES) { stage = 0; phase ^= 1; }
      }
    }
    return;
  }

  // consumers
  const int consumer = wg - 1, ctid = tid - 128 * wg, lane = tid & 31;
  int stage = 0, iter = 0;
  uint32_t phase = 0;
  float acc[NACC];
  auto release = [&](int s) {
    __syncwarp();
    if (lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(empty0 + 8 * s) : "memory");
  };
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int kts = op.ktiles(tile);
    int prev = -1;
    for (int kt = 0; kt < kts; ++kt) {
      mbar_wait(full0 + 8 * stage, phase);
      wgmma_fence();
      op.mma(smem + stage * STAGE_BYTES, acc, consumer, kt > 0, iter++);
      wgmma_commit();
      if constexpr (Op::kStageFreeAfterMma) {
        release(stage);  // mma() left nothing in flight that reads the stage
      } else {
        wgmma_wait<1>();
        if (prev >= 0) release(prev);
        prev = stage;
      }
      if (++stage == STAGES) { stage = 0; phase ^= 1; }
    }
    wgmma_wait<0>();
    fence_regs(acc);
    if (prev >= 0) release(prev);
    if (kts == 0) {
#pragma unroll
      for (int i = 0; i < NACC; ++i) acc[i] = 0.0f;
    }
    op.epilogue(tile, acc, consumer, ctid);
  }
  op.finish(consumer, ctid);
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
