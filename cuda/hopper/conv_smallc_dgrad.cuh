// Grad-input of a first layer (few input channels, stride 1) without an im2col of dy and without a padded GEMM of
// C = 3 columns. For a plane pd of dy and the (channel, tap) columns k of the filter [O][K],
//   P[p][k] = sum_o dy[p][o] * w[o][k]            (tensor cores: rows = dy positions, N = K padded to NR, K = O)
// and dx is P's entries summed along the taps:
//   dx[qd][qh][qw][c] = sum_{kd, kh, kw} P at dy position (qd + pad - kd * dil, qh + ..., qw + ...), column (c, tap).
// One block (three warpgroups) owns a th x tw brick of dx positions (H, W) of one sample and walks a chunk of D:
//   - each warpgroup multiplies a 64-row tile of the halo'd dy brick ((th + span_h - 1) x (tw + span_w - 1)
//     positions of plane pd): its A fragment comes straight from dy into registers (64 channels of the reduction,
//     one thread's 16 channels contiguous in an NDHWC row: 16-byte loads), the filter, transposed, is B in shared
//     memory for the whole kernel; the next plane's fragment loads are in flight during this plane's products;
//   - P goes to shared memory (rows of a.ps floats, odd: smallc_dgrad_p_stride), two buffers where they
//     fit, so one barrier a plane suffices and a warpgroup's products overlap the others' tap sums; 16-bit with two
//     buffers (OVERLAP) goes further: plane pd + 1's wgmma run while this thread sums plane pd's taps, and plane
//     pd + 2's fragment loads are in flight meanwhile;
//   - each thread owns (at most two) dx items (channel, qh, qw) and, for each kd, sums P's kh x kw entries in a fixed
//     order into a ring of span_d dx planes in shared memory; the plane pd - pad_d then has all its terms and is
//     stored.
// Every element of dx is summed in the order (dy plane ascending; kh, kw ascending), whatever the chunking: the
// result is a pure function of the inputs. SPLIT (float32 accurate, 3xTF32): dy and w are split into big = tf32(v)
// and small = v - big, and P accumulates small*big + big*small + big*big.
#pragma once

#include "hopper/smallc_geom.cuh"
#include "hopper/wgmma_ops.cuh"

