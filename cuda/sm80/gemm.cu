// sm80 implicit GEMM for forward (M = N*Do*Ho*Wo, N = O/groups, K = (C/groups)*taps) and grad-input
// (M = input positions of one stride residue class, N = C/groups, K = (O/groups)*taps that contribute to that
// class). The im2col tile of A and the filter tile of B are staged in shared memory (double-buffered, register
// prefetch); FFMA variant with 8x4 register micro-tiles, or a WMMA tensor-core variant (tf32 m16n16k8 / bf16,f16
// m16n16k16, fp32 accumulate). TF32 operands travel global -> shared by 4-byte cp.async with zero fill (3 stages);
// the other variants use the register prefetch. The entry points also hand depthwise problems to the stencil.
#include "sm80/common.cuh"
#include "sm80/sm80.h"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr bool kGemmAsync = true;       // float32 TF32 fwd/dgrad GEMM (WMMA): cp.async 3-stage pipeline
constexpr bool kGemmAsyncFfma = false;  // float32 accurate fwd/dgrad GEMM (FFMA): cp.async 4 stages; measured 5-8%
                                        // slower than the register prefetch on H100, so off

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
std::string run_gemm(GemmArgs a, i64 mtiles, int groups, int nclass, Kernel k, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  if (k == Kernel::kGemmWmma) {
    if constexpr (std::is_same<T, float>::value)
      return launch_gemm<T, float, float, 64, true, DGRAD>(a, (mtiles), groups, nclass, st);
    else if constexpr (std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value)
      return launch_gemm<T, T, float, 64, true, DGRAD>(a, mtiles, groups, nclass, st);
  }
  if (k == Kernel::kGemmFfma64) return launch_gemm<T, Acc, Acc, 64, false, DGRAD>(a, mtiles, groups, nclass, st);
  if (k == Kernel::kGemmFfma32) return launch_gemm<T, Acc, Acc, 32, false, DGRAD>(a, mtiles, groups, nclass, st);
  if (k == Kernel::kGemmFfma16) return launch_gemm<T, Acc, Acc, 16, false, DGRAD>(a, mtiles, groups, nclass, st);
  return std::string("jaxconv3d cuda: ") + kernel_name(k) + " is not an implicit-GEMM kernel for this dtype";
}

template <typename T>
std::string fwd_impl(const ConvProblem& p, Kernel k, const void* x, const void* w, const void* bias, void* y,
                     cudaStream_t st) {
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
  return run_gemm<T, false>(a, mtiles, (int)p.groups, 1, k, st);
}

template <typename T>
std::string dgrad_impl(const ConvProblem& p, Kernel k, const void* dy, const void* w, void* dx, cudaStream_t st) {
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
  return run_gemm<T, true>(a, mtiles, (int)p.groups, ncls, k, st);
}

}  // namespace

std::string fwd(const ConvProblem& p, DType t, Kernel k, const void* x, const void* w, const void* bias, void* y,
                void* stream) {
  if (k == Kernel::kStencil) return stencil(p, t, false, x, w, bias, y, stream);
  if (k == Kernel::kStencil3) return stencil3(p, t, false, x, w, bias, y, stream);
  if (k == Kernel::kStencil3Stream) return stencil3_stream(p, t, false, x, w, bias, y, stream);
  if (k == Kernel::kStencil3Mma) return stencil3_mma(p, t, false, x, w, bias, y, stream);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return fwd_impl<float>(p, k, x, w, bias, y, st);
    case DType::kF64: return fwd_impl<double>(p, k, x, w, bias, y, st);
    case DType::kBF16: return fwd_impl<__nv_bfloat16>(p, k, x, w, bias, y, st);
    case DType::kF16: return fwd_impl<__half>(p, k, x, w, bias, y, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

std::string dgrad(const ConvProblem& p, DType t, Kernel k, const void* dy, const void* w, void* dx, void* stream) {
  if (k == Kernel::kStencil) return stencil(p, t, true, dy, w, nullptr, dx, stream);
  if (k == Kernel::kStencil3) return stencil3(p, t, true, dy, w, nullptr, dx, stream);
  if (k == Kernel::kStencil3Stream) return stencil3_stream(p, t, true, dy, w, nullptr, dx, stream);
  if (k == Kernel::kStencil3Mma) return stencil3_mma(p, t, true, dy, w, nullptr, dx, stream);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return dgrad_impl<float>(p, k, dy, w, dx, st);
    case DType::kF64: return dgrad_impl<double>(p, k, dy, w, dx, st);
    case DType::kBF16: return dgrad_impl<__nv_bfloat16>(p, k, dy, w, dx, st);
    case DType::kF16: return dgrad_impl<__half>(p, k, dy, w, dx, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

}  // namespace sm80
}  // namespace jaxconv3d
