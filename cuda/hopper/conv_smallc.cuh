// Forward of a first layer (few input channels: RGB volumes, one-channel scans) as an implicit GEMM whose A operand
// never touches shared memory:
//   rows (M)    = output positions m = (n, q0, q1, q2), 64 per tile, one warpgroup (one block of 128 threads);
//   columns (N) = output channels, 64 per block, every block of the filter resident in shared memory for the whole
//                 (persistent) kernel;
//   K           = (input channel, tap) pairs in the filter's own memory order (OIDHW: c * taps + tap; ODHWI:
//                 tap * C + c), the whole reduction in one pass of at most kMaxSteps wgmma k-steps.
// Each thread gathers its own fragment of A in wgmma's register layout (rows 16 * warp + lane / 4 and + 8; columns
// lane % 4 and + 4 for tf32, 2 * (lane % 4) + {0, 1, 8, 9} for 16-bit) straight from global memory through the
// read-only cache, with a per-column table (source offset, tap displacement along D, H, W): a gather is an add and a
// load where both of a thread's rows have their whole window inside x, plus three bounds checks elsewhere. The
// fragment stays in registers while every N block is multiplied. 16-bit results of either layout leave a tile at a
// time: written into a 128-byte-swizzled shared-memory stage, then one TMA store (ncu kb54 bf16: -20 % against
// 16-byte stores from a padded stage, docs/perf.md v16). Float32 NCDHW results go through a padded stage (16-byte
// stores along a channel), float32 NDHWC results straight from the accumulators (a lane's two channels already fill
// 8 bytes); so do tiles the map cannot take (an NCDHW tile across two samples). Either layout: the table and the
// strides carry it, so NCDHW tensors need no transposes around the call.
// SPLIT (float32 accurate, 3xTF32): A and the filter are split into big = tf32(v) (round to nearest) and
// small = v - big (read by the tensor cores as tf32), and the product accumulates small*big + big*small + big*big.
// float32 with TF32 math rounds both operands to tf32 once.
#pragma once

#include "hopper/smallc_geom.cuh"
#include "hopper/tma.cuh"

