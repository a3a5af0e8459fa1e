// Grad-weight of a first layer (few input channels), the forward's im2col read the other way round:
//   dW^T[k][o] = sum over output positions m of A[m][k] * dy[m][o]   (A: smallc_geom.cuh's im2col of x),
// one wgmma GEMM per tile of 32 positions (four tf32 or two 16-bit k-steps):
//   rows (M)    = (input channel, tap) columns of A, RB blocks of 64, one warpgroup each (the block has RB of
//                 them, sharing the position table and the dy tile): each thread gathers its fragment of A^T
//                 (rows 16 * warp + lane / 4 and + 8; positions lane % 4 and + 4 for tf32, 2 * (lane % 4) +
//                 {0, 1, 8, 9} for 16-bit) straight from x into registers, as the forward does;
//   columns (N) = output channels, one block of 64;
//   K           = positions: dy's tile [o][position] staged in shared memory (K-major, 128-byte swizzle), read from
//                 either layout by coalesced loads (along positions for NCDHW, along channels for NDHWC).
// The positions are split into `splits` contiguous ranges, one block each; every block writes its partial sums
// (fp32) to the workspace and a second kernel adds them in split order: deterministic, no atomics.
// SPLIT (float32 accurate, 3xTF32) splits both operands as the forward does, accumulates each tile's products in a
// zeroed register block and adds that to the running sum with fp32 adds (a reduction over thousands of positions
// inside the tensor cores would drift past float32 accuracy).
#pragma once

#include "hopper/smallc_geom.cuh"

namespace jaxconv3d {
namespace hopper {

struct SmallCWgradArgs {
  SmallCGeom g;
  const void* x;    // input, NCDHW or NDHWC
  const void* dy;   // result gradient, the same layout
  float* partial;   // [splits][RB * 64][64]
  uint32_t tiles, tiles_per_split;
};

template <typename T, bool SPLIT>
struct SmallCWgradCfg {
  static constexpr int kStep = sizeof(T) == 2 ? 16 : 8;  // positions per wgmma k-step
  static constexpr int kTile = 32;                       // positions per tile (a dy row of 128 or 64 bytes)
  static constexpr int kSteps = kTile / kStep;           // 4 (float32) or 2
  static constexpr int kParts = SPLIT ? 2 : 1;
  static constexpr int kBlockBytes = 64 * kRowBytes;     // the dy tile (and its small part): 64 channel rows
  static constexpr int kSmem = kParts * kBlockBytes + 1024;
};

template <typename T, bool SPLIT, int RB>
__global__ void __launch_bounds__(128 * RB, RB == 3 ? 1 : 2) conv_smallc_wgrad_kernel(const __grid_constant__ SmallCWgradArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = SmallCWgradCfg<T, SPLIT>;
  constexpr int KT = Cfg::kTile, KS = Cfg::kSteps, NT = 128 * RB;
  using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
  // The tile's positions, structure of arrays (a thread's reads are broadcasts or consecutive: no bank conflicts).
  __shared__ i64 s_xbase[KT], s_ybase[KT];
  __shared__ int4 s_win[KT];  // i0, i1, i2 of the position's window
  const SmallCGeom& g = a.g;
  const uint32_t btile = dynamic_smem_base();
  const int tid = threadIdx.x, rb = tid / 128, warp = (tid % 128) >> 5, lane = tid & 31, gid = lane >> 2,
            tig = lane & 3;
  const Bits* xb = static_cast<const Bits*>(a.x);
  const Bits* dyb = static_cast<const Bits*>(a.dy);

  // This thread's A^T rows (columns of A) in its warpgroup's row block rb: fixed for the whole kernel.
  const int4 col[2] = {g.column(rb * 64 + warp * 16 + gid), g.column(rb * 64 + warp * 16 + gid + 8)};
  float sum[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) sum[i] = 0.0f;

  const uint32_t t_begin = blockIdx.x * a.tiles_per_split;
  const uint32_t t_end = min(a.tiles, t_begin + a.tiles_per_split);
  for (uint32_t tile = t_begin; tile < t_end; ++tile) {
    const uint32_t m0 = tile * KT;
    __syncthreads();  // the previous tile's readers of the position table and of the dy tile are done
    bool interior = true;
    if (tid < KT) {
      const SmallCRow r = smallc_row(g, m0 + tid);
      s_xbase[tid] = r.xbase;
      s_ybase[tid] = r.ybase;
      s_win[tid] = make_int4(r.i0, r.i1, r.i2, 0);
      interior = r.interior;
    }
    const bool all_interior = __syncthreads_and(interior);  // the tile's gathers need no bounds checks

    // dy[position][o] -> the K-major tile [o][position] (zeros past M and O). NCDHW: a thread keeps one position
    // and walks channels (lanes along positions: coalesced); NDHWC: one channel, walking positions.
    constexpr int kPer = (64 * KT + NT - 1) / NT;
    auto element = [&](int i, int& j, int& o) {  // false past the tile (RB = 3: 2048 elements, 384 threads)
      const int idx = i * NT + tid;
      j = g.channels_last ? idx / 64 : idx % KT;  // coalesced along memory's fastest axis
      o = g.channels_last ? idx % 64 : idx / KT;
      return (64 * KT) % NT == 0 || idx < 64 * KT;
    };
    Bits v[kPer];  // loaded now, stored after the gathers below: both sets of loads in flight at once
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      int j, o;
      if (!element(i, j, o)) continue;
      const i64 yb = s_ybase[j];
      v[i] = (yb >= 0 && o < g.O) ? __ldg(dyb + yb + i64(o) * g.ys_c) : Bits(0);
    }

    // The A^T fragment: per k-step, this thread's positions p and p + 4 (tf32) or 2p, 2p + 1, 2p + 8, 2p + 9.
    uint32_t ab[KS][4], as[SPLIT ? KS : 1][4];
    auto gather_all = [&](auto checked) {
      auto get = [&](int h, int j) -> Bits {
        SmallCRow r;
        r.xbase = s_xbase[j];
        if constexpr (decltype(checked)::value) {
          const int4 w = s_win[j];
          r.i0 = w.x; r.i1 = w.y; r.i2 = w.z;
        }
        return smallc_gather(xb + r.xbase, r, col[h], g, decltype(checked)::value, true);
      };
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        if constexpr (sizeof(T) == 4) {
          const int j0 = ks * 8 + tig, j1 = j0 + 4;
          const uint32_t e[4] = {get(0, j0), get(1, j0), get(0, j1), get(1, j1)};
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            uint32_t small;
            tf32_split(__uint_as_float(e[q]), ab[ks][q], small);
            if constexpr (SPLIT) as[ks][q] = small;
          }
        } else {
          const int j = ks * 16 + 2 * tig;
          ab[ks][0] = uint32_t(get(0, j)) | (uint32_t(get(0, j + 1)) << 16);
          ab[ks][1] = uint32_t(get(1, j)) | (uint32_t(get(1, j + 1)) << 16);
          ab[ks][2] = uint32_t(get(0, j + 8)) | (uint32_t(get(0, j + 9)) << 16);
          ab[ks][3] = uint32_t(get(1, j + 8)) | (uint32_t(get(1, j + 9)) << 16);
        }
      }
    };
    if (all_interior) {
      gather_all(std::false_type{});
    } else {
      gather_all(std::true_type{});
    }

#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      int j, o;
      if (!element(i, j, o)) continue;
      const int byte = j * int(sizeof(T));
      const uint32_t at = btile + swz(o, byte / 16) + byte % 16;
      T e;
      memcpy(&e, &v[i], sizeof(T));
      st_operand<SPLIT>(at, e, Cfg::kBlockBytes);
    }
    fence_proxy_async();  // the dy tile's generic-proxy writes, read by wgmma through the async proxy
    __syncthreads();

    float part[SPLIT ? 32 : 1];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const uint32_t b = btile + ks * 32;
      const uint64_t big = smem_desc(b, 16, 1024);
      const uint64_t small = SPLIT ? smem_desc(b + Cfg::kBlockBytes, 16, 1024) : 0;
      // SPLIT: this tile's products in a zeroed block (added to the sum below); else straight into the sum
      smallc_mma<T, SPLIT, 64>(SPLIT ? part : sum, ab[ks], as[SPLIT ? ks : 0], big, small, SPLIT && ks == 0 ? 0 : 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(sum);
    if constexpr (SPLIT) {
      fence_regs(part);
#pragma unroll
      for (int i = 0; i < 32; ++i) sum[i] += part[i];
    }
  }

  // This block's partial sums: accumulator element i is row 16 * warp + gid + 8 * ((i / 2) % 2) (+ 64 rb),
  // column 8 * (i / 4) + 2 * tig + i % 2.
  float* out = a.partial + i64(blockIdx.x) * (RB * 64) * 64;
