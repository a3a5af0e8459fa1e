// What both first-layer kernels (hopper_smallc: conv_smallc.cuh forward, conv_smallc_wgrad.cuh grad-weight) know
// of the problem: its im2col matrix A[m][k] = x at output position m and (input channel, tap) column k, read
// straight from x in either layout. Columns run in the filter's own memory order (OIDHW: k = c * taps + tap; ODHWI:
// k = tap * C + c), so the filter (or its gradient) is the plain matrix [O][K] in both layouts.
#pragma once

#include <cstring>

#include "conv_problem.h"
#include "hopper/hopper_rules.h"
#include "pipeline.cuh"

namespace jaxconv3d {
namespace hopper {

struct SmallCGeom {
  uint32_t M;         // batch * out[0] * out[1] * out[2] (< 2^32)
  int O, K, C;
  int channels_last;  // the K order: tap-major (ODHWI) when set, channel-major (OIDHW) otherwise
  FastDiv div_w, div_h, div_d;  // decode m: by out[2], out[1], out[0]
  int out[3], in[3], stride[3], pad[3], dil[3], k[3], span[3];  // span: the dilated filter's extent
  i64 xs_n;                     // x strides in elements: batch ...
  int xs_c, xs_d, xs_h, xs_w;   // ... and within a sample (< 2^31 elements)
  i64 ys_n, ys_s, ys_c;         // y (dy) strides in elements: batch, spatial position, channel