namespace jaxconv3d {
namespace hopper {

struct SmallCArgs {
  SmallCGeom g;
  const void* x;     // input, NCDHW or NDHWC
  const void* w;     // filter [O][K]
  const void* bias;  // [O] or null
  void* y;           // result, the input's layout
  uint32_t tiles;    // ceil(M / 64)
  int nks, nblocks;
  int pairs;          // y's channels are contiguous, O is even and y aligned: two channels per store
  int planar_vec;     // NCDHW with S a multiple of 16 bytes and y 16-byte aligned: tiles inside one sample store
                      // 16 bytes of a channel at a time (through the shared-memory stage)
  int tma_store;      // 16-bit results through a 128-byte-swizzled stage and one TMA store of the 64 x 64 tile:
                      // 1 = NDHWC (map over [M][O]), 2 = NCDHW (map over [N][O][S], tiles inside one sample)
  uint32_t S;         // out[0] * out[1] * out[2]
  FastDiv div_s;      // by S
};

template <typename T, bool SPLIT>
struct SmallCCfg {
  static constexpr int kStep = sizeof(T) == 2 ? 16 : 8;          // K per wgmma
  static constexpr int kMaxSteps = kSmallCSteps;
  static constexpr int kMaxK = kMaxSteps * kStep;                 // 96 (float32) or 192 (16-bit)
  static constexpr int kBlockBytes = 64 * kRowBytes;               // 64 filter rows x 128 bytes of K
  static constexpr int kKBlocks = kMaxK * int(sizeof(T)) / 128;    // 3
  static constexpr int kPartBytes = kKBlocks * kBlockBytes;        // one N block of the filter
  static_assert(kPartBytes == kSmallCBlockBytes, "the rules size the filter by kSmallCBlockBytes");
  static constexpr int kParts = SPLIT ? 2 : 1;                     // big (and small)
  static constexpr int kNBlockBytes = kParts * kPartBytes;
  static constexpr int kStageRowBytes = 64 * int(sizeof(T)) + 16;  // NCDHW store stage: a channel's 64 positions
  static constexpr int kStageBytes = 64 * kStageRowBytes;
  static int smem_bytes(int nblocks, bool stage) {
    return nblocks * kNBlockBytes + (stage ? kStageBytes : 0) + 1024;  // + alignment slack
  }
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A 16-bit 64 x 64 result tile (accumulator element i: row 16 * warp + gid + 8 * ((i / 2) % 2), column
// 8 * (i / 4) + 2 * tig + i % 2) stored by one TMA store from `stage` (1024-byte aligned, 8 KB): 64 rows of 128 bytes
// whose 16-byte chunks are swizzled by row % 8 (the map's 128-byte swizzle), so the warps' shared stores are
// conflict-free. NDHWC (tma_store 1): rows are positions, a store is a lane's two adjacent channels; NCDHW (2):
// rows are channels, a store is one element. The previous tile's store must have read the stage first.
template <typename T>
__device__ __forceinline__ void smallc_store_tile_tma(float (&acc)[32], const SmallCArgs& a, const CUtensorMap& ymap,
                                                      uint32_t stage, const float* bias, uint32_t m0, uint32_t n0,
                                                      int nb) {
  const int tid = threadIdx.x, warp = tid >> 5, gid = (tid & 31) >> 2, tig = tid & 3;
  if (tid == 0) tma_store_wait_read();
  __syncthreads();
  if (a.bias) {
#pragma unroll
    for (int i = 0; i < 32; ++i) acc[i] += bias[8 * (i / 4) + 2 * tig + i % 2];
  }
  if (a.tma_store == 1) {
    const uint32_t base = stage + (warp * 16 + gid) * 128 + 4 * tig;
#pragma unroll
    for (int i = 0; i < 32; i += 2) {
      const int nt = i / 4, h = (i / 2) % 2;
      T pr[2] = {from_float<T>(acc[i]), from_float<T>(acc[i + 1])};
      st_shared(base + h * 8 * 128 + ((nt ^ gid) << 4), *reinterpret_cast<uint32_t*>(pr));
    }
  } else {
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = 8 * (i / 4) + 2 * tig + i % 2, r = warp * 16 + gid + 8 * ((i / 2) % 2);
      st_shared(stage + c * 128 + (((r >> 3) ^ (c & 7)) << 4) + (r & 7) * 2, from_float<T>(acc[i]));
    }
  }
  fence_proxy_async();  // the generic-proxy stores, read by the TMA store (async proxy)
  __syncthreads();
  if (tid == 0) {
    if (a.tma_store == 1) {
      tma_store_2d(&ymap, stage, nb * 64, int(m0));
    } else {
      tma_store_3d(&ymap, stage, int(m0 - n0 * a.S), nb * 64, int(n0));
    }
    tma_store_commit();
  }
}
#endif

// NKS: the problem's k-steps (1..kMaxSteps), a template argument so the A fragment takes only the registers it needs
// and the wgmmas are straight-line code.
template <typename T, bool SPLIT, int NKS>
__global__ void __launch_bounds__(128, SPLIT ? 3 : 4) conv_smallc_kernel(const __grid_constant__ SmallCArgs a,
                                                                  const __grid_constant__ CUtensorMap ymap) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = SmallCCfg<T, SPLIT>;
  constexpr int STEP = Cfg::kStep, KP = NKS * STEP;  // K padded to whole k-steps
  using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
  __shared__ int4 tab[KP];  // per K column: source offset, tap displacement along D, H, W
  __shared__ float sbias[kSmallCMaxBlocks * 64];
  const uint32_t fil = dynamic_smem_base();
  const int tid = threadIdx.x;