#pragma unroll
  for (int i = 0; i < 32; i += 2) {
    const int r = rb * 64 + warp * 16 + gid + 8 * ((i / 2) % 2), c = 8 * (i / 4) + 2 * tig;
    *reinterpret_cast<float2*>(out + r * 64 + c) = make_float2(sum[i], sum[i + 1]);
  }
#endif
}

// dw[o][k] = sum over splits s of partial[s][k][o] (`rows` = RB * 64 per split, 64 columns), in one fixed order:
// block k, thread (chunk g, column o) sums splits g, g + kReduceChunks, g + 2 kReduceChunks, ... in turn, then
// column o's kReduceChunks partial sums are added in chunk order. 16 chunks keep 16 loads of every column in flight
// (kb54: 512 splits, 5184 columns; one thread per column summing 512 splits in turn took 19 us).
constexpr int kReduceChunks = 16;
template <typename T>
__global__ void __launch_bounds__(64 * kReduceChunks)
    smallc_wgrad_reduce_kernel(const float* __restrict__ partial, T* __restrict__ dw, int splits, int O, int K,
                               int rows) {
  __shared__ float sums[kReduceChunks][64];
  const int k = blockIdx.x, o = threadIdx.x % 64, g = threadIdx.x / 64;
  float s = 0.0f;
  if (o < O) {
#pragma unroll 4
    for (int sp = g; sp < splits; sp += kReduceChunks) s += partial[(i64(sp) * rows + k) * 64 + o];
  }
  sums[g][o] = s;
  __syncthreads();
  if (g == 0 && o < O) {
    float t = sums[0][o];
#pragma unroll
    for (int j = 1; j < kReduceChunks; ++j) t += sums[j][o];
    dw[i64(o) * K + k] = from_float<T>(t);
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
