// CUDA kernels of jaxconv3d (PyTorch nn.Conv3d semantics, dense NCDHW / OIDHW).
//
// Kernels
//  * gemm_conv_kernel: implicit GEMM used for forward (M = N*Do*Ho*Wo, N = O/groups, K = (C/groups)*taps) and
//    for grad-input (M = input positions of one stride residue class, N = C/groups, K = (O/groups)*taps that
//    contribute to that class). The im2col tile of A and the filter tile of B are staged in shared memory
//    (double-buffered, register prefetch); FFMA variant with 8x4 register micro-tiles, or a WMMA tensor-core
//    variant (tf32 m16n16k8 / bf16,f16 m16n16k16, fp32 accumulate). TF32 operands travel global -> shared by
//    4-byte cp.async with zero fill (3 stages); the other variants use the register prefetch.
//  * stencil_kernel: depthwise (C/groups == 1) forward and stride-1 grad-input: input tile + halo in shared memory;
//    8 depth outputs per thread, and for depth kernel 3 / stride 1 / dilation 1 each source row is read once.
//  * wgrad_kernel: grad-weight GEMM (M = O/groups, N = (C/groups)*taps, K = N*Do*Ho*Wo split over blocks);
//    wgrad_pipe_kernel (O/groups > 32): same tiles and splits, pipelined, WMMA for tf32/bf16/f16, FFMA for fp32;
//    dw_wgrad_kernel: depthwise grad-weight; splits_reduce_kernel sums the split partials in ascending order.
//  * bgrad_kernel: one block per output channel, fixed-order reduction.
// Everything is deterministic (no atomics), launches only on the caller's stream, allocates nothing.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "conv_kernels.h"