  const SmallCGeom& g = a.g;
  for (int kk = tid; kk < KP; kk += 128) tab[kk] = g.column(kk);
  const T* bias = static_cast<const T*>(a.bias);
  for (int o = tid; o < a.nblocks * 64; o += 128) sbias[o] = (bias && o < g.O) ? to_float(bias[o]) : 0.0f;
  // The filter, every N block: [block][part][K block][64 rows x 128 bytes, swizzled], zeros past O and K.
  const T* w = static_cast<const T*>(a.w);
  for (int i = tid; i < a.nblocks * 64 * KP; i += 128) {
    const int kk = i % KP, r = i / KP;
    const T v = (r < g.O && kk < g.K) ? w[i64(r) * g.K + kk] : from_float<T>(0.0f);
    const int byte = kk * int(sizeof(T));
    const uint32_t at = fil + (r / 64) * Cfg::kNBlockBytes + (byte / 128) * Cfg::kBlockBytes +
                        swz(r % 64, (byte % 128) / 16) + byte % 16;
    st_operand<SPLIT>(at, v, Cfg::kPartBytes);
  }
  fence_proxy_async();  // generic-proxy writes, read by wgmma through the async proxy
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const Bits* xb = static_cast<const Bits*>(a.x);
  T* y = static_cast<T*>(a.y);

  for (uint32_t tile = blockIdx.x; tile < a.tiles; tile += gridDim.x) {
    const uint32_t r0 = tile * 64 + warp * 16 + gid;  // this thread's rows: r0 and r0 + 8
    const SmallCRow row[2] = {smallc_row(g, r0), smallc_row(g, r0 + 8)};

    // The A fragment for the whole reduction (big, and small when splitting). Interior rows (the common case)
    // skip the bounds checks; only the last k-step can hold columns past K.
    uint32_t ab[NKS][4], as[SPLIT ? NKS : 1][4];
    // 16-bit: row pointers kept opaque (an element is one IMAD.WIDE: ncu kb54 bf16 406 -> 396 us, 196 M -> 159 M
    // instructions); float32 measured slower that way (785 -> 828 us) and keeps the merged 64-bit index form.
    const Bits* rp[2] = {xb + row[0].xbase, xb + row[1].xbase};
    if constexpr (sizeof(T) == 2) {
      rp[0] = opaque_ptr(rp[0]);
      rp[1] = opaque_ptr(rp[1]);
    }
    auto gather_all = [&](auto checked) {
      auto get = [&](int h, const int4& e, int ks, int col) -> Bits {
        return smallc_gather(rp[h], row[h], e, g, decltype(checked)::value, ks < NKS - 1 || col < g.K);
      };
#pragma unroll
      for (int ks = 0; ks < NKS; ++ks) {
        if constexpr (sizeof(T) == 4) {
          const int c0 = ks * 8 + tig, c1 = c0 + 4;
          const int4 e0 = tab[c0], e1 = tab[c1];
          const uint32_t v[4] = {get(0, e0, ks, c0), get(1, e0, ks, c0), get(0, e1, ks, c1), get(1, e1, ks, c1)};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            uint32_t small;
            tf32_split(__uint_as_float(v[i]), ab[ks][i], small);
            if constexpr (SPLIT) as[ks][i] = small;
          }
        } else {
          const int c = ks * 16 + 2 * tig;
          const int4 e0 = tab[c], e1 = tab[c + 1], e8 = tab[c + 8], e9 = tab[c + 9];
          ab[ks][0] = uint32_t(get(0, e0, ks, c)) | (uint32_t(get(0, e1, ks, c + 1)) << 16);
          ab[ks][1] = uint32_t(get(1, e0, ks, c)) | (uint32_t(get(1, e1, ks, c + 1)) << 16);
          ab[ks][2] = uint32_t(get(0, e8, ks, c + 8)) | (uint32_t(get(0, e9, ks, c + 9)) << 16);
          ab[ks][3] = uint32_t(get(1, e8, ks, c + 8)) | (uint32_t(get(1, e9, ks, c + 9)) << 16);
        }
      }
    };
    if (row[0].interior && row[1].interior) {
      gather_all(std::false_type{});
    } else {
      gather_all(std::true_type{});
    }

