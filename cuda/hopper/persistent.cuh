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
// exactly STAGE_BYTES, and advances it); for the consumers `void mma(uint32_t stage, float* acc, int half,
// bool accumulate, int iter) const` (iter: the consumer's running K-tile count over all its tiles; `half`: the
// 64-row half of the tile the accumulators cover) and `void epilogue(int tile, const float* acc, int half, int
// ctid, int consumer) const` (ctid: 0..127 inside the consumer warpgroup; consumer: the warpgroup writing, whose
// staging buffer and barrier it uses); `static constexpr bool kStageFreeAfterMma`: true when mma() has finished
// reading the stage by the time it returns (it copied the stage, or waited for its wgmmas), so the stage is
// released at once instead of after the next K-tile's wgmmas; and `void finish(int consumer, int ctid) const`, run
// by every consumer thread after its last tile (outstanding asynchronous stores complete there).
//
// `static constexpr bool kPingPong`: the consumers own alternate tiles instead of sharing each one. A consumer then
// computes all 128 rows of its tile (mma() called for row halves 0 and 1, into two accumulator blocks) and writes
// them (epilogue() for halves 0 and 1) while the other consumer's wgmmas run on the next tile, so the epilogue no
// longer stalls the tensor cores. The stage ring is walked by both in tile order; a consumer steps over the other's
// K-tiles, and starts a tile's main loop only once the other has left the previous tile's (a `turn` mbarrier each):
// an mbarrier parity wait must never run more than one phase ahead, and the stages between two of a consumer's
// tiles are refilled once per K-tile of the other's. Registers: the producer warpgroup gives back all but 40 per
// thread (setmaxnreg), the consumers take 232.
#pragma once

#include "pipeline.cuh"
#include "tma.cuh"

namespace jaxconv3d {
namespace hopper {

constexpr int kPersistentThreads = 384;

// Optional hooks of an Op: `producer_prologue()` (run by the producer thread before its first copy) and
// `consumer_prologue()` (run by every consumer thread before its first K-tile), e.g. a filter copied once per block.
template <typename Op>
__device__ __forceinline__ auto producer_prologue(const Op& op, int) -> decltype(op.producer_prologue()) {
  op.producer_prologue();
}
template <typename Op>
__device__ __forceinline__ void producer_prologue(const Op&, long) {}
template <typename Op>
__device__ __forceinline__ auto consumer_prologue(const Op& op, int) -> decltype(op.consumer_prologue()) {
  op.consumer_prologue();
}
template <typename Op>
__device__ __forceinline__ void consumer_prologue(const Op&, long) {}

template <int STAGES, int STAGE_BYTES, int NACC, typename Op>
__device__ __forceinline__ void persistent_gemm(const Op& op, uint32_t smem) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kPP = Op::kPingPong;
  __shared__ alignas(8) uint64_t full[STAGES], empty[STAGES], turn[2];
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(full));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(empty));
  const uint32_t turn0 = uint32_t(__cvta_generic_to_shared(turn));
  const int tid = threadIdx.x;
  const int wg = tid >> 7;
  if (tid == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, kPP ? 4 : 8);  // one arrival per warp of the consumer(s) reading the stage
    }
    mbar_init(turn0, 1);
    mbar_init(turn0 + 8, 1);
    mbar_fence_init();
  }
  __syncthreads();
  const int tiles = op.tiles();

  if (wg == 0) {  // producer
    if constexpr (kPP) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (tid == 0) {
      producer_prologue(op, 0);
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
    }
  } else {  // consumers
    if constexpr (kPP) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
    const int consumer = wg - 1, ctid = tid - 128 * wg, lane = tid & 31;
    constexpr int kBlocks = kPP ? 2 : 1;  // accumulator blocks: a ping-pong consumer holds both row halves
    int stage = 0, iter = 0, local = 0;
    uint32_t phase = 0, turn_phase = 0;
    float acc[kBlocks][NACC];
    auto release = [&](int s) {
      __syncwarp();
      if (lane == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(empty0 + 8 * s) : "memory");
    };
    consumer_prologue(op, 0);
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++local) {
      const int kts = op.ktiles(tile);
      if (kPP && (local & 1) != consumer) {  // the other consumer's tile: step over its K-tiles
        const int s = stage + kts;
        phase ^= uint32_t(s / STAGES) & 1u;
        stage = s % STAGES;
        continue;
      }
      if (kPP && local > 0) {  // the other consumer's main loop over the previous tile has passed all its stages
        mbar_wait(turn0 + 8 * consumer, turn_phase);
        turn_phase ^= 1;
      }
      int prev = -1;
      for (int kt = 0; kt < kts; ++kt) {
        mbar_wait(full0 + 8 * stage, phase);
        wgmma_fence();
#pragma unroll
        for (int b = 0; b < kBlocks; ++b)
          op.mma(smem + stage * STAGE_BYTES, acc[b], kPP ? b : consumer, kt > 0, iter);
        ++iter;
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
      if (kPP && ctid == 0)  // the other consumer's turn (its waits on `full` are now at most one phase ahead)
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(turn0 + 8 * (1 - consumer)) : "memory");
      wgmma_wait<0>();
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) fence_regs(acc[b]);
      if (prev >= 0) release(prev);
      if (kts == 0) {
#pragma unroll
        for (int b = 0; b < kBlocks; ++b)
#pragma unroll
          for (int i = 0; i < NACC; ++i) acc[b][i] = 0.0f;
      }
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) op.epilogue(tile, acc[b], kPP ? b : consumer, ctid, consumer);
    }
    op.finish(consumer, ctid);
  }
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