namespace jaxconv3d {
namespace {

using i64 = long long;

constexpr int kInvalid = -(1 << 29);  // coordinate marker that fails every bounds test
constexpr int kTapCap = 256;           // taps held in the shared tap table of the GEMM kernel
constexpr int kTargetBlocks = 1056;    // 8 blocks x 132 SMs (fixed: results must not depend on the card)

// Path switches (each false restores the previous kernel for that path).
constexpr bool kGemmAsync = true;       // float32 TF32 fwd/dgrad GEMM (WMMA): cp.async 3-stage pipeline
constexpr bool kGemmAsyncFfma = false;  // float32 accurate fwd/dgrad GEMM (FFMA): cp.async 4 stages; measured 5-8%
                                        // slower than the register prefetch on H100, so off
constexpr bool kStencilSlide = true;    // stencil: depth-3 sliding reuse of source rows
constexpr bool kWgradPipeF32 = true;    // float32 accurate grad-weight (Og > 32): pipelined FFMA kernel
constexpr bool kWgradPipeTF32 = true;   // float32 TF32 grad-weight (Og > 32): WMMA tf32 kernel
constexpr bool kWgradPipe16 = true;     // bf16/f16 grad-weight (Og > 32): WMMA kernel

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

template <typename D, typename S>
__device__ __forceinline__ D cvt(S v) {
  if constexpr (std::is_same<D, S>::value) {
    return v;
  } else if constexpr (std::is_same<S, __nv_bfloat16>::value) {
    return static_cast<D>(__bfloat162float(v));
  } else if constexpr (std::is_same<S, __half>::value) {
    return static_cast<D>(__half2float(v));
  } else if constexpr (std::is_same<D, __nv_bfloat16>::value) {
    return __float2bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_same<D, __half>::value) {
    return __float2half(static_cast<float>(v));
  } else {
    return static_cast<D>(v);
  }
}

template <typename T> __device__ __forceinline__ T zero_of() { return cvt<T>(0.0f); }

__host__ __device__ inline int gcd_int(int a, int b) {
  while (b) { int t = a % b; a = b; b = t; }
  return a;
}

// ----------------------------------------------------------------------------------------------------------
// Geometry shared by the kernels (host-filled, passed by value).
struct ConvGeo {
  int xd[3], yd[3], k[3], s[3], pl[3], dl[3];
};

// One axis of a (class of a) GEMM: destination positions o0 + ostep*j for j < ext; source coordinate
// j*mul + offbase + i*offstep for the i-th contributing tap, whose kernel index is t0 + i*tstep.
struct AxisPlan {
  int ext, o0, ostep, mul, ntap, t0, tstep, offbase, offstep;
};

template <bool DGRAD>
__device__ __forceinline__ AxisPlan axis_plan(const ConvGeo& G, int ax, int rho) {
  AxisPlan p;
  const int k = G.k[ax], s = G.s[ax], pl = G.pl[ax], d = G.dl[ax];
  if (!DGRAD) {
    p.ext = G.yd[ax]; p.o0 = 0; p.ostep = 1; p.mul = s;
    p.ntap = k; p.t0 = 0; p.tstep = 1; p.offbase = -pl; p.offstep = d;
  } else {
    const int in = G.xd[ax];
    p.ext = rho < in ? (in - rho + s - 1) / s : 0;
    p.o0 = rho; p.ostep = s; p.mul = 1;
    p.tstep = s / gcd_int(s, d);
    int t0 = -1;
    const int lim = k < p.tstep ? k : p.tstep;
    for (int t = 0; t < lim; ++t)
      if ((rho + pl - t * d) % s == 0) { t0 = t; break; }
    if (t0 < 0) {
      p.ntap = 0; p.t0 = 0; p.offbase = 0; p.offstep = 0;
    } else {
      p.t0 = t0;
      p.ntap = (k - 1 - t0) / p.tstep + 1;
      p.offbase = (rho + pl - t0 * d) / s;  // exact
      p.offstep = -(p.tstep * d) / s;       // exact: tstep*d = lcm(s, d)
    }
  }
  return p;
}

__device__ __forceinline__ void divmod64(i64 a, i64 b, i64& q, i64& r) {
  if (((a | b) >> 31) == 0) {
    const unsigned ua = static_cast<unsigned>(a), ub = static_cast<unsigned>(b);
    const unsigned uq = ua / ub;
    q = uq; r = ua - uq * ub;
  } else {
    q = a / b; r = a - q * b;
  }
}

struct GemmArgs {
  const void* src;
  const void* wt;
  const void* bias;
  void* out;
  i64 batch;
  int sdim[3];   // source tensor spatial dims (fwd: x, dgrad: dy)
  int odim[3];   // destination spatial dims (fwd: y, dgrad: dx)
  i64 src_cs, src_ns;  // channel / batch strides of the source
  i64 out_cs, out_ns;
  int Kc, Ncols;       // reduced channels per group, destination channels per group
  i64 wgs, wcs, wjs;   // weight strides: group, reduced channel, destination channel
  int ncls[3];
  int g0, cls0;        // offsets of chunked launches
  ConvGeo geo;
};

template <typename Acc, int N>
__device__ __forceinline__ void lds_vec(Acc (&dst)[N], const Acc* p) {
  if constexpr (sizeof(Acc) == 4) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(p + i);
      dst[i] = v.x; dst[i + 1] = v.y; dst[i + 2] = v.z; dst[i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      const double2 v = *reinterpret_cast<const double2*>(p + i);
      dst[i] = v.x; dst[i + 1] = v.y;
    }
  }
}

// 4-byte cp.async (sm_80+) with zero fill: copies `bytes` (4 or 0) bytes from gsrc and zero-fills the rest.
__device__ __forceinline__ void cp_async4(void* sdst, const void* gsrc, int bytes) {
  const unsigned sa = static_cast<unsigned>(__cvta_generic_to_shared(sdst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(sa), "l"(gsrc), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

template <bool MMA, int BN> struct GemmCfg {
  static constexpr int BM = 128;
  static constexpr int BK = MMA ? 16 : 8;
  static constexpr int NT = MMA ? 256 : (BM / 8) * (BN / 4);
};
// 16-bit tensor-core tiles take 32 k per stage (more math per global round trip); tf32 keeps 16 (48 KB limit).
template <typename ST, bool MMA, int BN> struct GemmBK {
  static constexpr int value = (MMA && sizeof(ST) == 2) ? 32 : GemmCfg<MMA, BN>::BK;
};

// T: storage type; ST: shared-memory operand type; BN: destination-channel tile; MMA: tensor cores.
template <typename T, typename ST, typename Acc, int BN, bool MMA, bool DGRAD>
__global__ void __launch_bounds__(GemmCfg<MMA, BN>::NT, 512 / GemmCfg<MMA, BN>::NT)
gemm_conv_kernel(const GemmArgs a) {
  constexpr int BM = GemmCfg<MMA, BN>::BM;
  constexpr int BK = GemmBK<ST, MMA, BN>::value;
  constexpr int NT = GemmCfg<MMA, BN>::NT;
  constexpr int NW = NT / 32;
  constexpr int AROWS = BK / NW;
  constexpr int AM = BM / 32;
  constexpr int BPER = BK * BN / NT;
  constexpr int PAD = MMA ? (sizeof(ST) == 2 ? 8 : 4) : 0;
  constexpr int LDA = BM + PAD, LDB = BN + PAD;
  // float32 storage: operands are copied global -> shared by cp.async (no register staging), STAGES deep;
  // other types: register prefetch + double buffer.
  constexpr bool ASYNC = (MMA ? kGemmAsync : kGemmAsyncFfma) && std::is_same<T, float>::value &&
                         std::is_same<ST, float>::value;
  constexpr int STAGES = ASYNC ? (MMA ? 3 : 4) : 2;
  constexpr int TILE_BYTES = STAGES * BK * (LDA + LDB) * (int)sizeof(ST);
  constexpr int LDC = BM + 4;
  constexpr int C_BYTES = MMA ? BN * LDC * 4 : 0;
  constexpr int RAW = TILE_BYTES > C_BYTES ? TILE_BYTES : C_BYTES;
  static_assert(AROWS * NW == BK, "rows per warp");
  static_assert(BPER * NT == BK * BN, "B per thread");

  __shared__ __align__(128) unsigned char raw[RAW];
  __shared__ i64 s_msrc[BM];
  __shared__ i64 s_mout[BM];
  __shared__ int s_mc[3][BM];
  __shared__ int4 s_tap[kTapCap];
  __shared__ i64 s_tlin[kTapCap];

  ST* As = reinterpret_cast<ST*>(raw);
  ST* Bs = As + STAGES * BK * LDA;

  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = blockIdx.z + a.g0;
  const int cls = blockIdx.y + a.cls0;
  int rho[3];
  rho[2] = cls % a.ncls[2];
  rho[1] = (cls / a.ncls[2]) % a.ncls[1];
  rho[0] = cls / (a.ncls[2] * a.ncls[1]);
  AxisPlan P[3];
#pragma unroll
  for (int ax = 0; ax < 3; ++ax) P[ax] = axis_plan<DGRAD>(a.geo, ax, rho[ax]);

  const i64 msp = (i64)P[0].ext * P[1].ext * P[2].ext;
  const i64 M = a.batch * msp;
  const int ntn = (a.Ncols + BN - 1) / BN;
  const i64 mt = blockIdx.x / ntn;
  const int nt = blockIdx.x - (int)(mt * ntn);
  const i64 m0 = mt * BM;
  if (m0 >= M) return;  // block-uniform
  const int j0 = nt * BN;
  const int ntaps = P[0].ntap * P[1].ntap * P[2].ntap;
  const int K = a.Kc * ntaps;
  const i64 SHW = (i64)a.sdim[1] * a.sdim[2];
  const int SW = a.sdim[2];
  const bool use_table = ntaps <= kTapCap;

  // tap table
  const int n12 = P[1].ntap * P[2].ntap;
  auto tap_info = [&](int i, int4& ti, i64& lin) {
    const int id = i / n12;
    const int r = i - id * n12;
    const int ih = r / P[2].ntap;
    const int iw = r - ih * P[2].ntap;
    ti.x = P[0].offbase + id * P[0].offstep;
    ti.y = P[1].offbase + ih * P[1].offstep;
    ti.z = P[2].offbase + iw * P[2].offstep;
    const int td = P[0].t0 + id * P[0].tstep, th = P[1].t0 + ih * P[1].tstep, tw = P[2].t0 + iw * P[2].tstep;
    ti.w = (td * a.geo.k[1] + th) * a.geo.k[2] + tw;
    lin = (i64)ti.x * SHW + (i64)ti.y * SW + ti.z;
  };
  if (use_table) {
    for (int i = tid; i < ntaps; i += NT) {
      int4 ti; i64 lin;
      tap_info(i, ti, lin);
      s_tap[i] = ti; s_tlin[i] = lin;
    }
  }
  // m table: source base, destination base, base coordinates
  {
    const i64 myx = (i64)P[1].ext * P[2].ext;
    for (int ml = tid; ml < BM; ml += NT) {
      const i64 m = m0 + ml;
      if (m < M) {
        i64 n, r, jz, r2, jy, jx;
        divmod64(m, msp, n, r);
        divmod64(r, myx, jz, r2);
        divmod64(r2, P[2].ext, jy, jx);
        const int bz = (int)jz * P[0].mul, by = (int)jy * P[1].mul, bx = (int)jx * P[2].mul;
        s_msrc[ml] = n * a.src_ns + (i64)g * a.Kc * a.src_cs + (i64)bz * SHW + (i64)by * SW + bx;
        const i64 oz = P[0].o0 + P[0].ostep * jz, oy = P[1].o0 + P[1].ostep * jy, ox = P[2].o0 + P[2].ostep * jx;
        s_mout[ml] = n * a.out_ns + (oz * a.odim[1] + oy) * a.odim[2] + ox;
        s_mc[0][ml] = bz; s_mc[1][ml] = by; s_mc[2][ml] = bx;
      } else {
        s_msrc[ml] = 0; s_mout[ml] = -1;
        s_mc[0][ml] = kInvalid; s_mc[1][ml] = kInvalid; s_mc[2][ml] = kInvalid;
      }
    }
  }
  __syncthreads();

  i64 r_src[AM];
  int r_bz[AM], r_by[AM], r_bx[AM];
#pragma unroll
  for (int i = 0; i < AM; ++i) {
    const int ml = lane + 32 * i;
    r_src[i] = s_msrc[ml]; r_bz[i] = s_mc[0][ml]; r_by[i] = s_mc[1][ml]; r_bx[i] = s_mc[2][ml];
  }
  const int SD = a.sdim[0], SH = a.sdim[1];

  // incremental (channel, tap) state of the k indices this thread loads
  const int bk_div = ntaps > 0 ? BK / ntaps : 0;
  const int bk_mod = ntaps > 0 ? BK - bk_div * ntaps : 0;
  int a_c[AROWS], a_t[AROWS];
#pragma unroll
  for (int r = 0; r < AROWS; ++r) {
    const int kl = warp + NW * r;
    a_c[r] = ntaps > 0 ? kl / ntaps : 0;
    a_t[r] = ntaps > 0 ? kl - a_c[r] * ntaps : 0;
  }
  // B elements of this thread: k = tid % BK (the same for all e since NT % BK == 0), j = tid / BK + (NT / BK) * e
  static_assert(NT % BK == 0, "B mapping");
  const int b_kl = tid % BK;
  const int b_jl0 = tid / BK;
  int b_c = ntaps > 0 ? b_kl / ntaps : 0;
  int b_t = ntaps > 0 ? b_kl - b_c * ntaps : 0;
  const i64 b_base = (i64)g * a.wgs + (i64)(j0 + b_jl0) * a.wjs;
  const i64 b_estep = (i64)(NT / BK) * a.wjs;

  ST ra[AROWS][AM];
  ST rb[BPER];

  auto gload = [&]() {
#pragma unroll
    for (int r = 0; r < AROWS; ++r) {
      const int c = a_c[r];
      if (c < a.Kc) {
        int4 ti; i64 lin;
        if (use_table) { ti = s_tap[a_t[r]]; lin = s_tlin[a_t[r]]; } else { tap_info(a_t[r], ti, lin); }
        const i64 clin = (i64)c * a.src_cs + lin;
#pragma unroll
        for (int i = 0; i < AM; ++i) {
          const int iz = r_bz[i] + ti.x, iy = r_by[i] + ti.y, ix = r_bx[i] + ti.z;
          const bool ok = (unsigned)iz < (unsigned)SD && (unsigned)iy < (unsigned)SH && (unsigned)ix < (unsigned)SW;
          ra[r][i] = ok ? cvt<ST>(src[r_src[i] + clin]) : zero_of<ST>();
        }
      } else {
#pragma unroll
        for (int i = 0; i < AM; ++i) ra[r][i] = zero_of<ST>();
      }
    }
    {
      const int c = b_c;
      int tf = 0;
      if (c < a.Kc) {
        if (use_table) { tf = s_tap[b_t].w; } else { int4 ti; i64 lin; tap_info(b_t, ti, lin); tf = ti.w; }
      }
      const i64 wofs = b_base + (i64)c * a.wcs + tf;
#pragma unroll
      for (int e = 0; e < BPER; ++e) {
        const int jl = b_jl0 + (NT / BK) * e;
        rb[e] = (c < a.Kc && j0 + jl < a.Ncols) ? cvt<ST>(wt[wofs + e * b_estep]) : zero_of<ST>();
      }
    }
  };
  auto advance = [&]() {
#pragma unroll
    for (int r = 0; r < AROWS; ++r) {
      a_t[r] += bk_mod; a_c[r] += bk_div;
      if (a_t[r] >= ntaps) { a_t[r] -= ntaps; ++a_c[r]; }
    }
    b_t += bk_mod; b_c += bk_div;
    if (b_t >= ntaps) { b_t -= ntaps; ++b_c; }
  };
  auto sstore = [&](int buf) {
    ST* A = As + buf * BK * LDA;
    ST* B = Bs + buf * BK * LDB;
#pragma unroll
    for (int r = 0; r < AROWS; ++r) {
      const int kl = warp + NW * r;
#pragma unroll
      for (int i = 0; i < AM; ++i) A[kl * LDA + lane + 32 * i] = ra[r][i];
    }
#pragma unroll
    for (int e = 0; e < BPER; ++e) B[b_kl * LDB + b_jl0 + (NT / BK) * e] = rb[e];
  };

  // cp.async version of gload + sstore (float32 only): same elements, same zero fill.
  auto aload = [&](int buf) {
    if constexpr (ASYNC) {
      ST* A = As + buf * BK * LDA;
      ST* B = Bs + buf * BK * LDB;
#pragma unroll
      for (int r = 0; r < AROWS; ++r) {
        const int kl = warp + NW * r;
        const int c = a_c[r];
        if (c < a.Kc) {
          int4 ti; i64 lin;
          if (use_table) { ti = s_tap[a_t[r]]; lin = s_tlin[a_t[r]]; } else { tap_info(a_t[r], ti, lin); }
          const i64 clin = (i64)c * a.src_cs + lin;
#pragma unroll
          for (int i = 0; i < AM; ++i) {
            const int iz = r_bz[i] + ti.x, iy = r_by[i] + ti.y, ix = r_bx[i] + ti.z;
            const bool ok =
                (unsigned)iz < (unsigned)SD && (unsigned)iy < (unsigned)SH && (unsigned)ix < (unsigned)SW;
            cp_async4(A + kl * LDA + lane + 32 * i, ok ? src + (r_src[i] + clin) : src, ok ? 4 : 0);
          }
        } else {
#pragma unroll
          for (int i = 0; i < AM; ++i) cp_async4(A + kl * LDA + lane + 32 * i, src, 0);
        }
      }
      const int c = b_c;
      int tf = 0;
      if (c < a.Kc) {
        if (use_table) { tf = s_tap[b_t].w; } else { int4 ti; i64 lin; tap_info(b_t, ti, lin); tf = ti.w; }
      }
      const i64 wofs = b_base + (i64)c * a.wcs + tf;
#pragma unroll
      for (int e = 0; e < BPER; ++e) {
        const int jl = b_jl0 + (NT / BK) * e;
        const bool ok = c < a.Kc && j0 + jl < a.Ncols;
        cp_async4(B + b_kl * LDB + jl, ok ? wt + (wofs + e * b_estep) : wt, ok ? 4 : 0);
      }
    } else {
      (void)buf;
    }
  };

  const int nk = (K + BK - 1) / BK;
  // Runs the k loop; compute(A, B) consumes one staged k-tile. Ends with a barrier after the last compute, with no
  // copy in flight (the MMA epilogue reuses the tile memory).
  auto kloop = [&](auto&& compute) {
    if (nk <= 0) return;
    if constexpr (ASYNC) {
#pragma unroll
      for (int s = 0; s < STAGES - 1; ++s) {
        if (s < nk) { aload(s); advance(); }
        cp_async_commit();
      }
      for (int kt = 0; kt < nk; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt visible to all; everyone is done with tile kt - 1
        const int buf = kt % STAGES;
        compute(As + buf * BK * LDA, Bs + buf * BK * LDB);
        const int nx = kt + STAGES - 1;
        if (nx < nk) { aload(nx % STAGES); advance(); }
        cp_async_commit();
      }
      cp_async_wait<0>();
      __syncthreads();
    } else {
      gload(); sstore(0);
      __syncthreads();
      for (int kt = 0; kt < nk; ++kt) {
        const bool more = kt + 1 < nk;
        if (more) { advance(); gload(); }
        compute(As + (kt & 1) * BK * LDA, Bs + (kt & 1) * BK * LDB);
        if (more) sstore((kt + 1) & 1);
        __syncthreads();
      }
    }
  };

  if constexpr (!MMA) {
    constexpr int TMN = BM / 8;  // threads along m
    const int tm = tid % TMN, tn = tid / TMN;
    Acc acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0;

    kloop([&](const ST* As_, const ST* Bs_) {
        const Acc* A = reinterpret_cast<const Acc*>(As_);
        const Acc* B = reinterpret_cast<const Acc*>(Bs_);
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
          Acc av[8], bv[4];
          Acc a0[4], a1[4];
          lds_vec(a0, A + kk * LDA + tm * 4);
          lds_vec(a1, A + kk * LDA + BM / 2 + tm * 4);
          lds_vec(bv, B + kk * LDB + tn * 4);
#pragma unroll
          for (int i = 0; i < 4; ++i) { av[i] = a0[i]; av[4 + i] = a1[i]; }
#pragma unroll
          for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
    });
    // epilogue
    const T* bias = static_cast<const T*>(a.bias);
    Acc bj[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int jj = j0 + tn * 4 + j;
      bj[j] = (bias != nullptr && jj < a.Ncols) ? cvt<Acc>(bias[(i64)g * a.Ncols + jj]) : Acc(0);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int mlb = h * (BM / 2) + tm * 4;
      i64 ob[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) ob[i] = s_mout[mlb + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int jj = j0 + tn * 4 + j;
        if (jj >= a.Ncols) continue;
        const i64 cofs = (i64)(g * (i64)a.Ncols + jj) * a.out_cs;
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (ob[i] >= 0) out[ob[i] + cofs] = cvt<T>(acc[h * 4 + i][j] + bj[j]);
      }
    }
  } else {
    using namespace nvcuda;
    constexpr bool TF32 = std::is_same<ST, float>::value;
    constexpr int WK = TF32 ? 8 : 16;
    using AType = typename std::conditional<TF32, wmma::precision::tf32, ST>::type;
    const int wm = warp & 3, wn = warp >> 2;  // 4 x 2 warps, 32 x 32 each
    wmma::fragment<wmma::accumulator, 16, 16, WK, float> cf[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(cf[i][j], 0.0f);
    kloop([&](const ST* A, const ST* B) {
#pragma unroll
        for (int kk = 0; kk < BK; kk += WK) {
          wmma::fragment<wmma::matrix_a, 16, 16, WK, AType, wmma::col_major> fa[2];
          wmma::fragment<wmma::matrix_b, 16, 16, WK, AType, wmma::row_major> fb[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            wmma::load_matrix_sync(fa[i], A + kk * LDA + wm * 32 + i * 16, LDA);
            if constexpr (TF32) {
#pragma unroll
              for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = wmma::__float_to_tf32(fa[i].x[t]);
            }
          }
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            wmma::load_matrix_sync(fb[j], B + kk * LDB + wn * 32 + j * 16, LDB);
            if constexpr (TF32) {
#pragma unroll
              for (int t = 0; t < fb[j].num_elements; ++t) fb[j].x[t] = wmma::__float_to_tf32(fb[j].x[t]);
            }
          }
#pragma unroll
          for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(cf[i][j], fa[i], fb[j], cf[i][j]);
        }
    });
    float* Cs = reinterpret_cast<float*>(raw);  // tiles are dead: the k loop ended with a barrier (or never ran)
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(Cs + (wn * 32 + j * 16) * LDC + wm * 32 + i * 16, cf[i][j], LDC,
                                wmma::mem_col_major);
    __syncthreads();
    const T* bias = static_cast<const T*>(a.bias);
#pragma unroll 4
    for (int e = 0; e < BM * BN / NT; ++e) {
      const int idx = tid + NT * e;
      const int ml = idx % BM, jl = idx / BM;
      const int jj = j0 + jl;
      const i64 ob = s_mout[ml];
      if (jj < a.Ncols && ob >= 0) {
        float v = Cs[jl * LDC + ml];
        if (bias != nullptr) v += cvt<float>(bias[(i64)g * a.Ncols + jj]);
        out[ob + (i64)(g * (i64)a.Ncols + jj) * a.out_cs] = cvt<T>(v);
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------------------
// Depthwise direct stencil (forward; grad-input when every stride is 1).
struct StencilArgs {
  const void* src;
  const void* wt;
  const void* bias;
  void* out;
  int OC, OCB, SC, nsrc, Og;
  int dgrad;
  int od[3], sd[3], k[3], st[3], base[3], tstep[3], E[3], lo[3], ntile[3];
};
constexpr int kSTX = 32, kSTY = 8, kSTZ = 8;

// CO output channels per block share every staged source tile (grad-input of small C/groups: CO = C/groups).
// SLIDE (depth kernel 3, depth stride 1, |depth tap step| 1): the kSTZ + 2 source rows of one (t1, t2) column are
// read once from shared memory and reused by the three depth taps.
template <typename T, typename Acc, int CO, bool SLIDE>
__global__ void __launch_bounds__(256, (SLIDE || sizeof(Acc) == 8) ? 1 : 3)
stencil_kernel(const StencilArgs a) {
  extern __shared__ __align__(16) unsigned char dsm[];
  const int E0 = a.E[0], E1 = a.E[1], E2 = a.E[2];
  const int E12 = E1 * E2;
  Acc* tile = reinterpret_cast<Acc*>(dsm);
  Acc* ws = tile + (i64)E0 * E12;
  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);

  i64 b = blockIdx.x;
  const int tx = (int)(b % a.ntile[2]); b /= a.ntile[2];
  const int ty = (int)(b % a.ntile[1]); b /= a.ntile[1];
  const int tz = (int)(b % a.ntile[0]); b /= a.ntile[0];
  const int ocb = (int)(b % a.OCB);
  const i64 n = b / a.OCB;
  const int tid = threadIdx.x, lx = tid & 31, ly = tid >> 5;
  const int org0 = tz * kSTZ * a.st[0] + a.base[0] + a.lo[0];
  const int org1 = ty * kSTY * a.st[1] + a.base[1] + a.lo[1];
  const int org2 = tx * kSTX * a.st[2] + a.base[2] + a.lo[2];
  const int T_ = a.k[0] * a.k[1] * a.k[2];
  const i64 sp = (i64)a.sd[0] * a.sd[1] * a.sd[2];
  const i64 shw = (i64)a.sd[1] * a.sd[2];

  Acc acc[CO][kSTZ];
#pragma unroll
  for (int co = 0; co < CO; ++co)
#pragma unroll
    for (int z = 0; z < kSTZ; ++z) acc[co][z] = 0;
  const int lbase = (ly * a.st[1] - a.lo[1]) * E2 + lx * a.st[2] - a.lo[2];
  const int zstep = a.st[0] * E12;

  for (int u = 0; u < a.nsrc; ++u) {
    const int sch = a.dgrad ? ocb * a.Og + u : ocb / a.Og;
    const i64 wrow = a.dgrad ? (i64)ocb * a.Og + u : ocb;
    if (u > 0) __syncthreads();
    for (int t = tid; t < CO * T_; t += 256) ws[t] = cvt<Acc>(wt[wrow * CO * T_ + t]);
    const T* sc = src + (n * a.SC + sch) * sp;
    for (int row = ly; row < E0 * E1; row += 8) {
      const int z = row / E1, y = row - z * E1;
      const int gz = org0 + z, gy = org1 + y;
      const bool rok = (unsigned)gz < (unsigned)a.sd[0] && (unsigned)gy < (unsigned)a.sd[1];
      const T* sr = sc + (i64)gz * shw + (i64)gy * a.sd[2];
      Acc* trow = tile + (i64)row * E2;
      for (int x = lx; x < E2; x += 32) {
        const int gx = org2 + x;
        trow[x] = (rok && (unsigned)gx < (unsigned)a.sd[2]) ? cvt<Acc>(sr[gx]) : Acc(0);
      }
    }
    __syncthreads();
    if constexpr (SLIDE) {
      // row of (z, t0) = z + t0 * tstep0 - lo0 = z + j with j = t0 (tstep0 = 1) or 2 - t0 (tstep0 = -1)
      const int k12 = a.k[1] * a.k[2];
      const int jstep = a.tstep[0] < 0 ? -k12 : k12;   // tap step of j
      const Acc* wj0 = ws + (a.tstep[0] < 0 ? 2 * k12 : 0);
      for (int t1 = 0; t1 < a.k[1]; ++t1) {
        const int o1 = lbase + t1 * a.tstep[1] * E2;
        for (int t2 = 0; t2 < a.k[2]; ++t2) {
          const int o2 = o1 + t2 * a.tstep[2];
          Acc tv[kSTZ + 2];
#pragma unroll
          for (int r = 0; r < kSTZ + 2; ++r) tv[r] = tile[o2 + r * E12];
          const Acc* wt12 = wj0 + t1 * a.k[2] + t2;
#pragma unroll
          for (int j = 0; j < 3; ++j) {
#pragma unroll
            for (int co = 0; co < CO; ++co) {
              const Acc wv = wt12[co * T_ + j * jstep];
#pragma unroll
              for (int z = 0; z < kSTZ; ++z) acc[co][z] = fma(wv, tv[z + j], acc[co][z]);
            }
          }
        }
      }
    } else {
    int tap = 0;
    for (int t0 = 0; t0 < a.k[0]; ++t0) {
      const int o0 = (t0 * a.tstep[0] - a.lo[0]) * E12 + lbase;
      for (int t1 = 0; t1 < a.k[1]; ++t1) {
        const int o1 = o0 + t1 * a.tstep[1] * E2;
        for (int t2 = 0; t2 < a.k[2]; ++t2, ++tap) {
          const int o2 = o1 + t2 * a.tstep[2];
          Acc tv[kSTZ];
#pragma unroll
          for (int z = 0; z < kSTZ; ++z) tv[z] = tile[o2 + z * zstep];
#pragma unroll
          for (int co = 0; co < CO; ++co) {
            const Acc wv = ws[co * T_ + tap];
#pragma unroll
            for (int z = 0; z < kSTZ; ++z) acc[co][z] = fma(wv, tv[z], acc[co][z]);
          }
        }
      }
    }
    }
  }
  const int oy = ty * kSTY + ly, ox = tx * kSTX + lx;
  if (oy < a.od[1] && ox < a.od[2]) {
    const T* bias = static_cast<const T*>(a.bias);
#pragma unroll
    for (int co = 0; co < CO; ++co) {
      const int oc = a.dgrad ? ocb * CO + co : ocb;
      const Acc bv = bias != nullptr ? cvt<Acc>(bias[oc]) : Acc(0);
      const i64 obase = (n * a.OC + oc) * ((i64)a.od[0] * a.od[1] * a.od[2]) + (i64)oy * a.od[2] + ox;
#pragma unroll
      for (int z = 0; z < kSTZ; ++z) {
        const int oz = tz * kSTZ + z;
        if (oz < a.od[0]) out[obase + (i64)oz * a.od[1] * a.od[2]] = cvt<T>(acc[co][z] + bv);
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------------------
// Grad-weight GEMM: M = O/groups (o), N = (C/groups)*taps (ct), K = batch*Do*Ho*Wo split into S chunks.
struct WgArgs {
  const void* x;
  const void* dy;
  void* dw;     // final output when S == 1
  void* ws;     // partials [S][w_elements] when S > 1
  i64 batch;
  int C, O, Cg, Og, T, Ncol;
  int S;
  i64 wel;
  int g0;
  ConvGeo geo;
};

template <typename Acc> struct WgCfg { static constexpr int BK = 16; };

// Shared by both grad-weight kernels: for the block's BN columns (c, tap) of the filter, the tap's input offset
// per axis (s_coff; kInvalid past the last column) and its linear offset in one (n, group) input volume (s_clin).
template <int NT, int BN>
__device__ __forceinline__ void wgrad_column_table(const WgArgs& a, int n0, int tid, int k12, i64 HW, i64 DHW, int W,
                                                   int4* s_coff, i64* s_clin) {
  const ConvGeo& G = a.geo;
  for (int cl = tid; cl < BN; cl += NT) {
    const int ct = n0 + cl;
    if (ct < a.Ncol) {
      const int c = ct / a.T, tap = ct - c * a.T;
      const int td = tap / k12, r = tap - td * k12, th = r / G.k[2], tw = r - th * G.k[2];
      const int oz = td * G.dl[0], oy = th * G.dl[1], ox = tw * G.dl[2];
      s_coff[cl] = make_int4(oz, oy, ox, 0);
      s_clin[cl] = (i64)c * DHW + (i64)oz * HW + (i64)oy * W + ox;
    } else {
      s_coff[cl] = make_int4(kInvalid, kInvalid, kInvalid, 0); s_clin[cl] = 0;
    }
  }
}

// Reduction position p = (n, zo, yo, xo) of group g: its offset in dy, the offset in x of the input corner that tap
// (0, 0, 0) reads, and that corner per axis (taps add their offsets to it, and bounds are tested on it).
struct WgPos {
  i64 pdy, px;
  int bz, by, bx;
};
__device__ __forceinline__ WgPos wgrad_position(const WgArgs& a, int g, i64 p, i64 Osp, i64 OHW, i64 HW, i64 DHW,
                                                int W) {
  const ConvGeo& G = a.geo;
  i64 n, sp, zo, r, yo, xo;
  divmod64(p, Osp, n, sp);
  divmod64(sp, OHW, zo, r);
  divmod64(r, G.yd[2], yo, xo);
  WgPos q;
  q.bz = (int)zo * G.s[0] - G.pl[0];
  q.by = (int)yo * G.s[1] - G.pl[1];
  q.bx = (int)xo * G.s[2] - G.pl[2];
  q.pdy = (n * a.O + (i64)g * a.Og) * Osp + sp;
  q.px = (n * a.C + (i64)g * a.Cg) * DHW + (i64)q.bz * HW + (i64)q.by * W + q.bx;
  return q;
}

// The split's slice [kb, ke) of the reduction over P = N*Do*Ho*Wo positions: S equal chunks rounded up to BK.
template <int BK>
__device__ __forceinline__ void wgrad_split_range(i64 P, int S, int split, i64* kb, i64* ke) {
  i64 chunk = (P + S - 1) / S;
  chunk = (chunk + BK - 1) / BK * BK;
  *kb = (i64)split * chunk;
  *ke = *kb + chunk < P ? *kb + chunk : P;
}


template <int BMO> struct WgTile {
  static constexpr int BN = BMO == 16 ? 256 : 8192 / BMO;   // 64 -> 128, 32 -> 256, 16 -> 256
  static constexpr int NT = (BMO / 8) * (BN / 8);            // 128, 128, 64
};
template <typename T, typename Acc, int BMO>
__global__ void __launch_bounds__(WgTile<BMO>::NT) wgrad_kernel(const WgArgs a) {
  constexpr int BN = WgTile<BMO>::BN;
  constexpr int NT = WgTile<BMO>::NT;
  constexpr int BK = WgCfg<Acc>::BK;
  constexpr int APER = BK * BMO / NT;
  constexpr int BPER = BK * BN / NT;
  static_assert(APER >= 1 && APER * NT == BK * BMO, "A per thread");
  __shared__ __align__(16) Acc As[BK][BMO];
  __shared__ __align__(16) Acc Bs[BK][BN];
  __shared__ i64 s_clin[BN];
  __shared__ int4 s_coff[BN];
  __shared__ i64 s_pdy[BK], s_px[BK];
  __shared__ int4 s_pc[BK];

  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const int tid = threadIdx.x;
  const int g = blockIdx.z + a.g0;
  const int split = blockIdx.y;
  const int ntn = (a.Ncol + BN - 1) / BN;
  const int mtile = blockIdx.x / ntn, ntile = blockIdx.x - mtile * ntn;
  const int m0 = mtile * BMO, n0 = ntile * BN;
  const ConvGeo& G = a.geo;
  const int D = G.xd[0], H = G.xd[1], W = G.xd[2];
  const i64 HW = (i64)H * W, DHW = HW * D;
  const i64 Osp = (i64)G.yd[0] * G.yd[1] * G.yd[2];
  const i64 OHW = (i64)G.yd[1] * G.yd[2];
  const int k12 = G.k[1] * G.k[2];

  wgrad_column_table<NT, BN>(a, n0, tid, k12, HW, DHW, W, s_coff, s_clin);
  const i64 P = a.batch * Osp;
  i64 kb, ke;
  wgrad_split_range<BK>(P, a.S, split, &kb, &ke);

  const int tn = tid % (BN / 8), tm = tid / (BN / 8);
  Acc acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0;

  for (i64 kt = kb; kt < ke; kt += BK) {
    if (tid < BK) {
      const i64 p = kt + tid;
      if (p < ke) {
        const WgPos q = wgrad_position(a, g, p, Osp, OHW, HW, DHW, W);
        s_pdy[tid] = q.pdy;
        s_px[tid] = q.px;
        s_pc[tid] = make_int4(q.bz, q.by, q.bx, 0);
      } else {
        s_pdy[tid] = -1; s_px[tid] = 0;
        s_pc[tid] = make_int4(kInvalid, kInvalid, kInvalid, 0);
      }
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < APER; ++e) {
      const int idx = tid + NT * e;
      const int kl = idx % BK, ol = idx / BK;
      const i64 pdy = s_pdy[kl];
      const int o = m0 + ol;
      As[kl][ol] = (pdy >= 0 && o < a.Og) ? cvt<Acc>(dy[pdy + (i64)o * Osp]) : Acc(0);
    }
#pragma unroll 4
    for (int e = 0; e < BPER; ++e) {
      const int idx = tid + NT * e;
      const int kl = idx % BK, cl = idx / BK;
      const int4 pc = s_pc[kl], co = s_coff[cl];
      const int iz = pc.x + co.x, iy = pc.y + co.y, ix = pc.z + co.z;
      const bool ok = (unsigned)iz < (unsigned)D && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W;
      Bs[kl][cl] = ok ? cvt<Acc>(x[s_px[kl] + s_clin[cl]]) : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      Acc av[8], bv[8], t4[4];
      lds_vec(t4, &As[kk][tm * 4]);
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = t4[i];
      lds_vec(t4, &As[kk][BMO / 2 + tm * 4]);
#pragma unroll
      for (int i = 0; i < 4; ++i) av[4 + i] = t4[i];
      lds_vec(t4, &Bs[kk][tn * 4]);
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = t4[j];
      lds_vec(t4, &Bs[kk][BN / 2 + tn * 4]);
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[4 + j] = t4[j];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int o = m0 + (i < 4 ? tm * 4 + i : BMO / 2 + tm * 4 + (i - 4));
    if (o >= a.Og) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int ct = n0 + (j < 4 ? tn * 4 + j : BN / 2 + tn * 4 + (j - 4));
      if (ct >= a.Ncol) continue;
      const i64 e = ((i64)g * a.Og + o) * a.Ncol + ct;
      if (a.S == 1) static_cast<T*>(a.dw)[e] = cvt<T>(acc[i][j]);
      else static_cast<Acc*>(a.ws)[(i64)split * a.wel + e] = acc[i][j];
    }
  }
}

// Pipelined grad-weight GEMM for Og > 32: 64 (o) x 128 (c*taps) tile, double-buffered shared memory with a register
// prefetch of the next k-tile (one barrier per k-tile). Every thread owns one position k = tid % BK of each k-tile
// (so it decodes that position itself; no per-tile table and no extra barrier) and the rows tid / BK + (NT / BK) * e.
//  * MMA = false: FFMA, 128 threads, 8x8 register micro-tile (float32 accurate).
//  * MMA = true: WMMA, 256 threads = 2 (o) x 4 (ct) warps of 32x32 (tf32 m16n16k8 with operands rounded to tf32
//    when they are staged; bf16/f16 m16n16k16), fp32 accumulate.
// The summation order of every output element is fixed by the tile loop (deterministic); the split partials are
// summed by splits_reduce_kernel exactly as for wgrad_kernel (same plan, same workspace size).
template <bool MMA> struct WgPipe {
  static constexpr int BMO = 64, BN = 128;
  static constexpr int NT = MMA ? 256 : 128;
};
template <typename T, typename ST, int BK, bool MMA>
__global__ void __launch_bounds__(WgPipe<MMA>::NT, MMA ? 2 : 3) wgrad_pipe_kernel(const WgArgs a) {
  constexpr int BMO = WgPipe<MMA>::BMO, BN = WgPipe<MMA>::BN, NT = WgPipe<MMA>::NT;
  static_assert(NT % BK == 0, "k mapping");
  constexpr int KSTEP = NT / BK;  // row stride of one thread's elements
  constexpr int APER = BMO / KSTEP, BPER = BN / KSTEP;
  static_assert(APER * KSTEP == BMO && BPER * KSTEP == BN, "per-thread elements");
  constexpr int PAD = (MMA && sizeof(ST) == 2) ? 8 : 4;
  constexpr int LDA = BMO + PAD, LDB = BN + PAD;
  constexpr int TILE_BYTES = 2 * BK * (LDA + LDB) * (int)sizeof(ST);
  constexpr int LDC = BN + 4;
  constexpr int C_BYTES = MMA ? BMO * LDC * 4 : 0;
  constexpr int RAW = TILE_BYTES > C_BYTES ? TILE_BYTES : C_BYTES;
  __shared__ __align__(128) unsigned char raw[RAW];
  __shared__ i64 s_clin[BN];
  __shared__ int4 s_coff[BN];
  ST* As = reinterpret_cast<ST*>(raw);
  ST* Bs = As + 2 * BK * LDA;

  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const int tid = threadIdx.x;
  const int g = blockIdx.z + a.g0;
  const int split = blockIdx.y;
  const int ntn = (a.Ncol + BN - 1) / BN;
  const int mtile = blockIdx.x / ntn, ntile = blockIdx.x - mtile * ntn;
  const int m0 = mtile * BMO, n0 = ntile * BN;
  const ConvGeo& G = a.geo;
  const int D = G.xd[0], H = G.xd[1], W = G.xd[2];
  const i64 HW = (i64)H * W, DHW = HW * D;
  const i64 Osp = (i64)G.yd[0] * G.yd[1] * G.yd[2];
  const i64 OHW = (i64)G.yd[1] * G.yd[2];
  const int k12 = G.k[1] * G.k[2];

  wgrad_column_table<NT, BN>(a, n0, tid, k12, HW, DHW, W, s_coff, s_clin);
  const i64 P = a.batch * Osp;
  i64 kb, ke;
  wgrad_split_range<BK>(P, a.S, split, &kb, &ke);
  const int nk = ke > kb ? (int)((ke - kb + BK - 1) / BK) : 0;

  const int kl = tid % BK, rl = tid / BK;
  ST ra[APER], rb[BPER];

  auto gload = [&](int it) {
    const i64 p = kb + (i64)it * BK + kl;
    i64 pdy = -1, px = 0;
    int bz = kInvalid, by = kInvalid, bx = kInvalid;
    if (p < ke) {
      const WgPos q = wgrad_position(a, g, p, Osp, OHW, HW, DHW, W);
      bz = q.bz; by = q.by; bx = q.bx;
      pdy = q.pdy;
      px = q.px;
    }
#pragma unroll
    for (int e = 0; e < APER; ++e) {
      const int o = m0 + rl + KSTEP * e;
      ra[e] = (pdy >= 0 && o < a.Og) ? cvt<ST>(dy[pdy + (i64)o * Osp]) : zero_of<ST>();
    }
#pragma unroll
    for (int e = 0; e < BPER; ++e) {
      const int cl = rl + KSTEP * e;
      const int4 co = s_coff[cl];
      const int iz = bz + co.x, iy = by + co.y, ix = bx + co.z;
      const bool ok = (unsigned)iz < (unsigned)D && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W;
      rb[e] = ok ? cvt<ST>(x[px + s_clin[cl]]) : zero_of<ST>();
    }
  };
  auto sstore = [&](int buf) {
    ST* A = As + buf * BK * LDA + kl * LDA + rl;
    ST* B = Bs + buf * BK * LDB + kl * LDB + rl;
#pragma unroll
    for (int e = 0; e < APER; ++e) {
      if constexpr (MMA && std::is_same<ST, float>::value) A[KSTEP * e] = nvcuda::wmma::__float_to_tf32(ra[e]);
      else A[KSTEP * e] = ra[e];
    }
#pragma unroll
    for (int e = 0; e < BPER; ++e) {
      if constexpr (MMA && std::is_same<ST, float>::value) B[KSTEP * e] = nvcuda::wmma::__float_to_tf32(rb[e]);
      else B[KSTEP * e] = rb[e];
    }
  };

  __syncthreads();  // s_coff / s_clin
  if constexpr (!MMA) {
    using Acc = ST;
    const int tn = tid % (BN / 8), tm = tid / (BN / 8);
    Acc acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = 0;
    if (nk > 0) {
      gload(0); sstore(0);
      __syncthreads();
      for (int it = 0; it < nk; ++it) {
        const bool more = it + 1 < nk;
        if (more) gload(it + 1);
        const Acc* A = As + (it & 1) * BK * LDA;
        const Acc* B = Bs + (it & 1) * BK * LDB;
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
          Acc av[8], bv[8], t4[4];
          lds_vec(t4, A + kk * LDA + tm * 4);
#pragma unroll
          for (int i = 0; i < 4; ++i) av[i] = t4[i];
          lds_vec(t4, A + kk * LDA + BMO / 2 + tm * 4);
#pragma unroll
          for (int i = 0; i < 4; ++i) av[4 + i] = t4[i];
          lds_vec(t4, B + kk * LDB + tn * 4);
#pragma unroll
          for (int j = 0; j < 4; ++j) bv[j] = t4[j];
          lds_vec(t4, B + kk * LDB + BN / 2 + tn * 4);
#pragma unroll
          for (int j = 0; j < 4; ++j) bv[4 + j] = t4[j];
#pragma unroll
          for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        if (more) sstore((it + 1) & 1);
        __syncthreads();
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int o = m0 + (i < 4 ? tm * 4 + i : BMO / 2 + tm * 4 + (i - 4));
      if (o >= a.Og) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int ct = n0 + (j < 4 ? tn * 4 + j : BN / 2 + tn * 4 + (j - 4));
        if (ct >= a.Ncol) continue;
        const i64 e = ((i64)g * a.Og + o) * a.Ncol + ct;
        if (a.S == 1) static_cast<T*>(a.dw)[e] = cvt<T>(acc[i][j]);
        else static_cast<Acc*>(a.ws)[(i64)split * a.wel + e] = acc[i][j];
      }
    }
  } else {
    using namespace nvcuda;
    constexpr bool TF32 = std::is_same<ST, float>::value;
    constexpr int WK = TF32 ? 8 : 16;
    static_assert(BK % WK == 0, "k steps");
    using AType = typename std::conditional<TF32, wmma::precision::tf32, ST>::type;
    const int warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1;  // 2 x 4 warps, 32 x 32 each
    wmma::fragment<wmma::accumulator, 16, 16, WK, float> cf[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(cf[i][j], 0.0f);
    if (nk > 0) {
      gload(0); sstore(0);
      __syncthreads();
      for (int it = 0; it < nk; ++it) {
        const bool more = it + 1 < nk;
        if (more) gload(it + 1);
        const ST* A = As + (it & 1) * BK * LDA;
        const ST* B = Bs + (it & 1) * BK * LDB;
#pragma unroll
        for (int kk = 0; kk < BK; kk += WK) {
          wmma::fragment<wmma::matrix_a, 16, 16, WK, AType, wmma::col_major> fa[2];
          wmma::fragment<wmma::matrix_b, 16, 16, WK, AType, wmma::row_major> fb[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], A + kk * LDA + wm * 32 + i * 16, LDA);
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], B + kk * LDB + wn * 32 + j * 16, LDB);
#pragma unroll
          for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(cf[i][j], fa[i], fb[j], cf[i][j]);
        }
        if (more) sstore((it + 1) & 1);
        __syncthreads();
      }
    }
    float* Cs = reinterpret_cast<float*>(raw);  // tiles are dead: the k loop ended with a barrier (or never ran)
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, cf[i][j], LDC,
                                wmma::mem_row_major);
    __syncthreads();
#pragma unroll 4
    for (int e = 0; e < BMO * BN / NT; ++e) {
      const int idx = tid + NT * e;
      const int cl = idx % BN, ol = idx / BN;
      const int o = m0 + ol, ct = n0 + cl;
      if (o < a.Og && ct < a.Ncol) {
        const float v = Cs[ol * LDC + cl];
        const i64 el = ((i64)g * a.Og + o) * a.Ncol + ct;
        if (a.S == 1) static_cast<T*>(a.dw)[el] = cvt<T>(v);
        else static_cast<float*>(a.ws)[(i64)split * a.wel + el] = v;
      }
    }
  }
}

// Depthwise grad-weight (C/groups == 1, taps <= 32): block = (output channel, split of the rows n*Do*Ho).
constexpr int kDwMaxT = 32;
// KD, KH, KW > 0: compile-time kernel extents (every tap loop unrolled); 0: any extents with taps <= 32.
template <typename T, typename Acc, int KD, int KH, int KW>
__global__ void __launch_bounds__(256) dw_wgrad_kernel(const WgArgs a) {
  constexpr bool FIXED = KD > 0;
  __shared__ int s_t[3][kDwMaxT];
  __shared__ Acc s_red[8][kDwMaxT];
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const ConvGeo& G = a.geo;
  const int o = (int)(blockIdx.x % a.O);
  const int split = (int)(blockIdx.x / a.O);
  const int c = o / a.Og;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int T_ = a.T;
  if (tid < T_) {
    const int k12 = G.k[1] * G.k[2];
    const int td = tid / k12, r = tid - td * k12, th = r / G.k[2], tw = r - th * G.k[2];
    s_t[0][tid] = td * G.dl[0]; s_t[1][tid] = th * G.dl[1]; s_t[2][tid] = tw * G.dl[2];
  }
  __syncthreads();
  const int D = G.xd[0], H = G.xd[1], W = G.xd[2];
  const int Do = G.yd[0], Ho = G.yd[1], Wo = G.yd[2];
  const i64 HW = (i64)H * W, DHW = HW * D;
  const i64 R = a.batch * Do * Ho;
  const i64 chunk = (R + a.S - 1) / a.S;
  const i64 r0 = (i64)split * chunk;
  const i64 r1 = r0 + chunk < R ? r0 + chunk : R;
  Acc acc[kDwMaxT];
#pragma unroll
  for (int t = 0; t < kDwMaxT; ++t) acc[t] = 0;
  const i64 DoHo = (i64)Do * Ho;
  for (i64 r = r0 + warp; r < r1; r += 8) {
    i64 n, rr, zo, yo;
    divmod64(r, DoHo, n, rr);
    divmod64(rr, Ho, zo, yo);
    const T* dyrow = dy + (((n * a.O + o) * Do + zo) * Ho + yo) * Wo;
    const T* xc = x + (n * a.C + c) * DHW;
    const int bz = (int)zo * G.s[0] - G.pl[0], by = (int)yo * G.s[1] - G.pl[1];
    if constexpr (FIXED) {
      for (int xo = lane; xo < Wo; xo += 32) {
        const Acc gv = cvt<Acc>(dyrow[xo]);
        const int bx = xo * G.s[2] - G.pl[2];
#pragma unroll
        for (int td = 0; td < KD; ++td) {
          const int iz = bz + td * G.dl[0];
          const bool zok = (unsigned)iz < (unsigned)D;
#pragma unroll
          for (int th = 0; th < KH; ++th) {
            const int iy = by + th * G.dl[1];
            const bool rok = zok && (unsigned)iy < (unsigned)H;
            const i64 rofs = (i64)iz * HW + (i64)iy * W;
#pragma unroll
            for (int tw = 0; tw < KW; ++tw) {
              const int ix = bx + tw * G.dl[2];
              if (rok && (unsigned)ix < (unsigned)W)
                acc[(td * KH + th) * KW + tw] = fma(gv, cvt<Acc>(xc[rofs + ix]), acc[(td * KH + th) * KW + tw]);
            }
          }
        }
      }
    } else {
      for (int xo = lane; xo < Wo; xo += 32) {
        const Acc gv = cvt<Acc>(dyrow[xo]);
        const int bx = xo * G.s[2] - G.pl[2];
#pragma unroll
        for (int t = 0; t < kDwMaxT; ++t) {
          if (t < T_) {
            const int iz = bz + s_t[0][t], iy = by + s_t[1][t], ix = bx + s_t[2][t];
            if ((unsigned)iz < (unsigned)D && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W)
              acc[t] = fma(gv, cvt<Acc>(xc[(i64)iz * HW + (i64)iy * W + ix]), acc[t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kDwMaxT; ++t) {
    if (t < T_) {
      Acc v = acc[t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
      if (lane == 0) s_red[warp][t] = v;
    }
  }
  __syncthreads();
  if (tid < T_) {
    Acc v = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) v += s_red[w][tid];
    const i64 e = (i64)o * T_ + tid;
    if (a.S == 1) static_cast<T*>(a.dw)[e] = cvt<T>(v);
    else static_cast<Acc*>(a.ws)[(i64)split * a.wel + e] = v;
  }
}

template <typename T, typename Acc>
__global__ void splits_reduce_kernel(const Acc* __restrict__ ws, T* __restrict__ dw, i64 wel, int S) {
  for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < wel; e += (i64)gridDim.x * blockDim.x) {
    Acc v = 0;
    for (int s = 0; s < S; ++s) v += ws[(i64)s * wel + e];
    dw[e] = cvt<T>(v);
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(256) bgrad_kernel(const T* __restrict__ dy, T* __restrict__ db, i64 batch, int O,
                                                    i64 Osp, int o0) {
  __shared__ Acc s_red[8];
  const int o = blockIdx.x + o0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  Acc v = 0;
  for (i64 n = 0; n < batch; ++n) {
    const T* p = dy + (n * O + o) * Osp;
    for (i64 i = tid; i < Osp; i += 256) v += cvt<Acc>(p[i]);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) s_red[warp] = v;
  __syncthreads();
  if (tid == 0) {
    Acc s = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) s += s_red[w];
    db[o] = cvt<T>(s);
  }
}

// ----------------------------------------------------------------------------------------------------------
// Host side.
std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return "";
  return std::string("jaxconv3d cuda: ") + what + " launch failed: " + cudaGetErrorString(e);
}

constexpr i64 kAxisLimit = i64(1) << 27;

std::string validate(const ConvProblem& p) {
  const std::string msg = p.check();
  if (!msg.empty()) return "jaxconv3d cuda: invalid problem: " + msg;
  for (int a = 0; a < 3; ++a) {
    if (p.in[a] >= kAxisLimit || p.out[a] >= kAxisLimit || p.pad_lo[a] >= kAxisLimit ||
        p.pad_hi[a] >= kAxisLimit || p.stride[a] >= kAxisLimit || p.kernel[a] >= kAxisLimit ||
        p.dilation[a] * p.kernel[a] >= kAxisLimit)
      return "jaxconv3d cuda: a spatial extent, padding, stride or dilated kernel is 2^27 or larger";
  }
  if (p.in_per_group() * p.taps() >= (i64(1) << 30) || p.out_per_group() * p.taps() >= (i64(1) << 30))
    return "jaxconv3d cuda: (channels per group) x taps must be below 2^30";
  if (p.in_channels >= INT_MAX || p.out_channels >= INT_MAX) return "jaxconv3d cuda: too many channels";
  if (p.batch >= (i64(1) << 40)) return "jaxconv3d cuda: batch too large";
  return "";
}

ConvGeo make_geo(const ConvProblem& p) {
  ConvGeo G;
  for (int a = 0; a < 3; ++a) {
    G.xd[a] = (int)p.in[a]; G.yd[a] = (int)p.out[a]; G.k[a] = (int)p.kernel[a];
    G.s[a] = (int)p.stride[a]; G.pl[a] = (int)p.pad_lo[a]; G.dl[a] = (int)p.dilation[a];
  }
  return G;
}

template <typename T, typename ST, typename Acc, int BN, bool MMA, bool DGRAD>
std::string launch_gemm(GemmArgs a, i64 mtiles, int groups, int nclass, cudaStream_t st) {
  using Cfg = GemmCfg<MMA, BN>;
  const i64 ntn = (a.Ncols + BN - 1) / BN;
  const i64 gx = mtiles * ntn;
  if (gx > INT_MAX) return "jaxconv3d cuda: too many tiles for one launch";
  if (gx == 0) return "";
  for (int c0 = 0; c0 < nclass; c0 += 65535) {
    for (int g0 = 0; g0 < groups; g0 += 65535) {
      a.cls0 = c0; a.g0 = g0;
      const dim3 grid((unsigned)gx, (unsigned)std::min(65535, nclass - c0), (unsigned)std::min(65535, groups - g0));
      gemm_conv_kernel<T, ST, Acc, BN, MMA, DGRAD><<<grid, Cfg::NT, 0, st>>>(a);
      const std::string e = launch_error(DGRAD ? "dgrad gemm" : "fwd gemm");
      if (!e.empty()) return e;
    }
  }
  return "";
}

template <typename T, bool DGRAD>
std::string run_gemm(GemmArgs a, i64 mtiles, int groups, int nclass, bool tc, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  if (tc && a.Ncols > 32) {
    if constexpr (std::is_same<T, float>::value)
      return launch_gemm<T, float, float, 64, true, DGRAD>(a, (mtiles), groups, nclass, st);
    else if constexpr (std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value)
      return launch_gemm<T, T, float, 64, true, DGRAD>(a, mtiles, groups, nclass, st);
  }
  if (a.Ncols > 32) return launch_gemm<T, Acc, Acc, 64, false, DGRAD>(a, mtiles, groups, nclass, st);
  if (a.Ncols > 16) return launch_gemm<T, Acc, Acc, 32, false, DGRAD>(a, mtiles, groups, nclass, st);
  return launch_gemm<T, Acc, Acc, 16, false, DGRAD>(a, mtiles, groups, nclass, st);
}

template <typename T>
bool tensor_cores(MathMode m) {
  if (std::is_same<T, float>::value) return m == MathMode::kTF32;
  return !std::is_same<T, double>::value;
}

// Depthwise stencil: returns false (and does nothing) when it does not apply.
template <typename T>
bool try_stencil(const ConvProblem& p, bool dgrad, const void* src, const void* w, const void* bias, void* out,
                 cudaStream_t st, std::string& err) {
  using Acc = typename AccOf<T>::type;
  const i64 Cg = p.in_per_group();
  if (!dgrad && Cg != 1) return false;
  if (dgrad && Cg > 4) return false;
  const int CO = dgrad ? (int)Cg : 1;
  StencilArgs s;
  s.src = src; s.wt = w; s.bias = bias; s.out = out;
  s.dgrad = dgrad ? 1 : 0;
  s.Og = (int)p.out_per_group();
  const int OT[3] = {kSTZ, kSTY, kSTX};
  i64 tiles = 1;
  i64 elems = 1;
  for (int a = 0; a < 3; ++a) {
    if (dgrad && p.stride[a] != 1) return false;
    s.k[a] = (int)p.kernel[a];
    if (!dgrad) {
      s.od[a] = (int)p.out[a]; s.sd[a] = (int)p.in[a]; s.st[a] = (int)p.stride[a];
      s.base[a] = -(int)p.pad_lo[a]; s.tstep[a] = (int)p.dilation[a];
    } else {
      s.od[a] = (int)p.in[a]; s.sd[a] = (int)p.out[a]; s.st[a] = 1;
      s.base[a] = (int)p.pad_lo[a]; s.tstep[a] = -(int)p.dilation[a];
    }
    const i64 span = (i64)(s.k[a] - 1) * s.tstep[a];
    s.lo[a] = (int)(span < 0 ? span : 0);
    const i64 E = (i64)(OT[a] - 1) * s.st[a] + (span < 0 ? -span : span) + 1;
    if (E > 4096) return false;
    s.E[a] = (int)E;
    elems *= E;
    s.ntile[a] = (s.od[a] + OT[a] - 1) / OT[a];
    tiles *= s.ntile[a];
  }
  const i64 smem = (elems + CO * p.taps()) * (i64)sizeof(Acc);
  if (smem > 48 * 1024) return false;
  s.OC = (int)(dgrad ? p.in_channels : p.out_channels);
  s.SC = (int)(dgrad ? p.out_channels : p.in_channels);
  s.OCB = (int)(dgrad ? p.groups : p.out_channels);
  s.nsrc = dgrad ? s.Og : 1;
  const i64 blocks = p.batch * s.OCB * tiles;
  if (blocks > INT_MAX) return false;
  err = "";
  if (blocks == 0) return true;
  const unsigned nb = (unsigned)blocks;
  const bool slide = kStencilSlide && s.k[0] == 3 && s.st[0] == 1 && (s.tstep[0] == 1 || s.tstep[0] == -1);
  if (slide) {
    if (CO == 1) stencil_kernel<T, Acc, 1, true><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 2) stencil_kernel<T, Acc, 2, true><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 3) stencil_kernel<T, Acc, 3, true><<<nb, 256, (size_t)smem, st>>>(s);
    else stencil_kernel<T, Acc, 4, true><<<nb, 256, (size_t)smem, st>>>(s);
  } else {
    if (CO == 1) stencil_kernel<T, Acc, 1, false><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 2) stencil_kernel<T, Acc, 2, false><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 3) stencil_kernel<T, Acc, 3, false><<<nb, 256, (size_t)smem, st>>>(s);
    else stencil_kernel<T, Acc, 4, false><<<nb, 256, (size_t)smem, st>>>(s);
  }
  err = launch_error(dgrad ? "depthwise dgrad" : "depthwise fwd");
  return true;
}

template <typename T>
std::string fwd_impl(const ConvProblem& p, MathMode m, const void* x, const void* w, const void* bias, void* y,
                     cudaStream_t st) {
  std::string err;
  if (try_stencil<T>(p, false, x, w, bias, y, st, err)) return err;
  GemmArgs a;
  a.src = x; a.wt = w; a.bias = bias; a.out = y;
  a.batch = p.batch;
  for (int i = 0; i < 3; ++i) { a.sdim[i] = (int)p.in[i]; a.odim[i] = (int)p.out[i]; a.ncls[i] = 1; }
  a.src_cs = p.in_spatial(); a.src_ns = p.in_channels * p.in_spatial();
  a.out_cs = p.out_spatial(); a.out_ns = p.out_channels * p.out_spatial();
  a.Kc = (int)p.in_per_group(); a.Ncols = (int)p.out_per_group();
  a.wgs = p.out_per_group() * p.in_per_group() * p.taps();
  a.wcs = p.taps();
  a.wjs = p.in_per_group() * p.taps();
  a.g0 = 0; a.cls0 = 0;
  a.geo = make_geo(p);
  const i64 M = p.batch * p.out_spatial();
  const i64 mtiles = (M + 127) / 128;
  return run_gemm<T, false>(a, mtiles, (int)p.groups, 1, tensor_cores<T>(m), st);
}

template <typename T>
std::string dgrad_impl(const ConvProblem& p, MathMode m, const void* dy, const void* w, void* dx, cudaStream_t st) {
  std::string err;
  if (try_stencil<T>(p, true, dy, w, nullptr, dx, st, err)) return err;
  GemmArgs a;
  a.src = dy; a.wt = w; a.bias = nullptr; a.out = dx;
  a.batch = p.batch;
  if ((i64)p.stride[0] * p.stride[1] * p.stride[2] > INT_MAX / 2) return "jaxconv3d cuda: stride product too large";
  i64 msp_max = 1;
  int ncls = 1;
  for (int i = 0; i < 3; ++i) {
    a.sdim[i] = (int)p.out[i]; a.odim[i] = (int)p.in[i]; a.ncls[i] = (int)p.stride[i];
    msp_max *= (p.in[i] + p.stride[i] - 1) / p.stride[i];
    ncls *= (int)p.stride[i];
  }
  a.src_cs = p.out_spatial(); a.src_ns = p.out_channels * p.out_spatial();
  a.out_cs = p.in_spatial(); a.out_ns = p.in_channels * p.in_spatial();
  a.Kc = (int)p.out_per_group(); a.Ncols = (int)p.in_per_group();
  a.wgs = p.out_per_group() * p.in_per_group() * p.taps();
  a.wcs = p.in_per_group() * p.taps();
  a.wjs = p.taps();
  a.g0 = 0; a.cls0 = 0;
  a.geo = make_geo(p);
  const i64 M = p.batch * msp_max;
  const i64 mtiles = (M + 127) / 128;
  return run_gemm<T, true>(a, mtiles, (int)p.groups, ncls, tensor_cores<T>(m), st);
}

// ---- grad-weight plan (shared by the workspace query and the launch)
struct WgPlan {
  bool depthwise;
  int bmo;      // generic: 64 / 32 / 16
  int S;        // splits
  i64 blocks_per_split;
  size_t ws_bytes;
};

WgPlan wg_plan(const ConvProblem& p, DType t) {
  WgPlan pl{};
  const i64 accsz = t == DType::kF64 ? 8 : 4;
  const i64 P = p.batch * p.out_spatial();
  const i64 Og = p.out_per_group(), Ncol = p.in_per_group() * p.taps();
  if (p.in_per_group() == 1 && p.taps() <= kDwMaxT) {
    pl.depthwise = true;
    const i64 R = p.batch * p.out[0] * p.out[1];
    i64 S = (kTargetBlocks + p.out_channels - 1) / p.out_channels;
    if (S > R) S = R;
    if (S < 1) S = 1;
    pl.S = (int)S;
    pl.blocks_per_split = p.out_channels;
  } else {
    pl.depthwise = false;
    pl.bmo = Og > 32 ? 64 : (Og > 16 ? 32 : 16);
    const i64 BN = pl.bmo == 16 ? 256 : 8192 / pl.bmo;
    const i64 tiles = p.groups * ((Og + pl.bmo - 1) / pl.bmo) * ((Ncol + BN - 1) / BN);
    i64 S = (kTargetBlocks + tiles - 1) / tiles;
    const i64 maxS = (P + 255) / 256;  // at least ~256 positions per split
    if (S > maxS) S = maxS;
    if (S > 65535) S = 65535;
    if (S < 1) S = 1;
    pl.S = (int)S;
    pl.blocks_per_split = tiles;
  }
  pl.ws_bytes = pl.S > 1 ? (size_t)(pl.S * p.w_elements() * accsz) : 0;
  return pl;
}

template <typename T>
std::string wgrad_impl(const ConvProblem& p, MathMode m, const void* x, const void* dy, void* dw, void* ws,
                       size_t ws_bytes, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  const WgPlan pl = wg_plan(p, std::is_same<T, double>::value ? DType::kF64 : DType::kF32);
  if (ws_bytes < pl.ws_bytes)
    return "jaxconv3d cuda: wgrad workspace too small (" + std::to_string(ws_bytes) + " < " +
           std::to_string(pl.ws_bytes) + " bytes)";
  if (pl.S > 1 && ws == nullptr) return "jaxconv3d cuda: wgrad workspace is null";
  WgArgs a;
  a.x = x; a.dy = dy; a.dw = dw; a.ws = ws;
  a.batch = p.batch;
  a.C = (int)p.in_channels; a.O = (int)p.out_channels;
  a.Cg = (int)p.in_per_group(); a.Og = (int)p.out_per_group();
  a.T = (int)p.taps(); a.Ncol = (int)(p.in_per_group() * p.taps());
  a.S = pl.S; a.wel = p.w_elements(); a.g0 = 0;
  a.geo = make_geo(p);
  if (pl.depthwise) {
    const i64 blocks = (i64)pl.S * p.out_channels;
    if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (depthwise wgrad)";
    if (p.kernel[0] == 3 && p.kernel[1] == 3 && p.kernel[2] == 3)
      dw_wgrad_kernel<T, Acc, 3, 3, 3><<<(unsigned)blocks, 256, 0, st>>>(a);
    else
      dw_wgrad_kernel<T, Acc, 0, 0, 0><<<(unsigned)blocks, 256, 0, st>>>(a);
    const std::string e = launch_error("depthwise wgrad");
    if (!e.empty()) return e;
  } else {
    const i64 BN = pl.bmo == 16 ? 256 : 8192 / pl.bmo;
    const i64 gx = ((a.Og + pl.bmo - 1) / pl.bmo) * ((a.Ncol + BN - 1) / BN);
    if (gx > INT_MAX) return "jaxconv3d cuda: too many tiles (wgrad)";
    for (int g0 = 0; g0 < (int)p.groups; g0 += 65535) {
      a.g0 = g0;
      const dim3 grid((unsigned)gx, (unsigned)pl.S, (unsigned)std::min<i64>(65535, p.groups - g0));
      constexpr bool kF32 = std::is_same<T, float>::value;
      constexpr bool k16 = std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value;
      if (kWgradPipeTF32 && pl.bmo == 64 && kF32 && m == MathMode::kTF32) {
        if constexpr (kF32) wgrad_pipe_kernel<T, float, 16, true><<<grid, WgPipe<true>::NT, 0, st>>>(a);
      } else if (kWgradPipeF32 && pl.bmo == 64 && kF32 && m == MathMode::kAccurate) {
        if constexpr (kF32) wgrad_pipe_kernel<T, float, 16, false><<<grid, WgPipe<false>::NT, 0, st>>>(a);
      } else if (kWgradPipe16 && pl.bmo == 64 && k16) {
        if constexpr (k16) wgrad_pipe_kernel<T, T, 32, true><<<grid, WgPipe<true>::NT, 0, st>>>(a);
      } else if (pl.bmo == 64) wgrad_kernel<T, Acc, 64><<<grid, WgTile<64>::NT, 0, st>>>(a);
      else if (pl.bmo == 32) wgrad_kernel<T, Acc, 32><<<grid, WgTile<32>::NT, 0, st>>>(a);
      else wgrad_kernel<T, Acc, 16><<<grid, WgTile<16>::NT, 0, st>>>(a);
      const std::string e = launch_error("wgrad gemm");
      if (!e.empty()) return e;
    }
  }
  if (pl.S > 1) {
    const i64 wel = p.w_elements();
    i64 blocks = (wel + 255) / 256;
    if (blocks > 65535 * 16) blocks = 65535 * 16;
    splits_reduce_kernel<T, Acc><<<(unsigned)blocks, 256, 0, st>>>(static_cast<const Acc*>(ws), static_cast<T*>(dw),
                                                                   wel, pl.S);
    const std::string e = launch_error("wgrad split reduce");
    if (!e.empty()) return e;
  }
  return "";
}

template <typename T>
std::string bgrad_impl(const ConvProblem& p, const void* dy, void* db, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  for (i64 o0 = 0; o0 < p.out_channels; o0 += INT_MAX / 2) {
    const i64 nb = std::min<i64>(INT_MAX / 2, p.out_channels - o0);
    bgrad_kernel<T, Acc><<<(unsigned)nb, 256, 0, st>>>(static_cast<const T*>(dy), static_cast<T*>(db), p.batch,
                                                      (int)p.out_channels, p.out_spatial(), (int)o0);
    const std::string e = launch_error("bgrad");
    if (!e.empty()) return e;
  }
  return "";
}

}  // namespace

bool cuda_available() { return true; }

std::string conv_fwd_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* bias,
                          void* y, void* stream) {
  std::string e = validate(p);
  if (!e.empty()) return e;
  if (p.batch == 0) return "";
  if (x == nullptr || w == nullptr || y == nullptr) return "jaxconv3d cuda: null tensor pointer";
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return fwd_impl<float>(p, m, x, w, bias, y, st);
    case DType::kF64: return fwd_impl<double>(p, m, x, w, bias, y, st);
    case DType::kBF16: return fwd_impl<__nv_bfloat16>(p, m, x, w, bias, y, st);
    case DType::kF16: return fwd_impl<__half>(p, m, x, w, bias, y, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

std::string conv_dgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                            void* stream) {
  std::string e = validate(p);
  if (!e.empty()) return e;
  if (p.batch == 0) return "";
  if (dy == nullptr || w == nullptr || dx == nullptr) return "jaxconv3d cuda: null tensor pointer";
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return dgrad_impl<float>(p, m, dy, w, dx, st);
    case DType::kF64: return dgrad_impl<double>(p, m, dy, w, dx, st);
    case DType::kBF16: return dgrad_impl<__nv_bfloat16>(p, m, dy, w, dx, st);
    case DType::kF16: return dgrad_impl<__half>(p, m, dy, w, dx, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

size_t conv_wgrad_cuda_workspace_bytes(const ConvProblem& p, DType t, MathMode m) {
  (void)m;
  if (!validate(p).empty()) return 0;
  return wg_plan(p, t).ws_bytes;
}

std::string conv_wgrad_cuda(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                            void* workspace, size_t workspace_bytes, void* stream) {
  std::string e = validate(p);
  if (!e.empty()) return e;
  if (dw == nullptr) return "jaxconv3d cuda: null tensor pointer";
  if (p.batch > 0 && (x == nullptr || dy == nullptr)) return "jaxconv3d cuda: null tensor pointer";
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return wgrad_impl<float>(p, m, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kF64: return wgrad_impl<double>(p, m, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kBF16: return wgrad_impl<__nv_bfloat16>(p, m, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kF16: return wgrad_impl<__half>(p, m, x, dy, dw, workspace, workspace_bytes, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

std::string conv_bgrad_cuda(const ConvProblem& p, DType t, const void* dy, void* db, void* stream) {
  std::string e = validate(p);
  if (!e.empty()) return e;
  if (db == nullptr) return "jaxconv3d cuda: null tensor pointer";
  if (p.batch > 0 && dy == nullptr) return "jaxconv3d cuda: null tensor pointer";
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return bgrad_impl<float>(p, dy, db, st);
    case DType::kF64: return bgrad_impl<double>(p, dy, db, st);
    case DType::kBF16: return bgrad_impl<__nv_bfloat16>(p, dy, db, st);
    case DType::kF16: return bgrad_impl<__half>(p, dy, db, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

int cuda_exchange_device(int device) {
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) return -1;
  if (cudaSetDevice(device) != cudaSuccess) return -1;
  return prev;
}

}  // namespace jaxconv3d