  // Column kk's table entry: source offset from a position's window start, tap displacement along D, H, W.
  // Columns past K get a displacement no row can bring back into range (a checked gather reads zero).
  __device__ int4 column(int kk) const {
    int4 e = make_int4(0, 1 << 29, 0, 0);
    if (kk < K) {
      const int taps = k[0] * k[1] * k[2];
      const int c = channels_last ? kk % C : kk / taps;
      const int tap = channels_last ? kk / C : kk % taps;
      const int j2 = tap % k[2], j1 = (tap / k[2]) % k[1], j0 = tap / (k[2] * k[1]);
      e.y = j0 * dil[0];
      e.z = j1 * dil[1];
      e.w = j2 * dil[2];
      e.x = c * xs_c + e.y * xs_d + e.z * xs_h + e.w * xs_w;
    }
    return e;
  }
};

// One output position's window: where it starts in x (coordinates may be negative: padding) and its offsets.
struct SmallCRow {
  int i0, i1, i2;  // i0 is far out of range for positions past M, so every checked gather of such a row reads zero
  bool interior;   // the whole window lies inside x: gathers need no bounds checks
  i64 xbase, ybase;  // ybase: -1 past M
};

__device__ __forceinline__ SmallCRow smallc_row(const SmallCGeom& g, uint32_t m) {
  const uint32_t t1 = g.div_w.div(m), t2 = g.div_h.div(t1), n = g.div_d.div(t2);
  const int q2 = int(m - t1 * uint32_t(g.out[2])), q1 = int(t1 - t2 * uint32_t(g.out[1]));
  const int q0 = int(t2 - n * uint32_t(g.out[0]));
  const bool valid = m < g.M;
  SmallCRow r;
  r.i0 = valid ? q0 * g.stride[0] - g.pad[0] : -(1 << 30);
  r.i1 = q1 * g.stride[1] - g.pad[1];
  r.i2 = q2 * g.stride[2] - g.pad[2];
  r.interior = r.i0 >= 0 && r.i1 >= 0 && r.i2 >= 0 && r.i0 + g.span[0] <= g.in[0] && r.i1 + g.span[1] <= g.in[1] &&
               r.i2 + g.span[2] <= g.in[2];
  r.xbase = i64(n) * g.xs_n + i64(r.i0) * g.xs_d + i64(r.i1) * g.xs_h + i64(r.i2) * g.xs_w;
  r.ybase = valid ? i64(n) * g.ys_n + ((i64(q0) * g.out[1] + q1) * g.out[2] + q2) * g.ys_s : -1;
  return r;
}

// The same pointer with its derivation hidden from the optimizer: offsets added to it stay 32-bit indices scaled
// onto it (one IMAD.WIDE an element) instead of being merged back into 64-bit index arithmetic (a sign extension,
// a 64-bit add and a shift an element).
template <typename E>
__device__ __forceinline__ const E* opaque_ptr(const E* p) {
  asm("" : "+l"(p));
  return p;
}

// x at (row r, column e), `rp` = opaque_ptr(x + r.xbase) (the row's window start, formed once per row);
// `checked`: bounds-check the window (rows that are not interior), `col_ok`: the column is inside K (only the last
// k-step's can be past it, and an interior row reads unchecked memory there).
template <typename Bits>
__device__ __forceinline__ Bits smallc_gather(const Bits* rp, const SmallCRow& r, const int4& e, const SmallCGeom& g,
                                              bool checked, bool col_ok) {
  bool ok = col_ok;
  if (checked)
    ok = ok && unsigned(r.i0 + e.y) < unsigned(g.in[0]) && unsigned(r.i1 + e.z) < unsigned(g.in[1]) &&
         unsigned(r.i2 + e.w) < unsigned(g.in[2]);
  return ok ? __ldg(rp + e.x) : Bits(0);
}

__device__ __forceinline__ uint32_t tf32_rna(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
}

template <typename T>
__device__ __forceinline__ auto bits_of(T v) {
  std::conditional_t<sizeof(T) == 2, uint16_t, uint32_t> b;
  memcpy(&b, &v, sizeof(b));
  return b;
}

template <typename T>
__device__ __forceinline__ void st_shared(uint32_t addr, T v) {
  if constexpr (sizeof(T) == 4) {
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(*reinterpret_cast<uint32_t*>(&v)) : "memory");
  } else {
    asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"(*reinterpret_cast<uint16_t*>(&v)) : "memory");
  }
}

// A float32 operand element as the tensor cores read it: big = tf32(v) rounded to nearest, small = v - big (SPLIT).
__device__ __forceinline__ void tf32_split(float v, uint32_t& big, uint32_t& small) {
  big = tf32_rna(v);
  small = __float_as_uint(v - __uint_as_float(big));
}

// An operand element into shared memory as the tensor cores read it: 16-bit as it is; float32 rounded to TF32
// (big), and with SPLIT its remainder (small) `small_offset` bytes further on.
template <bool SPLIT, typename T>
__device__ __forceinline__ void st_operand(uint32_t at, T v, uint32_t small_offset) {
  if constexpr (sizeof(T) == 4) {
    uint32_t big, small;
    tf32_split(to_float(v), big, small);
    st_shared(at, big);
    if constexpr (SPLIT) st_shared(at + small_offset, small);
  } else {
    st_shared(at, v);
  }
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
// One k-step of a first-layer product with A in registers, N columns of B in shared memory: acc = scale * acc + A B.
// SPLIT (3xTF32): the small terms first, then big * big; float32 with TF32 math: big only; 16-bit: K-major B.
template <typename T, bool SPLIT, int N>
__device__ __forceinline__ void smallc_mma(float* acc, const uint32_t* a_big, const uint32_t* a_small, uint64_t b_big,
                                           uint64_t b_small, int scale) {
  if constexpr (SPLIT) {
    wgmma_Tf32_rs<N>(acc, a_small, b_big, scale);
    wgmma_Tf32_rs<N>(acc, a_big, b_small, 1);
    wgmma_Tf32_rs<N>(acc, a_big, b_big, 1);
  } else if constexpr (sizeof(T) == 4) {
    wgmma_Tf32_rs<N>(acc, a_big, b_big, scale);
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    wgmma_Bf16_rs<N, 0>(acc, a_big, b_big, scale);
  } else {
    wgmma_F16_rs<N, 0>(acc, a_big, b_big, scale);
  }
}
#endif

// The geometry of problem p (either layout); its y strides are those of the result (forward) or dy (grad-weight).
inline SmallCGeom smallc_geom(const ConvProblem& p) {
  const bool last = p.layout == Layout::kNDHWC;
  const int64_t C = p.in_channels, O = p.out_channels, S = p.out_spatial();
  SmallCGeom g{};
  g.M = uint32_t(p.batch * S);
  g.O = int(O); g.C = int(C); g.K = int(C * p.taps());
  g.channels_last = last ? 1 : 0;
  g.div_w = FastDiv(uint32_t(p.out[2]));
  g.div_h = FastDiv(uint32_t(p.out[1]));
  g.div_d = FastDiv(uint32_t(p.out[0]));
  for (int d = 0; d < 3; ++d) {
    g.out[d] = int(p.out[d]); g.in[d] = int(p.in[d]); g.stride[d] = int(p.stride[d]);
    g.pad[d] = int(p.pad_lo[d]); g.dil[d] = int(p.dilation[d]); g.k[d] = int(p.kernel[d]);
    g.span[d] = int(p.span(d));
  }
  const int64_t hw = p.in[1] * p.in[2];
  g.xs_n = C * p.in_spatial();
  g.xs_c = last ? 1 : int(p.in_spatial());
  g.xs_d = int(last ? hw * C : hw);
  g.xs_h = int(last ? p.in[2] * C : p.in[2]);
  g.xs_w = int(last ? C : 1);
  g.ys_n = O * S;
  g.ys_s = last ? O : 1;
  g.ys_c = last ? 1 : S;
  return g;
}

}  // namespace hopper
}  // namespace jaxconv3d