    for (int nb = 0; nb < a.nblocks; ++nb) {
      float acc[32];
      const uint32_t fb = fil + nb * Cfg::kNBlockBytes;
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < NKS; ++ks) {
        const uint32_t off = (ks / 4) * Cfg::kBlockBytes + (ks % 4) * 32;
        const uint64_t big = smem_desc(fb + off, 16, 1024);
        const uint64_t small = SPLIT ? smem_desc(fb + Cfg::kPartBytes + off, 16, 1024) : 0;
        smallc_mma<T, SPLIT, 64>(acc, ab[ks], as[SPLIT ? ks : 0], big, small, ks > 0 ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(acc);

      // Accumulator element i: row 16 * warp + gid + 8 * ((i / 2) % 2), column 8 * (i / 4) + 2 * tig + i % 2.
      // Streaming stores: the result passes through L2 once, x should stay there.
      const uint32_t m0 = tile * 64, n0 = a.div_s.div(m0);
      if constexpr (sizeof(T) == 2) {
        if (a.tma_store == 1 || (a.tma_store == 2 && m0 + 63 < g.M && a.div_s.div(m0 + 63) == n0)) {
          smallc_store_tile_tma<T>(acc, a, ymap, fil + a.nblocks * Cfg::kNBlockBytes, sbias + nb * 64, m0, n0, nb);
          continue;
        }
      }
      if (a.planar_vec && m0 + 63 < g.M && a.div_s.div(m0 + 63) == n0) {
        // NCDHW, the tile inside one sample: each channel's 64 positions are contiguous in y. Transposed through
        // shared memory ([channel][position], rows padded by 16 bytes: conflict-free both ways), then 16 bytes
        // per store.
        constexpr int RB = Cfg::kStageRowBytes, E = 16 / int(sizeof(T)), CH = 64 / E;
        const uint32_t stage = fil + a.nblocks * Cfg::kNBlockBytes;
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          const int c = 8 * (i / 4) + 2 * tig + i % 2, r = warp * 16 + gid + 8 * ((i / 2) % 2);
          st_shared(stage + c * RB + r * int(sizeof(T)), from_float<T>(acc[i] + sbias[nb * 64 + c]));
        }
        __syncthreads();
        T* base = y + i64(n0) * g.ys_n + (m0 - i64(n0) * a.S) + i64(nb) * 64 * g.ys_c;
        for (int i = tid; i < 64 * CH; i += 128) {
          const int c = i / CH, q = i % CH;
          if (nb * 64 + c < g.O) {
            uint4 v;
            asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                         : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(stage + c * RB + q * 16));
            __stcs(reinterpret_cast<uint4*>(base + c * g.ys_c + q * E), v);
          }
        }
        __syncthreads();
        continue;
      }
      const int o0 = nb * 64 + 2 * tig;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (row[h].ybase < 0) continue;
        T* out = y + row[h].ybase + o0 * g.ys_c;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt, out += 8 * g.ys_c) {
          const int o = o0 + nt * 8;
          if (o >= g.O) continue;
          const float v0 = acc[nt * 4 + h * 2] + sbias[o], v1 = acc[nt * 4 + h * 2 + 1] + sbias[o + 1];
          if (a.pairs) {
            if constexpr (sizeof(T) == 4) {
              __stcs(reinterpret_cast<float2*>(out), make_float2(v0, v1));
            } else {
              T pr[2] = {from_float<T>(v0), from_float<T>(v1)};
              __stcs(reinterpret_cast<unsigned int*>(out), *reinterpret_cast<unsigned int*>(pr));
            }
          } else {
            __stcs(reinterpret_cast<Bits*>(out), bits_of(from_float<T>(v0)));
            if (o + 1 < g.O) __stcs(reinterpret_cast<Bits*>(out + g.ys_c), bits_of(from_float<T>(v1)));
          }
        }
      }
    }
  }
  if (a.tma_store && tid == 0) tma_store_wait_all();
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