namespace jaxconv3d {
namespace hopper {

struct SmallCDgradArgs {
  const void* dy;  // (N, O, Do, Ho, Wo) or (N, Do, Ho, Wo, O)
  const void* w;   // filter [O][K], K in the filter's memory order (smallc_geom.cuh)
  void* dx;        // the input's layout
  int O, C, K;
  int channels_last;
  int vec;              // NDHWC, O a multiple of 16 and dy 16-byte aligned: 16-byte fragment loads
  int in[3], out[3], pad[3], dil[3], k[3], span[3];
  int th, tw, thd, twd;  // dx brick and its halo'd dy brick (H, W)
  int tiles_h, tiles_w, dz, dchunks;
  i64 ys_n, ys_c, ys_d, ys_h, ys_w;  // dy strides (elements)
  i64 xs_n, xs_c, xs_d, xs_h, xs_w;  // dx strides
  int p_off, ring_off;               // P and the ring: byte offsets into the aligned dynamic shared memory
  int pbufs;                         // P buffers (1 or 2)
  int ps;                            // P's row stride (floats, odd: smallc_dgrad_p_stride)
};

template <typename T>
struct SmallCDgradCfg {
  static constexpr int kSteps = sizeof(T) == 2 ? 4 : 8;   // wgmma k-steps over the 64 channels of dy
  static constexpr int kWords = sizeof(T) == 2 ? 8 : 16;  // one row's 16 channels, in 32-bit words
  static constexpr int kKBlocks = sizeof(T) == 2 ? 1 : 2; // 128-byte blocks of K (64 channels)
  static constexpr int kThreads = 128 * kSmallCDgradWarpgroups;
};

// The K order of the A fragment. Thread `tig` of a quad holds, for each of its rows, channels 16 * tig .. + 15:
// float32 (k8 steps): step ks, fragment column tig + 4j holds channel 16 * tig + 2 * ks + j;
// 16-bit (k16 steps): step ks, columns 2 * tig + e + 8 * half hold channel 16 * tig + 4 * ks + 2 * half + e.
// Where B's element (channel o, step ks, column kk) sits in a 64-channel row of K (bytes).
template <typename T>
__device__ __forceinline__ int dgrad_k_byte(int o) {
  const int tig = o / 16, e = o % 16;
  if constexpr (sizeof(T) == 4) {
    return (e / 2) * 32 + (tig + 4 * (e % 2)) * 4;
  } else {
    const int word = e / 2;
    return (word / 2) * 32 + (2 * tig + (e % 2) + 8 * (word % 2)) * 2;
  }
}

template <typename T, bool SPLIT, int NR, bool OVERLAP = false>
__global__ void __launch_bounds__(SmallCDgradCfg<T>::kThreads, 1)
    conv_smallc_dgrad_kernel(const __grid_constant__ SmallCDgradArgs a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = SmallCDgradCfg<T>;
  using Bits = std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t>;
  constexpr int NKS = Cfg::kSteps, WORDS = Cfg::kWords, NT = Cfg::kThreads;
  // P's row stride: the rule's (a.ps) for 16-bit; float32 always takes nr + 1, kept a constant (as a run-time value
  // its kernels measured ~4 % slower: docs/perf.md v14).
  const int PS = sizeof(T) == 2 ? a.ps : NR + 1;
  constexpr int KBLOCK = NR * 128, PART = Cfg::kKBlocks * KBLOCK;
  const uint32_t fil = dynamic_smem_base();
  unsigned char* base = shared_ptr<unsigned char>(fil);
  float* P = reinterpret_cast<float*>(base + a.p_off);
  float* ring = reinterpret_cast<float*>(base + a.ring_off);
  const int tid = threadIdx.x;

  // Which brick: W tiles fastest (neighbours share their halos in L2), then H tiles, D chunks, samples.
  int64_t b = blockIdx.x;
  const int tw_i = int(b % a.tiles_w); b /= a.tiles_w;
  const int th_i = int(b % a.tiles_h); b /= a.tiles_h;
  const int dc = int(b % a.dchunks);
  const int64_t n = b / a.dchunks;
  const int h0 = th_i * a.th, w0 = tw_i * a.tw;
  const int qa = dc * a.dz, qb = min(qa + a.dz, a.in[0]);
  const int items = a.C * a.th * a.tw;
  const int ring_items = a.span[0] * items;

  // B: the filter transposed, [part][K block][NR rows (columns k) x 128 bytes of channels, swizzled]; zeros past K
  // and O. The ring starts at zero.
  const T* w = static_cast<const T*>(a.w);
  for (int i = tid; i < 64 * NR; i += NT) {
    const int o = i / NR, kk = i % NR;
    const T v = (o < a.O && kk < a.K) ? w[i64(o) * a.K + kk] : from_float<T>(0.0f);
    const int byte = dgrad_k_byte<T>(o);
    const uint32_t at = fil + (byte / 128) * KBLOCK + swz(kk, (byte % 128) / 16) + byte % 16;
    st_operand<SPLIT>(at, v, PART);
  }
  for (int i = tid; i < ring_items; i += NT) ring[i] = 0.0f;
  fence_proxy_async();
  __syncthreads();

  const int wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int rows = a.thd * a.twd;
  const int hd0 = h0 + a.pad[1] - (a.span[1] - 1), wd0 = w0 + a.pad[2] - (a.span[2] - 1);
  // This thread's two rows of its warpgroup's tile: their dy offset within a plane (channel 16 * tig), or -1.
  // Which brick position a fragment row (warp, gid, h) holds is ours to choose (P's rows follow it): NCDHW keeps
  // a warp's rows 16 consecutive positions (8 along W per load: whole sectors); NDHWC, whose rows are separate
  // 16-byte loads anyway, spreads a store's 8 gids over rows {0, 1, 8, 9, 16, 17, 24, 25} (+ 2h, 4 (warp % 2),
  // 32 (warp / 2)), which with P's odd stride puts the 32 lanes' stores in 32 banks.
  auto brick_row = [&](int h) {
    return wg * 64 + (a.channels_last ? (gid % 2) + 8 * (gid / 2) + 2 * h + 4 * (warp % 2) + 32 * (warp / 2)
                                      : warp * 16 + gid + 8 * h);
  };
  i64 roff[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = brick_row(h);
    const int hd = hd0 + r / a.twd, wd = wd0 + r % a.twd;
    const bool ok = r < rows && hd >= 0 && hd < a.out[1] && wd >= 0 && wd < a.out[2] && 16 * tig < a.O;
    roff[h] = ok ? n * a.ys_n + hd * a.ys_h + wd * a.ys_w + 16 * tig * a.ys_c : -1;
  }
  const Bits* dy = static_cast<const Bits*>(a.dy);
  // raw: this plane's fragment words; nxt (16-bit): the next plane's, loaded while this plane's wgmmas run. A
  // 16-bit fragment is raw itself, so loading the next plane into raw would overwrite registers an in-flight wgmma
  // reads (the compiler would have to wait for the products first); float32 fragments are split copies.
  uint32_t raw[2][WORDS], nxt[2][WORDS];
  // Loads plane pd's fragment words into `dst` (zeros outside dy and past O).
  auto load = [&](int pd, uint32_t (&dst)[2][WORDS]) {
    const bool plane = pd >= 0 && pd < a.out[0];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool ok = plane && roff[h] >= 0;
      const Bits* src = dy + (ok ? roff[h] + pd * a.ys_d : 0);
      if (a.vec) {
#pragma unroll
        for (int q = 0; q < WORDS / 4; ++q) {
          const uint4 v = ok ? __ldg(reinterpret_cast<const uint4*>(src) + q) : make_uint4(0, 0, 0, 0);
          dst[h][4 * q] = v.x; dst[h][4 * q + 1] = v.y; dst[h][4 * q + 2] = v.z; dst[h][4 * q + 3] = v.w;
        }
      } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) {
          const bool in = ok && 16 * tig + e < a.O;
          const uint32_t v = in ? uint32_t(__ldg(src + e * a.ys_c)) : 0u;
          if constexpr (sizeof(T) == 4) {
            dst[h][e] = v;
          } else if (e % 2 == 0) {
            dst[h][e / 2] = v;
          } else {
            dst[h][e / 2] |= v << 16;
          }
        }
      }
    }
  };

  // This thread's dx items (at most two: kSmallCDgradItems), NCDHW running W fastest, NDHWC the channel: where
  // tap 0's term sits in P (-1: the item is past the volume's edge) and the item's offset within a plane of dx.
  // toff: each tap's column (channel 0) and row shift in P, in bytes, so an item's term is at P + pb + toff[tap].
  __shared__ int toff[128];
  const int taps = a.k[0] * a.k[1] * a.k[2], k12 = a.k[1] * a.k[2];
  for (int tap = tid; tap < taps; tap += NT) {
    const int kw = tap % a.k[2], kh = (tap / a.k[2]) % a.k[1];
    toff[tap] = 4 * ((a.channels_last ? tap * a.C : tap) - (kh * a.dil[1] * a.twd + kw * a.dil[2]) * PS);
  }
  int pb[2];
  i64 xo[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int it = tid + i * NT;
    int c, qh, qw;
    if (a.channels_last) {
      c = it % a.C; const int t = it / a.C; qw = t % a.tw; qh = t / a.tw;
    } else {
      qw = it % a.tw; const int t = it / a.tw; qh = t % a.th; c = t / a.th;
    }
    const bool ok = it < items && h0 + qh < a.in[1] && w0 + qw < a.in[2];
    pb[i] = ok ? 4 * (((qh + a.span[1] - 1) * a.twd + qw + a.span[2] - 1) * PS + (a.channels_last ? c : c * taps))
               : -1;
    xo[i] = n * a.xs_n + c * a.xs_c + (h0 + qh) * a.xs_h + (w0 + qw) * a.xs_w;
  }
  T* dx = static_cast<T*>(a.dx);

  const int pd_first = qa + a.pad[0] - (a.span[0] - 1), pd_last = qb - 1 + a.pad[0];
  // The ring slot of dx plane pd - pad_d, (pd - pad_d - qa) mod span_d: at pd_first, -(span_d - 1) mod span_d.
  int slot0 = 1 % a.span[0];
  int buf = 0;
  __syncthreads();  // toff
  // An item's terms for dx plane kd: at P + pb + kd * colstep + toff[j], j over the kh x kw taps (3 x 3 unrolled).
  const int colstep = 4 * k12 * (a.channels_last ? a.C : 1);
  auto term = [](const char* at, int off) { return *reinterpret_cast<const float*>(at + off); };
  const bool taps9 = k12 == 9;
  // Every warpgroup runs its products, even on a tile past the brick's rows (zeros: its rows are never read):
  // a wgmma under a branch on the thread index made ptxas serialize the 3xTF32 chains.
  // P = this thread's fragment (raw, 16-bit) times the filter, stored into P buffer `b`.
  auto products = [&](float (&acc)[NR / 2]) {
    static_assert(!OVERLAP || sizeof(T) == 2, "the overlapped loop is 16-bit: its fragment is raw itself");
    uint32_t ab[NKS][4];
#pragma unroll
    for (int ks = 0; ks < NKS; ++ks)
#pragma unroll
      for (int i = 0; i < 4; ++i) ab[ks][i] = raw[i % 2][2 * ks + i / 2];  // register i: row i % 2, K half i / 2
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < NKS; ++ks) {
      const uint32_t off = (ks / 4) * KBLOCK + (ks % 4) * 32;
      smallc_mma<T, false, NR>(acc, ab[ks], ab[ks], smem_desc(fil + off, 16, 1024), 0, ks > 0 ? 1 : 0);
    }
    wgmma_commit();
  };
  auto copy_frag = [](uint32_t (&dst)[2][WORDS], const uint32_t (&src)[2][WORDS]) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int q = 0; q < WORDS; ++q) dst[h][q] = src[h][q];
  };
  // Accumulator element i: row 16 * warp + gid + 8 * ((i / 2) % 2), column 8 * (i / 4) + 2 * tig + i % 2.
  auto store_p = [&](const float (&acc)[NR / 2], int b) {
    float* Pb = P + b * (kSmallCDgradRows * PS);
    float* prow[2] = {Pb + brick_row(0) * PS + 2 * tig, Pb + brick_row(1) * PS + 2 * tig};
#pragma unroll
    for (int i = 0; i < NR / 2; ++i) prow[(i / 2) % 2][8 * (i / 4) + i % 2] = acc[i];
  };
  auto tap_sums = [&](int pd, const float* Pb) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (pb[i] < 0) continue;
      const char* src = reinterpret_cast<const char*>(Pb) + pb[i];
      for (int kd = 0; kd < a.k[0]; ++kd) {
        const int qd = pd - a.pad[0] + kd * a.dil[0];
        if (qd < qa || qd >= qb) continue;
        const char* at = src + kd * colstep;
        float s = 0.0f;
        if (taps9) {
#pragma unroll
          for (int j = 0; j < 9; ++j) s += term(at, toff[j]);
        } else {
          for (int j = 0; j < k12; ++j) s += term(at, toff[j]);
        }
        int slot = slot0 + kd * a.dil[0];
        slot -= slot >= a.span[0] ? a.span[0] : 0;
        ring[slot * items + tid + i * NT] += s;
      }
    }
  };
  auto finish_plane = [&](int pd) {  // dx plane pd - pad_d has had its last term (kd = 0): store it, clear its slot
    const int qd = pd - a.pad[0];
    if (qd >= qa && qd < qb) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        if (pb[i] < 0) continue;
        float& v = ring[slot0 * items + tid + i * NT];
        dx[xo[i] + qd * a.xs_d] = from_float<T>(v);
        v = 0.0f;
      }
    }
    slot0 = slot0 + 1 == a.span[0] ? 0 : slot0 + 1;
  };
  if constexpr (OVERLAP) {
    // 16-bit, two P buffers: plane pd + 1's products run on the tensor cores during plane pd's tap sums (one
    // barrier a plane: P[buf] holds plane pd; P[buf ^ 1], last read by plane pd - 1's tap sums before the barrier,
    // takes plane pd + 1's products after them).
    const int pa = max(pd_first, 0), pz = min(pd_last, a.out[0] - 1);  // the planes of dy that exist
    float acc[NR / 2];
    if (pa <= pz) {
      load(pa, raw);
      if (pa < pz) load(pa + 1, nxt);
      products(acc);
      wgmma_wait<0>();
      fence_regs(acc);
      if (pa < pz) copy_frag(raw, nxt);
      store_p(acc, 0);
    }
    for (int pd = pd_first; pd <= pd_last; ++pd) {
      if (pd >= pa && pd <= pz) {
        __syncthreads();  // P[buf] holds plane pd; P[buf ^ 1] is free
        const bool more = pd < pz;
        if (more) {
          if (pd + 1 < pz) load(pd + 2, nxt);  // in flight during the products and the tap sums
          products(acc);
        }
        tap_sums(pd, P + buf * (kSmallCDgradRows * PS));
        if (more) {
          wgmma_wait<0>();
          fence_regs(acc);
          if (pd + 1 < pz) copy_frag(raw, nxt);
          store_p(acc, buf ^ 1);
        }
        buf ^= 1;
      }
      finish_plane(pd);
    }
    return;
  }
  load(pd_first, raw);
  for (int pd = pd_first; pd <= pd_last; ++pd) {
    if (pd >= 0 && pd < a.out[0]) {
      float* Pb = P + buf * (kSmallCDgradRows * PS);
      {
        uint32_t ab[NKS][4], as[SPLIT ? NKS : 1][4];
#pragma unroll
        for (int ks = 0; ks < NKS; ++ks) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {  // fragment register i: row i % 2, K half i / 2
            if constexpr (sizeof(T) == 4) {
              uint32_t small;
              tf32_split(__uint_as_float(raw[i % 2][2 * ks + i / 2]), ab[ks][i], small);
              if constexpr (SPLIT) as[ks][i] = small;
            } else {
              ab[ks][i] = raw[i % 2][2 * ks + i / 2];
            }
          }
        }
        if (pd < pd_last) {  // in flight during the products and the tap sums
          if constexpr (sizeof(T) == 2) {
            load(pd + 1, nxt);
          } else {
            load(pd + 1, raw);  // the fragments are split copies: raw is free
          }
        }
        float acc[NR / 2];
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < NKS; ++ks) {
          const uint32_t off = (ks / 4) * KBLOCK + (ks % 4) * 32;
          const uint64_t big = smem_desc(fil + off, 16, 1024);
          const uint64_t small = SPLIT ? smem_desc(fil + PART + off, 16, 1024) : 0;
          smallc_mma<T, SPLIT, NR>(acc, ab[ks], as[SPLIT ? ks : 0], big, small, ks > 0 ? 1 : 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_regs(acc);
        if constexpr (sizeof(T) == 2) {
          if (pd < pd_last) copy_frag(raw, nxt);
        }
        store_p(acc, buf);
      }
      __syncthreads();
      tap_sums(pd, Pb);  // for each kd, dx plane pd - pad_d + kd * dil_d (inside this chunk) gains P's terms
      if (a.pbufs == 1) {
        __syncthreads();  // P is rewritten by the next plane
      } else {
        buf ^= 1;  // the next plane writes the other buffer; this one is rewritten only after the next barrier
      }
    } else if (pd < pd_last) {
      load(pd + 1, raw);
    }
    finish_plane(pd);
  }
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
